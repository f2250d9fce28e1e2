"""One adapter per training type; each turns a Workload and a collector into a TRL trainer."""

from importlib import import_module

ADAPTERS = {"sft": "sft", "dpo": "dpo", "reward": "reward", "ppo": "ppo", "grpo": "grpo", "rloo": "rloo"}


def adapter(training_type: str):
    """The adapter module of a training type (imported lazily: TRL imports are slow)."""
    return import_module(f"{__name__}.{ADAPTERS[training_type]}")
