"""Regressions that arrive as code, with the canary config unchanged.

Each break is what a pull request to the team's training code could do: a TrainerCallback that touches
the optimizer, the gradients or the trainer's arguments (what a callback can reach: `args` is the
trainer's own arguments object, `optimizer`, `lr_scheduler` and `model` come as keyword arguments, in
the HF Trainer loop and in TRL's PPO loop alike), or a change to a reward function or a trainer method
(applied here by patching the class or the reward table for the duration of one run, as an edit of that
code would). `code_change(name)` gives the callbacks and the patch for one break.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from transformers import TrainerCallback


class SetLearningRate(TrainerCallback):
    """Overwrites the optimizer's learning rate before every step (a hard-coded lr in a callback).
    The scheduler still reports the configured rate, so the logged `learning_rate` does not show it."""

    def __init__(self, lr: float):
        self.lr = lr

    def _set(self, optimizer):
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] = self.lr

    # on_step_begin runs after the previous step's scheduler step in the HF loop; PPO's loop has no
    # on_step_begin, but its on_step_end comes after its scheduler step, before the next update.
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self._set(optimizer)

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self._set(optimizer)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self._set(optimizer)


class ScaleGradients(TrainerCallback):
    """Multiplies every parameter's gradient by `factor` (a loss scaled to ~0, a detached loss term):
    Adam's update of a zero gradient is zero, so the weights never move."""

    def __init__(self, factor: float = 0.0):
        self.factor = factor
        self.handles = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        for p in model.parameters():
            if p.requires_grad:
                self.handles.append(p.register_hook(lambda g, f=self.factor: g * f))

    def on_train_end(self, args, state, control, **kwargs):
        for h in self.handles:
            h.remove()
        self.handles.clear()


class SetArgs(TrainerCallback):
    """Sets fields of the trainer's own arguments object when training starts (PPO reads `kl_coef` and
    `missing_eos_penalty` from it at every step)."""

    def __init__(self, **fields):
        self.fields = fields

    def on_train_begin(self, args, state, control, **kwargs):
        for name, value in self.fields.items():
            setattr(args, name, value)


def no_score(completions, **_) -> list[float]:
    """A reward function that stopped scoring: the same value for every completion."""
    return [0.0 for _ in completions]


@contextlib.contextmanager
def reward_replaced(name: str, func: Callable) -> Iterator[None]:
    """The built-in reward `name` edited to `func` (the config still names `name`)."""
    from canary_runner.workload import rewards

    old = rewards.REWARD_FUNCS[name]

    def edited(*args, **kwargs):
        return func(*args, **kwargs)

    edited.__name__ = old.__name__  # TRL logs rewards/<function name>/...: an edit keeps the name
    rewards.REWARD_FUNCS[name] = edited
    try:
        yield
    finally:
        rewards.REWARD_FUNCS[name] = old


@contextlib.contextmanager
def kl_term_dropped(training_type: str) -> Iterator[None]:
    """GRPO/RLOO code that keeps computing and logging KL but no longer weighs it in the objective:
    the trainer's beta set to ~0 after construction (a config beta of 0 would stop logging KL too)."""
    import trl

    cls = {"grpo": trl.GRPOTrainer, "rloo": trl.RLOOTrainer}[training_type]
    original = cls.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.beta = 1e-12

    cls.__init__ = init
    try:
        yield
    finally:
        cls.__init__ = original


def code_change(name: str, training_type: str) -> tuple[list, contextlib.AbstractContextManager]:
    """(callbacks, patch) of the break `name` ("kind:arg"), built in the process that trains."""
    kind, _, arg = name.partition(":")
    if kind == "lr":
        return [SetLearningRate(float(arg))], contextlib.nullcontext()
    if kind == "grad_scale":
        return [ScaleGradients(float(arg))], contextlib.nullcontext()
    if kind == "args":  # args:field=value
        field, _, value = arg.partition("=")
        return [SetArgs(**{field: float(value)})], contextlib.nullcontext()
    if kind == "reward_no_score":
        return [], reward_replaced(arg, no_score)
    if kind == "kl_term_dropped":
        return [], kl_term_dropped(training_type)
    raise ValueError(f"unknown code change {name!r}")
