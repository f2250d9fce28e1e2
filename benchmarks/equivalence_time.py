"""Time to run the whole equivalence set of a config: `canary equivalence CONFIG --class all`, timed as a
user meets it (a fresh process, imports included), against the 60-second target, and per class.

Each repetition is one fresh `canary equivalence` process; the figure is the median wall time over the
repetitions with its range, next to the time of one plain canary run of the same config measured
alternately in the same loop (so drift in the machine hits both alike): the ratio says what the set
costs in canary runs.

    python benchmarks/equivalence_time.py [--configs dpo_embedded ...] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 60.0
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "canary_runner.cli", *argv], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **ENV})
    took = time.perf_counter() - t0
    if proc.returncode not in (0,):
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["dpo_embedded"])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPU(s); target: the whole set under {TARGET_S:.0f} s")
    print(f"{'config':<16} {'set (s)':>18} {'one canary run (s)':>20} {'set/run':>8} {'target':>7}")
    for config in args.configs:
        sets, plain, per_class = [], [], {}
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as tmp:
                sets.append(timed(["equivalence", config, "--class", "all", "-o", f"{tmp}/eq"]))
                for r in json.loads(Path(f"{tmp}/eq/equivalence.json").read_text()):
                    per_class.setdefault(r["name"], []).append((r["status"], r["seconds"]))
                plain.append(timed(["run", config, "-o", f"{tmp}/run", "--no-progress", "--no-equivalence"]))
        s, p = statistics.median(sets), statistics.median(plain)
        print(f"{config:<16} {s:>7.1f} ({min(sets):.1f}-{max(sets):.1f}) {p:>11.1f} ({min(plain):.1f}-{max(plain):.1f})"
              f" {s / p:>8.2f} {'met' if s < TARGET_S else 'MISSED':>7}")
        for name, xs in per_class.items():
            states = sorted({st for st, _ in xs})
            print(f"    {name:<18} {statistics.median(t for _, t in xs):>6.1f} s  {'/'.join(states)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
