"""The canary config: a strict pydantic model loaded from YAML, with `--set key=value` overrides.

Strict on purpose (`extra="forbid"` everywhere): a typo in a config would otherwise silently run a
different canary than the one the team reviewed. Every error names the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .thresholds import Thresholds

TrainingType = Literal["sft", "dpo", "ppo", "grpo", "rloo", "reward"]
Tier = Literal["smoke", "perf", "nightly"]
TRAINING_TYPES: tuple[str, ...] = TrainingType.__args__
TIERS: tuple[str, ...] = Tier.__args__


class ConfigError(Exception):
    """A config that cannot be used. The message names the file, the field and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Strict):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ModelConfig(Strict):
    # "embedded:<spec>" builds a tiny model offline; anything else is a Hub name or a local directory.
    name: str = "embedded:tiny-llama"
    tokenizer: str | None = Field(None, description="Defaults to the model's own tokenizer.")
    reward_model: str | None = Field(
        None, description="PPO: sequence-classification reward model (defaults to the embedded reward model)."
    )
    value_model: str | None = Field(None, description="PPO: value model (defaults to the reward model).")
    lora: LoraConfig | None = None
    quantization: Literal["4bit", "8bit"] | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = Field(
        None, description="transformers' attention implementation (eager, sdpa, flash_attention_2); default: "
                          "the model's own choice.")
    init: str | None = Field(
        None, description="Import string of a callable (model, tokenizer) -> model, applied after loading "
                          "(attention implementation, kernels, custom heads).")

    @field_validator("init")
    @classmethod
    def _init_is_import_string(cls, v):
        return _import_string(v)


class DatasetConfig(Strict):
    # "embedded:<name>" reads a dataset shipped with the package; else a Hub name or a local path.
    name: str | None = Field(None, description="Defaults to the embedded dataset for the training type. Also a "
                                                "local .jsonl/.json/.parquet/.csv file, or an import string of a "
                                                "function returning a datasets.Dataset.")
    split: str = "train"
    max_rows: int | None = Field(512, gt=0)
    format: Literal["auto", "hh"] = Field(
        "auto", description="'hh': Anthropic HH-style chosen/rejected transcripts, converted per training type."
    )


class TrainConfig(Strict):
    max_steps: int = Field(20, gt=0)
    warmup_steps: int = Field(3, ge=0, description="Steps recorded but left out of the timing statistics.")
    per_device_batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    lr_scheduler: str = "constant"
    max_grad_norm: float | None = 1.0
    max_length: int = Field(128, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    deterministic: bool = Field(False, description="torch deterministic algorithms, for exact curve comparison.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    timeout_s: float = Field(1800, gt=0, description="Stop the run with status 'timeout' after this long.")
    gc_freeze: bool = Field(True, description="gc.freeze() after setup so timing measures training, not GC.")
    cpu_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads (default: torch's choice). 1 makes CPU canaries on "
                                "shared machines far less noisy: idle OpenMP workers spin against other jobs.")

    @model_validator(mode="after")
    def _warmup_below_steps(self):
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        return self


class DistributedConfig(Strict):
    """Several processes per node, launched through torchrun (gloo on CPU, nccl on GPUs)."""

    nproc_per_node: int = Field(1, ge=1, le=64)
    strategy: Literal["ddp", "fsdp"] = "ddp"


class HeldoutConfig(Strict):
    """Held-out evaluation (canary_runner/heldout.py, docs/heldout.md): DPO/reward preference accuracy or
    SFT loss on a set the canary never trains on, at step 0, every k steps and at the end."""

    enabled: bool = True
    dataset: str | None = Field(
        None, description="A dataset name or path as dataset.name accepts. Default: the embedded held-out set "
                          "for the training type (embedded:preference_heldout, embedded:sft_heldout) when the "
                          "training dataset is embedded; else none (the evaluation is skipped, saying why).")
    split: str = Field("test", description="The split of a Hub dataset (files and embedded sets have one).")
    max_rows: int = Field(64, gt=0)
    every: int | None = Field(None, gt=0, description="Also evaluate every k optimizer steps. Default: none in "
                                                      "the smoke tier, train.max_steps // 4 in perf and nightly.")


class SFTSection(Strict):
    packing: bool = False
    extra_args: dict[str, Any] = Field(default_factory=dict, description="Passed to trl.SFTConfig as is.")


class DPOSection(Strict):
    beta: float = Field(0.1, gt=0)
    loss_type: str = "sigmoid"
    extra_args: dict[str, Any] = Field(default_factory=dict, description="Passed to trl.DPOConfig as is.")


class RewardSection(Strict):
    center_rewards_coefficient: float | None = None
    extra_args: dict[str, Any] = Field(default_factory=dict, description="Passed to trl.RewardConfig as is.")


class PPOSection(Strict):
    kl_coef: float = Field(0.05, ge=0)
    response_length: int = Field(16, gt=0)
    num_ppo_epochs: int = Field(1, gt=0)
    num_mini_batches: int = Field(1, gt=0)
    cliprange: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    temperature: float = Field(0.7, gt=0)
    missing_eos_penalty: float | None = None
    extra_args: dict[str, Any] = Field(default_factory=dict, description="Passed to PPOConfig as is.")


BUILTIN_REWARD_FUNCS = ("length", "format", "digits", "lowercase")


def _import_string(value: str | None) -> str | None:
    from .plugins import IMPORT_STRING

    if value is not None and not IMPORT_STRING.match(value):
        raise ValueError(f"{value!r} is not an import string; write package.module:attribute")
    return value


class TrainerHooks(Strict):
    """The user's own trainer code, by import string (`package.module:attribute`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    class_: str | None = Field(None, alias="class", description="A subclass of the training type's TRL trainer, "
                                                                "used instead of it with the same arguments.")
    callbacks: list[str] = Field(default_factory=list, description="Extra transformers.TrainerCallback classes.")

    @field_validator("class_")
    @classmethod
    def _class_is_import_string(cls, v):
        return _import_string(v)

    @field_validator("callbacks")
    @classmethod
    def _callbacks_are_import_strings(cls, v):
        return [_import_string(x) for x in v]


class GRPOSection(Strict):
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(16, gt=0)
    beta: float = Field(0.04, ge=0, description="KL coefficient; > 0 so KL is logged and checked.")
    temperature: float = Field(1.0, gt=0)
    reward_funcs: list[str] = Field(default_factory=lambda: ["length", "format"], min_length=1,
                                    description=f"Built-in rewards {BUILTIN_REWARD_FUNCS} or import strings of "
                                                "functions with TRL's reward-function signature.")
    extra_args: dict[str, Any] = Field(default_factory=dict, description="Passed to the TRL config as is.")

    @field_validator("reward_funcs")
    @classmethod
    def _known_or_import_string(cls, v):
        for name in v:
            if name not in BUILTIN_REWARD_FUNCS:
                from .plugins import IMPORT_STRING

                if not IMPORT_STRING.match(name):
                    raise ValueError(f"{name!r} is neither a built-in reward ({', '.join(BUILTIN_REWARD_FUNCS)}) "
                                     "nor an import string (package.module:function)")
        return v


class RLOOSection(GRPOSection):
    pass


SHIPPED_EQUIVALENCE = ("grad_accumulation", "data_parallel", "attention", "padding", "resume", "lora_merge")


class EquivalenceClass(Strict):
    """Variants of the canary that must train identically (same seed, fp32, deterministic): their loss and
    grad-norm curves must agree within `rtol`/`atol` at every step (torch.allclose's rule)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    variants: list[dict[str, Any]] | None = Field(
        None, description="Config overrides, one mapping of dotted keys per variant (`train.per_device_batch_size: "
                          "4`), at least two. Omit for a shipped class.")
    steps: int | None = Field(None, ge=2, le=1000, description="Optimizer steps per variant (default: "
                                                                "train.max_steps, at most 8).")
    metrics: list[str] = Field(default_factory=lambda: ["loss", "grad_norm"], min_length=1)
    rtol: float = Field(1e-3, ge=0, description="Allowed difference relative to the larger of the two values.")
    atol: float = Field(1e-5, ge=0, description="Allowed absolute difference on top of rtol (values near 0).")

    @model_validator(mode="after")
    def _shipped_or_declared(self):
        if self.variants is None and self.name not in SHIPPED_EQUIVALENCE:
            raise ValueError(f"'{self.name}' is not a shipped class ({', '.join(SHIPPED_EQUIVALENCE)}); give your "
                             "own class `variants:` (a list of at least two mappings of config overrides)")
        if self.variants is not None and len(self.variants) < 2:
            raise ValueError(f"'{self.name}': `variants` needs at least two mappings of config overrides")
        return self


def _equivalence_entry(v):
    return {"name": v} if isinstance(v, str) else v


class CanaryConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    training_type: TrainingType
    tier: Tier = "smoke"
    description: str = ""
    seed: int = 42
    model: ModelConfig = Field(default_factory=ModelConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    trainer: TrainerHooks = Field(default_factory=TrainerHooks)
    heldout: HeldoutConfig = Field(default_factory=HeldoutConfig)
    sft: SFTSection | None = None
    dpo: DPOSection | None = None
    ppo: PPOSection | None = None
    grpo: GRPOSection | None = None
    rloo: RLOOSection | None = None
    reward: RewardSection | None = None
    thresholds: Thresholds | None = Field(
        None, description="Inline per-check threshold overrides for `canary compare` (see canary_runner/thresholds.py).")
    equivalence: list[EquivalenceClass] = Field(
        default_factory=list, description="Equivalence classes run after the canary (`canary_runner/equivalence.py`): "
                                          "a shipped class's name, or {name, variants, ...}.")

    @field_validator("equivalence", mode="before")
    @classmethod
    def _names_are_classes(cls, v):
        if isinstance(v, list):
            v = [_equivalence_entry(x) for x in v]
            names = [x.get("name") for x in v if isinstance(x, dict)]
            dup = sorted({n for n in names if names.count(n) > 1 and n is not None})
            if dup:
                raise ValueError(f"class(es) {dup} listed more than once")
        return v

    @model_validator(mode="after")
    def _section_matches_type(self):
        if getattr(self, self.training_type) is None:
            raise ValueError(
                f"training_type is '{self.training_type}' but the '{self.training_type}:' section is missing "
                f"(add `{self.training_type}: {{}}` for the defaults)"
            )
        others = [t for t in TRAINING_TYPES if t != self.training_type and getattr(self, t) is not None]
        if others:
            raise ValueError(
                f"training_type is '{self.training_type}' but the config also has section(s) {others}; remove them"
            )
        if self.training_type in ("ppo", "grpo", "rloo") and self.heldout.dataset is not None:
            raise ValueError(f"heldout.dataset is set, but {self.training_type} has no held-out evaluation (it "
                             "applies to sft, dpo and reward); remove heldout.dataset")
        if self.training_type == "ppo" and self.distributed.strategy == "fsdp" and self.distributed.nproc_per_node > 1:
            raise ValueError("distributed.strategy 'fsdp' is not supported by TRL's PPO trainer; use 'ddp'")
        return self

    @property
    def section(self) -> BaseModel:
        return getattr(self, self.training_type)

    def resolved(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def hash(self) -> str:
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid canary config ({err.error_count()} problem(s)):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see configs/ for the accepted fields)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  - {field}: {msg}")
    return "\n".join(lines)


def _parse_scalar(text: str) -> Any:
    """`--set` values use YAML scalars: 1e-4, true, null, [a, b] all mean what they look like."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply `a.b.c=value` overrides to a nested dict (in place), creating sections as needed."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source} {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=10")
        set_dotted(data, key.strip(), _parse_scalar(value), f"{source} {item!r}")
    return data


def set_dotted(data: dict, key: str, value: Any, source: str) -> None:
    """data[a][b][c] = value for key `a.b.c`, creating sections as needed; a part that is a value, not a
    section, is a ConfigError naming `source`."""
    node, parts = data, key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last one silently,
    so a config would run something other than what a reviewer read)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: construct_mapping below says so
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {first.start_mark.line + 1}); keep one",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """YAML as safe_load reads it, except that a duplicate key is an error (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def read_text_file(path: Path, what: str, error=None) -> str:
    """A UTF-8 text file's content; a file that cannot be read or decoded raises `error` (ConfigError)
    with a message that says which and what to do."""
    error = error or ConfigError
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); save the {what} as UTF-8") from None
    except OSError as e:
        raise error(f"{path}: the {what} cannot be read ({e.strerror or e})") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> CanaryConfig:
    """Read, override and validate a config file. Raises ConfigError with a user-facing message."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found. `canary configs` lists the shipped configs.")
    text = read_text_file(path, "config")
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields at the top level, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    apply_overrides(data, list(overrides))
    try:
        cfg = CanaryConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(str(path), e)) from None
    for i, cls in enumerate(cfg.equivalence):  # a bad variant is bad input now, not a crash after training
        for j, variant in enumerate(cls.variants or []):
            with_overrides(cfg, variant, f"{path}: equivalence[{i}] ({cls.name}) variants[{j}]")
    return cfg


def with_overrides(cfg: CanaryConfig, overrides: dict[str, Any], source: str) -> CanaryConfig:
    """`cfg` with typed dotted-key overrides (`{"train.per_device_batch_size": 4}`), validated; no equivalence
    classes of its own (a variant never runs classes). ConfigError names `source` and the problem."""
    data = cfg.resolved()
    data.pop("equivalence", None)
    for key, value in overrides.items():
        set_dotted(data, str(key), value, f"{source}: {key!r}")
    try:
        return CanaryConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(source, e)) from None


# ----------------------------------------------------------------------------- recorded configs
def _models_in(annotation) -> list[type[BaseModel]]:
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return [a for a in (args or (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]


def _single_value(annotation) -> bool:
    """Does `annotation` admit only single values (numbers, strings, booleans, literals, None)?"""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return all(_single_value(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return True
    return annotation in (int, float, str, bool, type(None))


def shape_problems(data: Any, model: type[BaseModel] = CanaryConfig, where: str = "config") -> list[str]:
    """Where a recorded config (metrics.json's `config`) has a list or a mapping in place of a single
    value, as the config model declares it; also `extra_args` entries that repeat a section's own
    single-valued field. For readers of old or foreign records, which are not validated as a whole."""
    if not isinstance(data, dict):
        return [f"{where} is {type(data).__name__}, not a mapping of config fields"]
    problems = []
    for name, field in model.model_fields.items():
        if name not in data or data[name] is None:
            continue
        value, path = data[name], f"{where}.{name}"
        sub = _models_in(field.annotation)
        if sub:
            problems += shape_problems(value, sub[0], path)
        elif _single_value(field.annotation) and isinstance(value, (list, dict)):
            problems.append(f"{path} is a {'list' if isinstance(value, list) else 'mapping'} where one value "
                            f"is expected: {json.dumps(value, default=str)[:80]}")
        elif typing.get_origin(field.annotation) is dict and not isinstance(value, dict):
            problems.append(f"{path} is {type(value).__name__}, not a mapping")
    extra = data.get("extra_args")
    if "extra_args" in model.model_fields and isinstance(extra, dict):
        for key, value in extra.items():
            field = model.model_fields.get(key)
            if field is not None and _single_value(field.annotation) and isinstance(value, (list, dict)):
                problems.append(f"{where}.extra_args.{key} is a {type(value).__name__} where one value is expected")
    return problems
