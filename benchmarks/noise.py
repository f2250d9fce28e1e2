"""Noise of the canary's headline figure: the coefficient of variation (CV) of the median step time
across reruns of one config, with and without freezing the GC after setup.

Each rerun is its own `canary run` process, as in CI (in one process, objects left by earlier runs
would inflate the cost of every later collection). Reruns with and without `gc.freeze()` are
interleaved so machine drift hits both alike. A lower CV means tighter thresholds without false alarms.

    python benchmarks/noise.py [--configs ppo_embedded dpo_embedded] [--reruns 8] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def cv(xs) -> float:
    return statistics.stdev(xs) / statistics.fmean(xs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["ppo_embedded", "dpo_embedded", "grpo_embedded"])
    parser.add_argument("--reruns", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from canary_runner.collect.env import fingerprint
    from canary_runner.results import load_metrics

    fp = fingerprint()
    device = fp["gpu"]["name"] if fp["gpu"] else f"CPU {fp['cpu_model']} ({fp['cpu_count']} cores)"
    print(f"noise: CV of median step time over {args.reruns} interleaved reruns x {args.steps} steps, on {device}")
    print(f"{'config':<20} {'gc':<7} {'mean median s/step':>19} {'CV':>7}")
    for name in args.configs:
        medians = {"frozen": [], "normal": []}
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.reruns):
                for mode in medians:
                    out = Path(tmp) / f"{mode}{i}"
                    overrides = [f"train.max_steps={args.steps}", "train.warmup_steps=5",
                                 f"train.gc_freeze={'true' if mode == 'frozen' else 'false'}", *args.set]
                    cmd = [sys.executable, "-m", "canary_runner.cli", "run", name, "-o", str(out), "--no-progress"]
                    subprocess.run(cmd + [a for o in overrides for a in ("--set", o)], check=True,
                                   stdout=subprocess.DEVNULL, cwd=REPO)
                    medians[mode].append(load_metrics(out)["summary"]["step_time_s"]["median"])
        for mode, xs in medians.items():
            print(f"{name:<20} {mode:<7} {statistics.fmean(xs):>19.5f} {cv(xs):>7.2%}")
        print(f"{name:<20} CV ratio normal/frozen: {cv(medians['normal']) / cv(medians['frozen']):.2f}, "
              f"step time ratio normal/frozen: {statistics.fmean(medians['normal']) / statistics.fmean(medians['frozen']):.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
