"""What every trainer adapter shares: TRL arguments from a canary config, model and LoRA loading.

Adapters know TRL and the workload; they know nothing of compare, reports or GitHub.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CanaryConfig
from ..workload import sources


class AdapterError(Exception):
    """A config the trainer cannot run (an unknown TRL argument, a missing dependency)."""


@dataclass
class Workload:
    """The inputs a trainer adapter builds from (resolved once by the runner)."""

    config: CanaryConfig
    tokenizer: Any
    dataset: Any
    out_dir: Path
    use_cpu: bool
    extras: dict = field(default_factory=dict)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_args(cfg: CanaryConfig) -> dict:
    if world_size() == 1:
        return {}
    if cfg.distributed.strategy == "fsdp":
        # Wraps each transformer block (the model's _no_split_modules), the usual LLM setup.
        return {"fsdp": "full_shard auto_wrap"}
    # LoRA leaves most parameters frozen; DDP's unused-parameter search then only costs time.
    return {"ddp_find_unused_parameters": False} if cfg.model.lora else {}


def common_args(cfg: CanaryConfig, out_dir: Path, use_cpu: bool) -> dict:
    t = cfg.train
    return distributed_args(cfg) | dict(
        output_dir=str(out_dir / "trainer"),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm if t.max_grad_norm is not None else 0.0,
        warmup_steps=0,
        seed=cfg.seed,
        data_seed=cfg.seed,
        full_determinism=t.deterministic,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        # TRL defaults checkpointing on (~40% slower on small models); transformers 5 names it
        # activation_checkpointing and warns on the old name alone.
        gradient_checkpointing=t.gradient_checkpointing,
        activation_checkpointing=t.gradient_checkpointing,
        use_cpu=use_cpu,
        # Log every step and keep NaN/Inf: hiding a NaN loss is the opposite of a canary's job.
        logging_steps=1,
        logging_nan_inf_filter=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def make_args(config_cls, cfg: CanaryConfig, out_dir: Path, use_cpu: bool, **specific) -> Any:
    """The TRL config object: common arguments, then the type's own, then the user's `extra_args`."""
    kwargs = common_args(cfg, out_dir, use_cpu) | specific | dict(cfg.section.extra_args)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise AdapterError(f"{cfg.training_type}.extra_args: {unknown} are not arguments of "
                           f"{config_cls.__module__}.{config_cls.__name__}")
    wrong = _mistyped(config_cls, cfg.section.extra_args)
    if wrong:
        raise AdapterError(f"{cfg.training_type}.extra_args: " + "; ".join(wrong) + f" (the types of "
                           f"{config_cls.__module__}.{config_cls.__name__}); fix the values in the config")
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise AdapterError(f"{config_cls.__name__} rejected the config: {e}") from None


def _mistyped(config_cls, extra: dict) -> list[str]:
    """`extra_args` values that do not match the TRL field's annotation. The dataclass accepts any
    value, so a list where an int belongs would otherwise surface mid-run as a crash (exit 3) instead
    of a bad input (exit 2). Strict: YAML gives the right types, and no default of the pinned TRL
    configs fails this."""
    from pydantic import TypeAdapter, ValidationError

    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an annotation that cannot be resolved: TRL checks the values itself
        return []
    wrong = []
    for key, value in extra.items():
        try:
            TypeAdapter(hints[key]).validate_python(value, strict=True)
        except ValidationError as e:
            wrong.append(f"{key}={value!r} is not {_type_name(hints[key])} ({e.errors()[0]['msg']})")
        except Exception:  # an annotation pydantic has no validator for: left to TRL
            continue
    return wrong


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def peft_config(cfg: CanaryConfig):
    lora = cfg.model.lora
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def model_init_kwargs(cfg: CanaryConfig) -> dict:
    kwargs: dict = {"dtype": "float32", "trust_remote_code": cfg.model.trust_remote_code}
    if cfg.model.attn_implementation:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    q = cfg.model.quantization
    if q is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise AdapterError(f"model.quantization: {q} needs the bitsandbytes package on a CUDA machine "
                               "(pip install bitsandbytes), or remove model.quantization") from None
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_4bit=True) if q == "4bit"
                                         else BitsAndBytesConfig(load_in_8bit=True))
    return kwargs


def load_model(name: str, head: str, cfg: CanaryConfig):
    """A model object (PPO needs objects; the other trainers take a path and model_init_kwargs)."""
    import transformers

    auto = (transformers.AutoModelForCausalLM if head == "causal"
            else transformers.AutoModelForSequenceClassification)
    kwargs = model_init_kwargs(cfg)
    if head == "score":
        kwargs["num_labels"] = 1
    try:
        return auto.from_pretrained(sources.model_path(name, head), **kwargs)
    except OSError as e:
        raise sources.WorkloadError(f"cannot load model '{name}': {e}") from None


# -- the user's own code (config plug points; resolved with the workspace on sys.path) ----------------
def trainer_class(cfg: CanaryConfig, stock: type) -> type:
    """`trainer.class` when set (a subclass of the stock TRL trainer), else the stock trainer."""
    if not cfg.trainer.class_:
        return stock
    from ..plugins import load_subclass

    return load_subclass(cfg.trainer.class_, "trainer.class", stock)


def user_callbacks(cfg: CanaryConfig) -> list:
    """`trainer.callbacks`, instantiated. They go before the collector, so what they add to a log is recorded."""
    from transformers import TrainerCallback

    from ..plugins import PluginError, load

    out = []
    for i, spec in enumerate(cfg.trainer.callbacks):
        field = f"trainer.callbacks[{i}]"
        obj = load(spec, field)
        if isinstance(obj, type) and issubclass(obj, TrainerCallback):
            obj = obj()
        if not isinstance(obj, TrainerCallback):
            raise PluginError(f"{field}: {spec!r} is not a transformers.TrainerCallback (class or instance)")
        out.append(obj)
    return out


def policy_model(cfg: CanaryConfig, tokenizer, head: str = "causal") -> tuple[Any, dict | None]:
    """What to pass a trainer as `model=`, and its `model_init_kwargs`: the model's path (the trainer
    loads it), or, with `model.init`, the loaded model after the user's hook (no init kwargs then)."""
    if not cfg.model.init:
        return sources.model_path(cfg.model.name, head), model_init_kwargs(cfg)
    from ..plugins import PluginError, load_callable

    hook = load_callable(cfg.model.init, "model.init")
    model = load_model(cfg.model.name, head, cfg)
    try:
        out = hook(model, tokenizer)
    except Exception as exc:
        raise PluginError(f"model.init: {cfg.model.init!r} raised {type(exc).__name__}: {exc}") from None
    if out is None:
        raise PluginError(f"model.init: {cfg.model.init!r} returned None; return the (changed) model")
    return out, None
