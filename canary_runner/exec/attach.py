"""The child side of `canary exec`: a StepCollector on every `transformers.Trainer` the script builds.

`install()` runs at interpreter start-up (from `hook/sitecustomize.py`) and only puts a finder on
`sys.meta_path`; when the script imports `transformers.trainer`, the finder wraps the module's loader
so that, right after the module runs, `Trainer.__init__` and the `__init__` of every subclass defined
later (TRL's trainers, the user's own) are wrapped. When the outermost `__init__` of a trainer
returns, `attach` caps `args.max_steps` (when asked), adds the collector and writes `trainer.json`.
Subclass `__init__`s are wrapped too because some trainers (TRL's PPO) never call `Trainer.__init__`.

Settings come from the environment the parent sets: CANARY_EXEC_DIR (run directory),
CANARY_EXEC_MAX_STEPS, CANARY_EXEC_WARMUP_STEPS.
"""

from __future__ import annotations

import atexit
import enum
import functools
import importlib.abc
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

ENV_DIR = "CANARY_EXEC_DIR"
ENV_MAX_STEPS = "CANARY_EXEC_MAX_STEPS"
ENV_WARMUP = "CANARY_EXEC_WARMUP_STEPS"
TARGET = "transformers.trainer"

# TRL trainer class name -> training type (found anywhere in a trainer's MRO, so a user's subclass of
# DPOTrainer is a dpo run). Anything else is "custom".
TRL_TYPES = {"SFTTrainer": "sft", "DPOTrainer": "dpo", "PPOTrainer": "ppo", "GRPOTrainer": "grpo",
             "RLOOTrainer": "rloo", "RewardTrainer": "reward"}
# TrainingArguments that differ between two runs of one command without changing the training.
VOLATILE_ARGS = ("output_dir", "logging_dir", "run_name", "local_rank", "hub_model_id", "hub_token",
                 "push_to_hub_token", "push_to_hub_model_id", "push_to_hub_organization")
# Always in the record's config, default or not: what a reader looks for first.
KEY_ARGS = ("max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
            "learning_rate", "lr_scheduler_type", "warmup_steps", "max_grad_norm", "weight_decay", "optim",
            "seed", "full_determinism", "bf16", "fp16", "gradient_checkpointing")

_lock = threading.Lock()
_collectors: list = []  # every collector of this process, flushed at exit and on SIGTERM


# -- the import hook --------------------------------------------------------------------------------


class _PostImportLoader(importlib.abc.Loader):
    """The module's own loader, with `after(module)` run once the module has executed."""

    def __init__(self, loader, after):
        self._loader, self._after = loader, after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._after(module)

    def __getattr__(self, name):  # get_source, get_code, is_package ...: the real loader's
        return getattr(self._loader, name)


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds `name` with the other finders and wraps its loader; finds nothing itself."""

    def __init__(self, name: str, after):
        self.name, self.after = name, after

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PostImportLoader(spec.loader, self.after)
                return spec
        return None


def install() -> None:
    """Attach to every Trainer this process will build (a no-op outside `canary exec`)."""
    if not os.environ.get(ENV_DIR):
        return
    if TARGET in sys.modules:
        patch_trainer_module(sys.modules[TARGET])
    elif not any(isinstance(f, PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, PostImportFinder(TARGET, patch_trainer_module))


def patch_trainer_module(module) -> None:
    trainer_cls = module.Trainer
    if getattr(trainer_cls, "_canary_exec_patched", False):
        return
    trainer_cls._canary_exec_patched = True
    trainer_cls.__init__ = _wrap_init(trainer_cls.__dict__["__init__"])
    parent_hook = trainer_cls.__dict__.get("__init_subclass__")

    def __init_subclass__(cls, **kwargs):
        if parent_hook is not None:
            parent_hook.__func__(cls, **kwargs)
        else:
            super(trainer_cls, cls).__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _wrap_init(cls.__dict__["__init__"])

    trainer_cls.__init_subclass__ = classmethod(__init_subclass__)
    stack = list(trainer_cls.__subclasses__())  # classes defined before the patch (install() called late)
    while stack:
        cls = stack.pop()
        if "__init__" in cls.__dict__:
            cls.__init__ = _wrap_init(cls.__dict__["__init__"])
        stack += cls.__subclasses__()


def _wrap_init(init):
    if getattr(init, "_canary_exec_wrapped", False):
        return init

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        # Only the outermost __init__ of a trainer attaches: by then every subclass has set itself up.
        depth = self.__dict__.get("_canary_exec_depth", 0)
        self.__dict__["_canary_exec_depth"] = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            self.__dict__["_canary_exec_depth"] = depth
        if depth == 0:
            try:
                attach(self)
            except Exception as e:  # never break the user's script over the canary
                print(f"canary exec: could not attach the collector to {type(self).__name__}: "
                      f"{type(e).__name__}: {e}", file=sys.stderr)

    __init__._canary_exec_wrapped = True
    return __init__


# -- attaching ------------------------------------------------------------------------------------


def training_type(trainer_cls) -> str:
    for cls in trainer_cls.__mro__:
        if cls.__name__ in TRL_TYPES and cls.__module__.split(".")[0] == "trl":
            return TRL_TYPES[cls.__name__]
    return "custom"


def process_dir() -> Path:
    """Where this process streams: the run directory, or its rank's directory when there are several."""
    from ..distributed import rank_dir

    out = Path(os.environ[ENV_DIR])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return rank_dir(out, int(os.environ.get("RANK", "0")))
    return out


def suffix(index: int) -> str:
    """File-name suffix of the index-th Trainer of a process directory: '', '.trainer2', ..."""
    return "" if index == 1 else f".trainer{index}"


def _claim(d: Path) -> int:
    """The first free trainer index in `d` (claimed with an exclusive create, so two processes that
    share a rank, or two Trainers of one process, never write the same files)."""
    d.mkdir(parents=True, exist_ok=True)
    for index in range(1, 1000):
        try:
            with open(d / f"trainer{suffix(index)}.json", "x") as f:
                f.write("{}\n")
            return index
        except FileExistsError:
            continue
    raise RuntimeError(f"{d}: too many trainers")


def _jsonable(value):
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except ValueError:
        return str(value)


def training_args(args) -> dict:
    """The TrainingArguments that say what was trained: the key ones, and every one not at its default."""
    import dataclasses

    values = args.to_dict()
    out = {}
    for f in dataclasses.fields(args):
        name = f.name
        if name not in values or name in VOLATILE_ARGS or name.endswith("_token"):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if isinstance(default, enum.Enum):
            default = default.value
        value = values[name]
        if name in KEY_ARGS or value != _jsonable(default):
            out[name] = _jsonable(value)
    return out


def _cap_steps(trainer) -> int | None:
    """Apply CANARY_EXEC_MAX_STEPS; returns the script's own max_steps when it was lowered."""
    cap = int(os.environ.get(ENV_MAX_STEPS) or 0)
    args = trainer.args
    if cap <= 0 or not hasattr(args, "max_steps"):
        return None
    before = args.max_steps
    if before is None or before <= 0 or before > cap:
        args.max_steps = cap  # read by train(), so lowering it after __init__ is enough
        return before
    return None


def _device(trainer):
    device = getattr(trainer.args, "device", None)
    return device if getattr(device, "type", None) == "cuda" else None


def _instrument(trainer, collector, ttype: str) -> None:
    """What the canary's own adapters add per training type, where this trainer has it."""
    if ttype == "ppo":
        from ..trainers.ppo import _sequences

        generator = trainer.model.policy if hasattr(trainer.model, "policy") else None
        pad = getattr(getattr(trainer, "processing_class", None), "pad_token_id", None)
        if generator is not None:
            collector.time_method(generator, "generate", "generation",
                                  count=None if pad is None else (lambda out: int((_sequences(out) != pad).sum())))
        if getattr(trainer, "optimizer", None) is not None:
            collector.watch_grad_norm(trainer.optimizer)  # PPO neither clips nor logs it
        return
    if hasattr(trainer, "_prepare_inputs"):
        collector.count_inputs_of(trainer)
    if ttype in ("grpo", "rloo") and hasattr(trainer, "_generate_and_score_completions"):
        collector.time_method(trainer, "_generate_and_score_completions", "generation")


def _ppo_derive(args):
    """The PPO adapter's derive (loss from its parts, `lr` renamed), fed from PPOConfig."""
    from types import SimpleNamespace

    from ..trainers import ppo

    cfg = SimpleNamespace(
        ppo=SimpleNamespace(vf_coef=args.vf_coef, num_ppo_epochs=args.num_ppo_epochs,
                            num_mini_batches=args.num_mini_batches),
        train=SimpleNamespace(gradient_accumulation_steps=args.gradient_accumulation_steps))
    return lambda record: ppo.derive(record, cfg)


def attach(trainer) -> None:
    from ..collect.env import fingerprint
    from ..results import write_json_atomic

    with _lock:
        if getattr(trainer, "_canary_exec_collector", None) is not None:
            return
        d = process_dir()
        index = _claim(d)
    capped_from = _cap_steps(trainer)
    ttype = training_type(type(trainer))
    info_path = d / f"trainer{suffix(index)}.json"
    cls = type(trainer)
    info = {
        "index": index,
        "pid": os.getpid(),
        "rank": int(os.environ.get("RANK", "0")),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "python": sys.executable,
        "trainer_class": f"{cls.__module__}.{cls.__qualname__}",
        "training_type": ttype,
        "max_steps": getattr(trainer.args, "max_steps", None),
        "max_steps_capped_from": capped_from,
        "strategy": "fsdp" if getattr(trainer.args, "fsdp", None) else "ddp",
        "training_args": training_args(trainer.args),
        "attached_at": time.time(),
        "env": fingerprint(),
    }
    write_json_atomic(info_path, info)
    collector = _collector_class()(
        d / f"steps{suffix(index)}.jsonl", int(os.environ.get(ENV_WARMUP, "3")), math.inf,
        deadline_from=time.perf_counter(), device=_device(trainer),
        derive=_ppo_derive(trainer.args) if ttype == "ppo" else None,
        info_path=info_path, info=info)
    _instrument(trainer, collector, ttype)
    trainer.add_callback(collector)
    trainer._canary_exec_collector = collector
    with _lock:
        _collectors.append(collector)
        if len(_collectors) == 1:
            _on_exit_flush()


_collector_cls = None


def _collector_class():
    """StepCollector plus what a run it does not control needs (defined late: it imports transformers)."""
    global _collector_cls
    if _collector_cls is not None:
        return _collector_cls
    from ..collect.collector import StepCollector
    from ..results import write_json_atomic

    class ExecCollector(StepCollector):
        def __init__(self, *args, info_path: Path, info: dict, **kwargs):
            super().__init__(*args, **kwargs)
            self.info_path, self.info = info_path, info

        def on_train_begin(self, args, state, control, **kwargs):
            # The planned steps are known only now (epochs, or a max_steps set after __init__).
            self.info.update(train_started_at=time.time(), steps_planned=state.max_steps,
                             max_steps=getattr(args, "max_steps", None))
            write_json_atomic(self.info_path, self.info)
            super().on_train_begin(args, state, control, **kwargs)

        def on_train_end(self, args, state, control, **kwargs):
            self.flush()  # the last step's logs are in: write it now, not at exit

        def flush(self) -> None:
            if not self._stream.closed:
                self._flush()

    _collector_cls = ExecCollector
    return _collector_cls


def flush_all() -> None:
    for c in list(_collectors):
        try:
            c.flush()
        except Exception:
            pass


def _on_exit_flush() -> None:
    """The last step is held until its logs arrive: write it at exit (a crash) and on SIGTERM."""
    atexit.register(flush_all)
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _flush_then_die)
    except ValueError:  # not the main thread: SIGTERM then loses at most the last step
        pass


def _flush_then_die(signum, _frame):
    flush_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the signal, as the script would have without us
