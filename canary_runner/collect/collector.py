"""Per-step collection: a TrainerCallback plus light instrumentation of the trainer.

A step is one optimizer step, timed between consecutive `on_step_end` events (the first from
`on_train_begin`), so data loading, generation and logging are all inside some step: nothing the
user waits for goes unmeasured. PPO's own loop calls `on_train_begin`, `on_log` and `on_step_end`
(log before step end); the HF Trainer calls `on_step_end` then `on_log`. Records are therefore
completed lazily and flushed to `steps.jsonl` when the next step ends, or at the end of the run.
"""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

from transformers import TrainerCallback

from ..results import encode, to_series  # noqa: F401 (to_series: re-exported for callers)
from . import memory


UPDATE_SAMPLE = 1 << 20  # parameter values read per optimizer step for the update ratio


class CanaryTimeout(Exception):
    """The run took longer than `train.timeout_s`."""


def _scalar(v):
    """A loggable value as a float, or None for anything that is not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = v.item()  # 0-d tensors
        except Exception:
            return None
    return float(v)


def count_tokens(inputs) -> int:
    """Tokens actually processed in one micro-batch: non-padding positions, from the batch itself."""
    if not isinstance(inputs, Mapping):  # transformers' collators return BatchEncoding, not a dict
        return 0
    if "attention_mask" in inputs:
        masks = [inputs["attention_mask"]]
    elif "prompt_mask" in inputs or "completion_mask" in inputs:  # GRPO/RLOO after generation
        masks = [inputs[k] for k in ("prompt_mask", "completion_mask") if k in inputs]
    else:
        masks = [v for k, v in inputs.items() if k.endswith("attention_mask")]
    return int(sum(int(m.sum()) for m in masks if hasattr(m, "sum")))


class StepCollector(TrainerCallback):
    def __init__(self, steps_path: Path, warmup_steps: int, timeout_s: float, deadline_from: float,
                 device=None, on_step=None, derive=None):
        self.steps_path = Path(steps_path)
        self.steps_path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.steps_path, "w", buffering=1)
        os.chmod(self.steps_path, 0o644)  # whatever the umask: the next step may run as another user
        self.warmup_steps = warmup_steps
        self.deadline = deadline_from + timeout_s
        self.device = device  # a torch.device when running on CUDA
        self.on_step = on_step  # progress hook: on_step(record)
        self.derive = derive  # adapter hook: derive(record) fills in metrics a trainer does not log
        self.records: list[dict] = []
        self._open: dict | None = None  # the last step, waiting for its logs
        self._early_logs: dict = {}  # logs that arrived before their step ended (PPO)
        self._tokens = 0
        self._phases: dict[str, float] = {}
        self._grad_norms: list[float] = []
        self._updates: list[float] = []  # ||delta theta|| / ||theta|| of each optimizer step in this step
        self._lrs: list[float] = []  # the learning rate each of those optimizer steps applied
        self._watched: set[int] = set()  # optimizers already hooked (canary exec may train twice)
        self._snapshot = None
        self._buffers = None  # the parameters before the current optimizer step (small models)
        self._t_last: float | None = None
        self.timed_out = False
        self.train_started_at: float | None = None

    # -- instrumentation hooks, called by the trainer adapters --------------------------------------

    def add_tokens(self, n: int) -> None:
        self._tokens += n

    def add_phase(self, name: str, seconds: float) -> None:
        self._phases[name] = self._phases.get(name, 0.0) + seconds

    def watch_grad_norm(self, optimizer) -> None:
        """Record the total gradient norm before every optimizer step (for trainers that do not log it)."""
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        inner.register_step_pre_hook(lambda opt, *_: self._grad_norms.append(_total_grad_norm(opt)))

    def watch_updates(self, optimizer) -> None:
        """Record the learning signal of every optimizer step: the relative parameter update
        ||delta theta|| / ||theta|| over the trainable parameters, and the learning rate applied. A
        frozen policy (learning rate ~0, a warmup that never ends) shows here whatever the loss does."""
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        if inner is None or not hasattr(inner, "register_step_pre_hook") or id(inner) in self._watched:
            return
        self._watched.add(id(inner))
        inner.register_step_pre_hook(self._before_update)
        inner.register_step_post_hook(self._after_update)

    def _before_update(self, opt, *_):
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad and p.numel()]
        lrs = [float(g["lr"]) for g in opt.param_groups if g["params"]]
        if lrs:
            self._lrs.append(max(lrs))
        if not params:
            return
        import torch

        total = sum(p.numel() for p in params)
        one_place = len({(p.device, p.dtype) for p in params}) == 1
        with torch.no_grad():
            if total <= UPDATE_SAMPLE and one_place:
                # Small models: every value, copied into one flat buffer kept across steps (views shaped
                # like the parameters), so each reading is one kernel: per-tensor calls would cost more
                # than the update itself.
                key = [(p.shape, p.device, p.dtype) for p in params]
                if self._buffers is None or self._buffers[0] != key:
                    flat = torch.empty(total, device=params[0].device, dtype=params[0].dtype)
                    views = [v.view(p.shape) for v, p in zip(flat.split([p.numel() for p in params]), params)]
                    self._buffers = (key, flat, views)
                _, flat, views = self._buffers
                torch._foreach_copy_(views, params)  # under no_grad: the parameters are only read
                self._snapshot = ("all", params, torch.linalg.vector_norm(flat))
            else:
                # Large models: a strided sample of UPDATE_SAMPLE values per device, small next to the
                # optimizer's own state.
                stride = max(1, -(-total // UPDATE_SAMPLE))
                self._snapshot = ("sample", params, (stride, _flat(params, stride)))

    def _after_update(self, opt, *_):
        if self._snapshot is None:
            return
        import torch

        kind, params, sample = self._snapshot
        self._snapshot = None
        with torch.no_grad():
            if kind == "all":  # small model: old - new in the flat buffer, in place
                _, flat, views = self._buffers
                torch._foreach_sub_(views, params)
                deltas, bases = [flat], None
                norms = torch.stack([torch.linalg.vector_norm(flat), sample])
            else:  # large model: flat strided samples per device
                stride, old = sample
                new = _flat(params, stride)
                deltas, bases = [new[dev] - before for dev, before in old.items()], list(old.values())
                norms = torch.stack([torch.stack([torch.linalg.vector_norm(d), torch.linalg.vector_norm(b)]).to(
                    deltas[0].device) for d, b in zip(deltas, bases)]).double().square().sum(0).sqrt()
            delta, base = norms.tolist()  # one device sync
            if not math.isfinite(delta):  # an exploding update (learning rate 1e30) overflows float32
                delta = math.sqrt(sum(float(torch.linalg.vector_norm(d, dtype=torch.float64)) ** 2 for d in deltas))
        ratio = delta / base if base > 0 else (0.0 if delta == 0 else math.inf)
        self._updates.append(ratio)

    def time_method(self, obj, name: str, phase: str, count=None):
        """Wrap `obj.name` so the time spent in it counts towards `phase` (and its output towards
        tokens, when `count(result)` is given). Patched on the instance only."""
        original = getattr(obj, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self._sync()
            t0 = time.perf_counter()
            result = original(*args, **kwargs)
            self._sync()
            self.add_phase(phase, time.perf_counter() - t0)
            if count is not None:
                self.add_tokens(count(result))
            return result

        setattr(obj, name, timed)

    @contextmanager
    def outside_steps(self):
        """Work done between steps that belongs to none (the held-out evaluation): its time and its
        CUDA peak are left out of the next step's record."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            if self.device is not None:
                memory.cuda_peak_mb_and_reset(self.device)
            if self._t_last is not None:
                self._t_last += time.perf_counter() - t0

    def count_inputs_of(self, trainer) -> None:
        """Count the tokens of every prepared micro-batch the Trainer trains on."""
        original = trainer._prepare_inputs

        @functools.wraps(original)
        def prepared(*args, **kwargs):
            inputs = original(*args, **kwargs)
            self.add_tokens(count_tokens(inputs))
            return inputs

        trainer._prepare_inputs = prepared

    # -- TrainerCallback ----------------------------------------------------------------------------

    def _sync(self) -> None:
        if self.device is not None:
            import torch

            torch.cuda.synchronize(self.device)

    def on_train_begin(self, args, state, control, **kwargs):
        self._sync()
        if self.device is not None:
            memory.cuda_peak_mb_and_reset(self.device)
        self.watch_updates(kwargs.get("optimizer"))  # the HF Trainer and PPO both pass theirs
        self._t_last = self.train_started_at = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        now = time.perf_counter()
        step = state.global_step
        record = {
            "step": step,
            "warmup": step <= self.warmup_steps,
            "step_time_s": now - self._t_last,
            "tokens": self._tokens,
            "mem_rss_anon_mb": memory.rss_anon_mb(),
        }
        if self.device is not None:
            alloc, reserved = memory.cuda_peak_mb_and_reset(self.device)
            record["mem_cuda_max_allocated_mb"] = alloc
            record["mem_cuda_max_reserved_mb"] = reserved
        if self._phases:
            for phase, secs in self._phases.items():
                record[f"{phase}_time_s"] = secs
            record["update_time_s"] = max(0.0, record["step_time_s"] - sum(self._phases.values()))
        if self._grad_norms:
            # Optimizer steps inside one canary step (PPO minibatches): keep the largest.
            record["grad_norm"] = max(self._grad_norms, key=lambda g: g if math.isfinite(g) else math.inf)
        if self._updates:
            # Several optimizer steps in one canary step (PPO minibatches, epochs): their mean.
            record["update_ratio"] = sum(self._updates) / len(self._updates)
        if self._lrs:
            record["effective_lr"] = self._lrs[-1]
        record.update(self._early_logs.pop(step, {}))
        self._flush()
        self._open = record
        self._tokens, self._phases, self._grad_norms = 0, {}, []
        self._updates, self._lrs = [], []

        if now > self.deadline:
            if self.timed_out:  # the trainer ignored should_training_stop (PPO's own loop)
                raise CanaryTimeout(f"run exceeded train.timeout_s at step {step}")
            self.timed_out = True
            control.should_training_stop = True
        self._t_last = time.perf_counter()  # the time spent in this callback belongs to no step
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_runtime" in logs:
            return  # the Trainer's end-of-run summary, not a step
        values = {k: _scalar(v) for k, v in (logs or {}).items()}
        values = {k: v for k, v in values.items() if v is not None and k not in ("epoch", "step")}
        if self._open is not None and self._open["step"] == state.global_step:
            self._open.update(values)  # HF Trainer: log follows step end
        else:
            self._early_logs.setdefault(state.global_step, {}).update(values)  # PPO: log precedes it

    def _flush(self) -> None:
        if self._open is not None:
            rec = self._open
            self._open = None
            if self.derive is not None:
                self.derive(rec)
            self.records.append(rec)
            self._stream.write(json.dumps(encode(rec)) + "\n")
            if self.on_step is not None:
                self.on_step(rec)

    def close(self) -> list[dict]:
        """Flush the last step and close the stream; returns every recorded step."""
        self._flush()
        self._stream.close()
        return self.records


def _flat(params, stride: int) -> dict:
    """device -> one flat copy of the parameters on it (every `stride`-th value of each)."""
    import torch

    by_device: dict = {}
    for p in params:
        by_device.setdefault(p.device, []).append(p.detach().reshape(-1)[::stride] if stride > 1 else p.detach().reshape(-1))
    return {dev: torch.cat(ts) for dev, ts in by_device.items()}


def _total_grad_norm(optimizer) -> float:
    import torch

    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
