"""Overhead of the canary's instrumentation: the instrumented run vs the same TRL trainer run bare.

Both sides build the same trainer from the same config and seed through the same adapter, freeze
the GC the same way, and are timed the same way (wall time of `trainer.train()` over its steps).
The bare side gets a collector that instruments nothing and is removed from the callbacks, so what
remains is TRL alone. Repetitions are interleaved (bare, canary, bare, canary, ...) so drift in the
machine hits both sides alike; the figure is the ratio of the median per-step times.

    python benchmarks/overhead.py [--configs dpo_embedded sft_embedded ...] [--reps 7] [--steps 60]
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["sft_embedded", "dpo_embedded", "grpo_embedded", "ppo_embedded"])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    import torch

    from canary_runner.cli import resolve_config_path
    from canary_runner.quiet import quiet_libraries
    from canary_runner.collect.env import fingerprint
    from canary_runner.config import load_config

    quiet_libraries()
    fp = fingerprint()
    device = fp["gpu"]["name"] if fp["gpu"] else f"CPU {fp['cpu_model']} ({fp['cpu_count']} cores, torch threads {torch.get_num_threads()})"
    print(f"overhead: instrumented canary vs bare TRL, {args.reps} interleaved reps x {args.steps} steps, on {device}")
    print(f"{'config':<22} {'bare s/step':>12} {'canary s/step':>14} {'overhead':>9}  (per-rep ratios)")
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
        overhead = statistics.median(canary) / statistics.median(bare) - 1
        worst = max(worst, overhead)
        print(f"{name:<22} {statistics.median(bare):>12.5f} {statistics.median(canary):>14.5f} {overhead:>+8.2%}  "
              f"({' '.join(f'{r:.3f}' for r in ratios)})")
    print(f"worst overhead: {worst:+.2%}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
