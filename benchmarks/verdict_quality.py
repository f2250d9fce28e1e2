"""Verdict quality of `canary compare` on the embedded CPU canary: the false-alarm rate over A/A pairs
and the detection rates of real, injected regressions (step-time slowdowns, a memory increase), at
each tier's default thresholds.

Runs are trained one process each, as in CI, interleaved so that drift of the machine hits every kind
alike: A0, [S1 for each slowdown, M1], A1, ..., An. A/A pairs are (A[i-1] baseline, A[i] current);
injected pairs are (A[i-1] baseline, S[i] or M[i] current). Nothing in metrics.json is edited:
- a slowdown run carries a TrainerCallback that sleeps, at the end of every step, SLOWDOWN x the time
  that step took (the sleep lands in the next step's measured time), so every step really takes
  ~(1 + SLOWDOWN) as long; the slowdown the canary measured is printed next to the rates;
- a memory run allocates and touches MEMORY x its anonymous memory at the start of training and holds
  it to the end, as a leak or a larger buffer would.

Before the pairs, CALIBRATION_RUNS more A runs feed `canary calibrate`'s measurement, and the pairs
are judged again with those thresholds (row "calibrated"): thresholds fitted to this machine's noise.

Each run uses THREADS torch intra-op threads (default 1): a sleep parks OpenMP worker threads, and
waking them inflates an injected 15% to ~35% with two threads; one thread keeps the injection honest
and the timing robust when other processes share the machine.

    python benchmarks/verdict_quality.py [--config dpo_embedded] [--pairs 10] [--slowdown 0.10 0.15 0.20]
                                         [--memory 0.20] [--steps 60] [--threads 1] [--calibration-runs 5]
                                         [--json-out FILE]

A pair counts as a false alarm / a detection when the check for its kind fails (perf.step_time for
slowdowns, memory.cpu_rss_anon_peak for memory); "fail or warn" is shown too. A/A pairs are scored
on both checks.
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


def memory_callback(fraction: float):
    from transformers import TrainerCallback

    from canary_runner.collect.memory import rss_anon_mb

    class Ballast(TrainerCallback):
        """Hold `fraction` x this process's anonymous memory from the start of training to its end."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.ballast = b"\x01" * int(fraction * rss_anon_mb() * 2**20)  # written, so resident

    return Ballast()


def child(args) -> int:
    """One run in this process: `--child OUT KIND FRACTION` (KIND: none, time or memory)."""
    import warnings

    warnings.simplefilter("ignore")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from canary_runner.config import load_config
    from canary_runner.runner import run

    out, kind, fraction = args.child[0], args.child[1], float(args.child[2])
    cfg = load_config(REPO / "configs" / f"{args.config}.yaml",
                      [f"train.max_steps={args.steps}", "train.warmup_steps=5", *args.set])
    callbacks = {"none": [], "time": [slowdown_callback(fraction)], "memory": [memory_callback(fraction)]}[kind]
    _, code = run(cfg, Path(out), callbacks=callbacks)
    return code


def train(args, out: Path, kind: str = "none", fraction: float = 0.0) -> Path:
    cmd = [sys.executable, __file__, "--child", str(out), kind, str(fraction), "--config", args.config,
           "--steps", str(args.steps), "--threads", str(args.threads)]
    for s in args.set:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="dpo_embedded")
    parser.add_argument("--pairs", type=int, default=10, help="A/A pairs and pairs of each injected kind")
    parser.add_argument("--slowdown", type=float, nargs="*", default=[0.10, 0.15, 0.20], help="step-time slowdowns")
    parser.add_argument("--memory", type=float, nargs="*", default=[0.20], help="memory increases")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run, 0 = torch's default")
    parser.add_argument("--calibration-runs", type=int, default=5, help="A runs for calibrated thresholds (0: none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json-out", metavar="FILE", help="write the per-pair results as JSON")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from canary_runner.collect.env import fingerprint
    from canary_runner.compare import engine
    from canary_runner.compare.loading import load_side
    from canary_runner.compare.settings import resolve

    fp = fingerprint()
    device = fp["gpu"]["name"] if fp["gpu"] else f"CPU {fp['cpu_model']} ({fp['cpu_count']} cores)"
    injections = [(f"slowdown +{f:.0%}", "time", f) for f in args.slowdown] + \
                 [(f"memory +{f:.0%}", "memory", f) for f in args.memory]
    check_of = {"time": "perf.step_time", "memory": "memory.cpu_rss_anon_peak"}
    print(f"verdict quality: {args.config}, {args.steps} steps (5 warmup), {args.pairs} A/A pairs and {args.pairs} pairs "
          f"each of {', '.join(label for label, _, _ in injections)}, on {device}, "
          f"threads={args.threads or 'torch default'}, {args.calibration_runs} calibration runs", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verdict-quality-") as tmp:
        root = Path(tmp)
        calib = [train(args, root / f"C{i:02d}") for i in range(1, args.calibration_runs + 1)]
        if calib:
            print(f"  trained {len(calib)} calibration runs ({time.perf_counter() - t0:.0f} s)", flush=True)
        a_runs = [train(args, root / "A00")]
        injected = {label: [] for label, _, _ in injections}
        for i in range(1, args.pairs + 1):
            for j, (label, kind, fraction) in enumerate(injections):
                injected[label].append(train(args, root / f"I{j}-{i:02d}", kind, fraction))
            a_runs.append(train(args, root / f"A{i:02d}"))
            print(f"  trained pair {i}/{args.pairs} ({time.perf_counter() - t0:.0f} s)", flush=True)
        loaded = {p: load_side([p], "run") for p in a_runs + [p for runs in injected.values() for p in runs]}
        judges = [(tier, resolve(tier)) for tier in TIERS]
        if len(calib) >= 2:
            from canary_runner.compare.calibrate import measure
            from canary_runner.thresholds import parse_thresholds

            fitted = {cid: lim for cid, lim, _ in measure(load_side(calib, "calibration"), 1.5, "smoke") if lim}
            judges.append(("calibrated", resolve("smoke", file=parse_thresholds({"checks": fitted}, "calibrated"),
                                                  file_source="calibrated")))
        rows = []
        kinds = [("A/A", "none", a_runs[1:])] + [(label, kind, injected[label]) for label, kind, _ in injections]
        for tier, settings in judges:
            for label, kind, currents in kinds:
                for i, cur in enumerate(currents):
                    doc = engine.compare(loaded[cur], loaded[a_runs[i]], settings)
                    by_id = {c["id"]: c for c in doc["checks"]}
                    for check_id in ([check_of[kind]] if kind != "none" else check_of.values()):
                        c = by_id[check_id]
                        rows.append({"tier": tier, "kind": label, "check": check_id, "pair": i + 1,
                                     "status": c["status"], "verdict": doc["verdict"], "change": c["change"],
                                     "ci": c["ci"], "threshold": c["threshold"]})
    print(f"trained {len(loaded) + len(calib)} runs in {time.perf_counter() - t0:.0f} s\n")

    def select(kind, tier, check):
        return [r for r in rows if r["kind"] == kind and r["tier"] == tier and r["check"] == check]

    def rate(sel, statuses):
        return sum(r["status"] in statuses for r in sel) / len(sel)

    for label, kind, _ in [("A/A", "none", 0)] + injections:
        for check in ([check_of[kind]] if kind != "none" else check_of.values()):
            ch = [r["change"] for r in select(label, "smoke", check) if isinstance(r["change"], (int, float))]
            if ch:
                print(f"measured {check} change, {label}: median {statistics.median(ch):+.1%} "
                      f"(min {min(ch):+.1%}, max {max(ch):+.1%})")
    print(f"\n{'pairs':<16} {'check':<25} {'tier':<10} {'threshold':>9}  {'fail':>5} {'fail or warn':>12}")
    for label, kind, _ in [("A/A", "none", 0)] + injections:
        for check in ([check_of[kind]] if kind != "none" else check_of.values()):
            for tier in dict.fromkeys(r["tier"] for r in rows):
                sel = select(label, tier, check)
                thr = sel[0]["threshold"]
                thr_text = f"{thr:.1%}" if isinstance(thr, float) and thr < 1 else f"{thr}"
                print(f"{label:<16} {check:<25} {tier:<10} {thr_text:>9}  {rate(sel, ('fail',)):>5.0%} "
                      f"{rate(sel, ('fail', 'warn')):>12.0%}")
    print("(A/A rows are false-alarm rates; the others are detection rates)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "device": device, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
