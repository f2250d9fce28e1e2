"""Overhead of the canary's instrumentation: the instrumented run vs the same TRL trainer run bare.

Both sides build the same trainer from the same config and seed through the same adapter, freeze
the GC the same way, and are timed the same way (wall time of `trainer.train()` over its steps).
The bare side gets a collector that instruments nothing and is removed from the callbacks, so what
remains is TRL alone. Repetitions are interleaved (bare, canary, bare, canary, ...) so drift in the
machine hits both sides alike. The figure is the median of the per-repetition ratios
(canary / bare) with a bootstrap 95% interval. Beside it, the collector's own cost per step is
measured in isolation (its callbacks and readings, called in a loop, and the update-ratio hooks on the
embedded model's optimizer), a floor that does not depend on the machine's noise. Both sides use
--threads torch threads (default 1: the least noisy on CPU).

    python benchmarks/overhead.py [--configs dpo_embedded sft_embedded ...] [--reps 9] [--steps 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _bare_collector():
    from transformers import TrainerCallback

    class BareCollector(TrainerCallback):
        """The collector interface with nothing behind it; removed from the callbacks once built."""

        def count_inputs_of(self, trainer):
            pass

        def time_method(self, *args, **kwargs):
            pass

        def watch_grad_norm(self, optimizer):
            pass

    return BareCollector()


def timed_train(cfg, out_dir: Path, instrumented: bool) -> float:
    """Seconds per step of one `trainer.train()`."""
    from canary_runner.collect.collector import StepCollector
    from canary_runner.runner import _device, build_trainer

    device = _device(cfg)
    if instrumented:
        collector = StepCollector(out_dir / "steps.jsonl", cfg.train.warmup_steps, cfg.train.timeout_s,
                                  deadline_from=time.perf_counter(), device=device)
    else:
        collector = _bare_collector()
    trainer = build_trainer(cfg, out_dir, collector, device)
    if not instrumented:
        trainer.remove_callback(collector)
    gc.collect()
    gc.freeze()
    try:
        if device is not None:
            import torch

            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # PPO prints a banner; same cost on both sides
            trainer.train()
        if device is not None:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    finally:
        gc.unfreeze()
        if instrumented:
            collector.close()
    return elapsed / cfg.train.max_steps


def bootstrap_median(xs, resamples: int = 5000, seed: int = 0) -> tuple[float, float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(np.asarray(xs), size=(resamples, len(xs))), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def collector_cost(n: int = 2000) -> float:
    """Seconds per step the collector adds by itself: its step-end and log callbacks with their
    memory reading and streamed record, and the token count of one micro-batch."""
    from types import SimpleNamespace

    import torch

    from canary_runner.collect.collector import StepCollector, count_tokens

    logs = {"loss": 1.0, "grad_norm": torch.tensor(2.0), "learning_rate": 1e-4, "entropy": 6.2,
            "num_tokens": 1000.0, "mean_token_accuracy": 0.1, "epoch": 0.1}
    batch = {"attention_mask": torch.ones(8, 128, dtype=torch.long)}
    control = SimpleNamespace(should_training_stop=False)
    with tempfile.TemporaryDirectory() as tmp:
        c = StepCollector(Path(tmp) / "steps.jsonl", 5, 1e9, deadline_from=time.perf_counter())
        c.on_train_begin(None, None, control)
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            c.add_tokens(count_tokens(batch))
            state = SimpleNamespace(global_step=i)
            c.on_step_end(None, state, control)
            c.on_log(None, state, control, logs=logs)
        elapsed = time.perf_counter() - t0
        c.close()
    return elapsed / n


def update_hook_cost(n: int = 500) -> float:
    """Seconds the update-ratio hooks add to one optimizer step of the embedded model (tiny-llama, every
    parameter trainable): the copy and norm before the step, the difference norm after it."""
    import torch
    import transformers

    from canary_runner.collect.collector import StepCollector
    from canary_runner.workload.sources import model_path

    model = transformers.AutoModelForCausalLM.from_pretrained(model_path("embedded:tiny-llama"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        c = StepCollector(Path(tmp) / "steps.jsonl", 5, 1e9, deadline_from=time.perf_counter())
        c._before_update(opt)  # the first call allocates the buffer
        c._after_update(opt)
        t0 = time.perf_counter()
        for _ in range(n):
            c._before_update(opt)
            c._after_update(opt)
        elapsed = time.perf_counter() - t0
        c.close()
    return elapsed / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["sft_embedded", "dpo_embedded", "grpo_embedded", "ppo_embedded"])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, 0 = torch's default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    import torch

    from canary_runner.cli import resolve_config_path
    from canary_runner.quiet import quiet_libraries
    from canary_runner.collect.env import fingerprint
    from canary_runner.config import load_config

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    fp = fingerprint()
    device = fp["gpu"]["name"] if fp["gpu"] else f"CPU {fp['cpu_model']} ({fp['cpu_count']} cores, torch threads {torch.get_num_threads()})"
    print(f"overhead: instrumented canary vs bare TRL, {args.reps} interleaved reps x {args.steps} steps, on {device}")
    per_step_cost = collector_cost()
    hooks = update_hook_cost()
    print(f"collector cost per step, in isolation: {per_step_cost * 1e6:.0f} us, plus the update-ratio hooks "
          f"{hooks * 1e6:.0f} us per optimizer step")
    per_step_cost += hooks
    print(f"{'config':<16} {'bare s/step':>11} {'canary s/step':>13} {'overhead [95% CI]':>24} {'collector floor':>15}")
    worst = 0.0
    for name in args.configs:
        cfg = load_config(resolve_config_path(name), [f"train.max_steps={args.steps}", "train.warmup_steps=5", *args.set])
        bare, canary, ratios = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            timed_train(cfg, Path(tmp) / "warm", True)  # first build pays for caches; measure neither side with it
            for rep in range(args.reps):
                b = timed_train(cfg, Path(tmp) / f"b{rep}", False)
                c = timed_train(cfg, Path(tmp) / f"c{rep}", True)
                bare.append(b)
                canary.append(c)
                ratios.append(c / b)
        overhead = statistics.median(ratios) - 1
        lo, hi = bootstrap_median(ratios)
        worst = max(worst, overhead)
        print(f"{name:<16} {statistics.median(bare):>11.5f} {statistics.median(canary):>13.5f} "
              f"{overhead:>+8.2%} [{lo - 1:+.2%}, {hi - 1:+.2%}] {per_step_cost / statistics.median(bare):>14.2%}")
    print(f"worst overhead: {worst:+.2%}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
