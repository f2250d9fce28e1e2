"""Verdict quality of `canary compare` on the embedded CPU canary: the false-alarm rate over A/A pairs
and the detection rate of a real, injected step-time slowdown, at each tier's default thresholds.

Runs are trained one process each, as in CI, interleaved so that drift of the machine hits both kinds
alike: A0, S1, A1, S2, A2, ... Sn, An. A/A pairs are (A[i-1] baseline, A[i] current); slowdown
pairs are (A[i-1] baseline, S[i] current). S runs carry a TrainerCallback that sleeps, at the end of
every step, SLOWDOWN x the time that step took (the sleep lands in the next step's measured time), so
every step really takes ~(1 + SLOWDOWN) as long: nothing in metrics.json is edited. The slowdown the
canary measured is printed next to the rates (sleeping costs a little more than the sleep itself).

Before the pairs, CALIBRATION_RUNS more A runs feed `canary calibrate`'s measurement, and the pairs
are judged again with those thresholds (row "calibrated"): thresholds fitted to this machine's noise.

Each run uses THREADS torch intra-op threads (default 1): a sleep parks OpenMP worker threads, and
waking them inflates an injected 15% to ~35% with two threads; one thread keeps the injection honest
and the timing robust when other processes share the machine.

    python benchmarks/verdict_quality.py [--config dpo_embedded] [--pairs 10] [--slowdown 0.15]
                                         [--steps 60] [--threads 1] [--calibration-runs 5] [--json-out FILE]

A pair counts as a false alarm / a detection when perf.step_time fails; "fail or warn" is shown too.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
TIERS = ("smoke", "perf", "nightly")


def slowdown_callback(fraction: float):
    from transformers import TrainerCallback

    class Slowdown(TrainerCallback):
        """Make every step take (1 + fraction) times as long, by sleeping in proportion to it."""

        def __init__(self):
            self.t_prev = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.t_prev = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if self.t_prev is not None:
                time.sleep(fraction * (now - self.t_prev))
            self.t_prev = time.perf_counter()

    return Slowdown()


def child(args) -> int:
    """One run in this process: `--child OUT SLOWDOWN`."""
    import warnings

    warnings.simplefilter("ignore")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from canary_runner.config import load_config
    from canary_runner.runner import run

    out, fraction = args.child[0], float(args.child[1])
    cfg = load_config(REPO / "configs" / f"{args.config}.yaml",
                      [f"train.max_steps={args.steps}", "train.warmup_steps=5", *args.set])
    callbacks = [slowdown_callback(fraction)] if fraction > 0 else []
    _, code = run(cfg, Path(out), callbacks=callbacks)
    return code


def train(args, out: Path, fraction: float) -> Path:
    cmd = [sys.executable, __file__, "--child", str(out), str(fraction), "--config", args.config,
           "--steps", str(args.steps), "--threads", str(args.threads)]
    for s in args.set:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="dpo_embedded")
    parser.add_argument("--pairs", type=int, default=10, help="A/A pairs and slowdown pairs (each)")
    parser.add_argument("--slowdown", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run, 0 = torch's default")
    parser.add_argument("--calibration-runs", type=int, default=5, help="A runs for calibrated thresholds (0: none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json-out", metavar="FILE", help="write the per-pair results as JSON")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from canary_runner.collect.env import fingerprint
    from canary_runner.compare import engine
    from canary_runner.compare.loading import load_side
    from canary_runner.compare.settings import resolve

    fp = fingerprint()
    device = fp["gpu"]["name"] if fp["gpu"] else f"CPU {fp['cpu_model']} ({fp['cpu_count']} cores)"
    print(f"verdict quality: {args.config}, {args.steps} steps (5 warmup), {args.pairs} A/A pairs and "
          f"{args.pairs} pairs with a +{args.slowdown:.0%} step-time slowdown, on {device}, "
          f"threads={args.threads or 'torch default'}, {args.calibration_runs} calibration runs", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verdict-quality-") as tmp:
        root = Path(tmp)
        calib = [train(args, root / f"C{i:02d}", 0.0) for i in range(1, args.calibration_runs + 1)]
        if calib:
            print(f"  trained {len(calib)} calibration runs ({time.perf_counter() - t0:.0f} s)", flush=True)
        a_runs, s_runs = [train(args, root / "A00", 0.0)], []
        for i in range(1, args.pairs + 1):
            s_runs.append(train(args, root / f"S{i:02d}", args.slowdown))
            a_runs.append(train(args, root / f"A{i:02d}", 0.0))
            print(f"  trained pair {i}/{args.pairs} ({time.perf_counter() - t0:.0f} s)", flush=True)
        loaded = {p: load_side([p], "run") for p in a_runs + s_runs}
        judges = [(tier, resolve(tier)) for tier in TIERS]
        if len(calib) >= 2:
            from canary_runner.compare.calibrate import measure
            from canary_runner.thresholds import parse_thresholds

            fitted = {cid: lim for cid, lim, _ in measure(load_side(calib, "calibration"), 1.5, "smoke") if lim}
            judges.append(("calibrated", resolve("smoke", file=parse_thresholds({"checks": fitted}, "calibrated"),
                                                  file_source="calibrated")))
        rows = []
        for tier, settings in judges:
            for kind, currents in (("A/A", a_runs[1:]), ("slowdown", s_runs)):
                for i, cur in enumerate(currents):
                    doc = engine.compare(loaded[cur], loaded[a_runs[i]], settings)
                    step = next(c for c in doc["checks"] if c["id"] == "perf.step_time")
                    rows.append({"tier": tier, "kind": kind, "pair": i + 1, "status": step["status"],
                                 "verdict": doc["verdict"], "change": step["change"], "ci": step["ci"],
                                 "threshold": step["threshold"]})
    print(f"trained {len(a_runs) + len(s_runs)} runs in {time.perf_counter() - t0:.0f} s\n")

    def rate(kind, tier, statuses):
        sel = [r for r in rows if r["kind"] == kind and r["tier"] == tier]
        return sum(r["status"] in statuses for r in sel) / len(sel)

    aa = [r["change"] for r in rows if r["kind"] == "A/A" and r["tier"] == "smoke"]
    sd = [r["change"] for r in rows if r["kind"] == "slowdown" and r["tier"] == "smoke"]
    print(f"measured median step-time change: A/A pairs median {statistics.median(aa):+.1%} "
          f"(|change| median {statistics.median(abs(x) for x in aa):.1%}, max {max(abs(x) for x in aa):.1%}); "
          f"slowdown pairs median {statistics.median(sd):+.1%} (min {min(sd):+.1%}, max {max(sd):+.1%})")
    print(f"\n{'tier':<10} {'threshold':>9}  {'false alarms (fail)':>19} {'(fail or warn)':>14}  "
          f"{'detected (fail)':>15} {'(fail or warn)':>14}")
    for tier in dict.fromkeys(r["tier"] for r in rows):
        thr = next(r["threshold"] for r in rows if r["tier"] == tier)
        print(f"{tier:<10} {thr:>9.1%}  {rate('A/A', tier, ('fail',)):>19.0%} {rate('A/A', tier, ('fail', 'warn')):>14.0%}"
              f"  {rate('slowdown', tier, ('fail',)):>15.0%} {rate('slowdown', tier, ('fail', 'warn')):>14.0%}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "device": device, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
