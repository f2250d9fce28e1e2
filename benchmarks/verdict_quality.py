"""Verdict quality, stored baseline vs A/B on one runner, side by side in one run: the false-alarm
rate over A/A decisions and the detection rates of real, injected regressions (step-time slowdowns,
a memory increase), with each mode's time to a decision.

The canary is a user tree (a folder with `canary.yaml`, the embedded DPO smoke config with one torch
thread, and `inject.py`); a regression is a head tree whose config adds a TrainerCallback from
inject.py, as a team's change to its own code would:
- a slowdown sleeps, at the end of every step, FRACTION x the time the step took (the sleep lands in
  the next step's measured time), so every step really takes ~(1 + FRACTION) as long;
- a memory increase allocates and touches FRACTION x the process's anonymous memory at the start of
  training and holds it to the end, as a leak or a larger buffer would.
Nothing in metrics.json is edited.

Stored mode: every run is `canary run` in a fresh interpreter, as a CI job would; a decision is
`canary compare` of one head run against one base run (the stored baseline; the base run before it
in time, which favours this mode), at each tier's default thresholds.

A/B mode: streams of real A/B pairs (ABBA, fresh forked processes, as `canary ab` runs them), one
stream per kind. Each stream is cut into consecutive decisions exactly as `canary ab` would take
them live: pairs are added one by one to the current decision and the same sequential rule
(ab.decisions, ab.stop_state) says when it stops; the next decision starts with the next pair. Its
time cost is its pairs' wall time plus the once-per-job start-up (the two fork servers and the two
warm-up runs) measured at the start of the stream.

The rounds interleave everything (one pair of every unfinished stream, then one stored run) so that
a drift of the machine hits both modes and every kind alike.

    python benchmarks/verdict_quality.py [--decisions 30] [--injected-decisions 10]
                                         [--slowdown 0.10 0.15 0.20] [--memory 0.20] [--json-out FILE]
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

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

INJECT = '''\
import time

from transformers import TrainerCallback

FRACTION = {fraction}


class Slowdown(TrainerCallback):
    """Every step takes (1 + FRACTION) times as long: sleep in proportion to the step just taken."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.t_prev = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(FRACTION * (time.perf_counter() - self.t_prev))
        self.t_prev = time.perf_counter()


class Ballast(TrainerCallback):
    """Hold FRACTION x this process's anonymous memory from the start of training to its end."""

    def on_train_begin(self, args, state, control, **kwargs):
        from canary_runner.collect.memory import rss_anon_mb

        self.ballast = b"\\x01" * int(FRACTION * rss_anon_mb() * 2**20)  # written, so resident
'''
CHECK_OF = {"time": ("perf.step_time", "step_time"), "memory": ("memory.cpu_rss_anon_peak", "memory")}


def make_tree(root: Path, config: str, kind: str = "none", fraction: float = 0.0) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "verdict-quality-tree"\nversion = "0"\n')
    (root / "inject.py").write_text(INJECT.format(fraction=fraction))
    cfg = yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())
    cfg["name"] = "verdict_quality"
    cfg["train"]["cpu_threads"] = 1
    if kind != "none":
        cfg["trainer"] = {"callbacks": [{"time": "inject:Slowdown", "memory": "inject:Ballast"}[kind]]}
    (root / "canary.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def plain_run(tree: Path, out: Path) -> float:
    """`canary run` in a fresh interpreter; returns its wall time."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "canary_runner.cli", "run", str(tree / "canary.yaml"), "-o", str(out),
                    "--no-progress"], check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


class Stream:
    """A/B pairs of one kind (base tree vs a head tree), cut into decisions as `canary ab` takes them."""

    def __init__(self, label, kind, base_tree, head_tree, work, wanted, limits, min_pairs, max_pairs, alpha):
        from canary_runner import ab

        self.ab, self.label, self.kind, self.work, self.wanted = ab, label, kind, work, wanted
        self.limits, self.min_pairs, self.max_pairs, self.alpha = limits, min_pairs, max_pairs, alpha
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        self.sides = {}
        for name, tree in (("base", base_tree), ("head", head_tree)):
            side = ab.Side(name, str(tree), tree, config=tree / "canary.yaml")
            side.launcher = ab.Launcher(side, ["trl:DPOTrainer"], ab.fork_safe(), work / f"server-{name}.log")
            self.sides[name] = side
        for name, side in self.sides.items():  # the untimed warm-up `canary ab` runs once per side
            self._run(name, work / "warmup" / name)
        self.startup_s = time.perf_counter() - t
        self.pairs = 0
        self.current = {"base": [], "head": [], "seconds": 0.0}
        self.decided: list[dict] = []

    @property
    def done(self) -> bool:
        return len(self.decided) >= self.wanted

    def _run(self, name: str, out: Path) -> dict:
        from canary_runner import results

        argv = ["run", str(self.sides[name].config), "-o", str(out), "--no-progress"]
        out.parent.mkdir(parents=True, exist_ok=True)
        code = self.sides[name].launcher.run(argv, out.with_suffix(".log"))
        record = results.load_metrics(out)
        if code != 0 or record.get("status") != "completed":
            raise RuntimeError(f"{self.label}: {out} exited {code}; see {out.with_suffix('.log')}")
        return self.ab.run_statistics(record)

    def pair(self) -> None:
        t = time.perf_counter()
        self.pairs += 1
        n = len(self.current["base"]) + 1  # the pair number within the current decision: ABBA there
        for name in (("base", "head") if n % 2 else ("head", "base")):
            self.current[name].append(self._run(name, self.work / name / f"{self.pairs:03d}"))
        self.current["seconds"] += time.perf_counter() - t
        final = n >= self.max_pairs
        args = (self.current["base"], self.current["head"], self.limits, self.alpha, self.min_pairs, self.max_pairs)
        state = self.ab.stop_state(self.ab.decisions(*args, final), final)
        if state:
            decided = self.ab.decisions(*args, True)
            self.decided.append({"pairs": n, "seconds": self.current["seconds"] + self.startup_s, "stop": state,
                                 **{m: {"state": d["state"], "change": d["change"], "ci": d["ci"]}
                                    for m, d in decided.items()}})
            self.current = {"base": [], "head": [], "seconds": 0.0}

    def close(self) -> None:
        for side in self.sides.values():
            side.launcher.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="dpo_embedded")
    parser.add_argument("--decisions", type=int, default=30, help="A/A decisions per mode")
    parser.add_argument("--injected-decisions", type=int, default=10, help="decisions per injected regression and mode")
    parser.add_argument("--slowdown", type=float, nargs="*", default=[0.10, 0.15, 0.20])
    parser.add_argument("--memory", type=float, nargs="*", default=[0.20])
    parser.add_argument("--pairs", type=int, default=10, help="A/B: the most pairs per decision (canary ab --pairs)")
    parser.add_argument("--min-pairs", type=int, default=3)
    parser.add_argument("--json-out", metavar="FILE")
    args = parser.parse_args(argv)

    from canary_runner import ab
    from canary_runner.collect.env import fingerprint
    from canary_runner.compare import engine
    from canary_runner.compare.loading import load_side
    from canary_runner.compare.settings import resolve

    fp = fingerprint()
    device = fp["gpu"]["name"] if fp["gpu"] else f"CPU {fp['cpu_model']} ({fp['cpu_count']} cores)"
    kinds = [("A/A", "none", 0.0, args.decisions)] + \
            [(f"slowdown +{f:.0%}", "time", f, args.injected_decisions) for f in args.slowdown] + \
            [(f"memory +{f:.0%}", "memory", f, args.injected_decisions) for f in args.memory]
    tiers = {t: resolve(t) for t in ("smoke", "perf", "nightly")}
    limits = ab.ab_limits(tiers["smoke"])
    print(f"verdict quality: {args.config} (cpu_threads 1) on {device}; {args.decisions} A/A and "
          f"{args.injected_decisions} injected decisions of each kind per mode; A/B {args.min_pairs}-{args.pairs} "
          f"pairs, limits {limits}", flush=True)
    t0 = time.perf_counter()
    rows, times = [], {"stored": [], "ab": []}
    with tempfile.TemporaryDirectory(prefix="verdict-quality-") as tmp:
        root = Path(tmp)
        base = make_tree(root / "trees" / "base", args.config)
        # the A/A head is a second, identical tree: each side of a real A/B is its own checkout
        trees = {label: make_tree(root / "trees" / f"head{i}", args.config, kind, fraction)
                 for i, (label, kind, fraction, _n) in enumerate(kinds)}
        # stored mode: a queue of plain runs, base runs interleaved with the heads they are compared to
        stored_queue = []
        for i in range(max(n for *_x, n in kinds) + 1):
            stored_queue.append(("base", i))
            stored_queue += [(label, i) for label, _k, _f, n in kinds if label != "A/A" and i < n]
        stored_runs: dict[tuple, tuple[Path, float]] = {}
        streams = [Stream(label, kind, base, trees[label], root / "ab" / f"s{i}", n, limits, args.min_pairs,
                          args.pairs, 0.01) for i, (label, kind, _f, n) in enumerate(kinds)]
        print(f"  A/B start-up (2 fork servers + 2 warm-ups) {statistics.median(s.startup_s for s in streams):.1f} s",
              flush=True)
        rounds = 0
        while stored_queue or not all(s.done for s in streams):
            rounds += 1
            for s in streams:
                if not s.done:
                    s.pair()
            for _ in range(2 if stored_queue else 0):
                if stored_queue:
                    label, i = stored_queue.pop(0)
                    tree = base if label == "base" else trees[label]
                    out = root / "stored" / f"{label.replace(' ', '_').replace('/', '')}-{i:03d}"
                    stored_runs[(label, i)] = (out, plain_run(tree, out))
            if rounds % 10 == 0:
                print(f"  round {rounds} ({time.perf_counter() - t0:.0f} s): A/B decisions "
                      + ", ".join(f"{s.label} {len(s.decided)}/{s.wanted}" for s in streams)
                      + f"; stored runs left {len(stored_queue)}", flush=True)
        for s in streams:
            s.close()
        # judge the stored pairs: head i (A/A: base i+1) against base i
        for label, kind, _f, n in kinds:
            for i in range(n):
                cur_key = ("base", i + 1) if label == "A/A" else (label, i)
                cur, secs = stored_runs[cur_key]
                baseline = load_side([str(stored_runs[("base", i)][0])], "baseline")
                current = load_side([str(cur)], "current")
                times["stored"].append(secs)
                for tier, settings in tiers.items():
                    doc = engine.compare(current, baseline, settings)
                    by_id = {c["id"]: c for c in doc["checks"]}
                    for k in (CHECK_OF if kind == "none" else [kind]):
                        c = by_id[CHECK_OF[k][0]]
                        rows.append({"mode": "stored", "tier": tier, "kind": label, "check": k, "status": c["status"],
                                     "change": c["change"], "seconds": secs})
        for s in streams:
            for d in s.decided[: s.wanted]:
                times["ab"].append(d["seconds"])
                for k in (CHECK_OF if s.kind == "none" else [s.kind]):
                    m = CHECK_OF[k][1]
                    status = {"fail": "fail", "pass": "pass", "unknown": "warn"}.get(d[m]["state"], "warn")
                    rows.append({"mode": "ab", "tier": "smoke", "kind": s.label, "check": k, "status": status,
                                 "change": d[m]["change"], "pairs": d["pairs"], "seconds": d["seconds"]})
    print(f"done in {time.perf_counter() - t0:.0f} s\n")

    def select(mode, tier, kind, check):
        return [r for r in rows if (r["mode"], r["tier"], r["kind"], r["check"]) == (mode, tier, kind, check)]

    print(f"{'kind':<16} {'check':<10} {'mode':<14} {'n':>3} {'fail':>5} {'fail/warn':>9} {'pass':>5} "
          f"{'median change':>13} {'median s':>8} {'pairs':>5}")
    for label, kind, _f, _n in kinds:
        for k in (CHECK_OF if kind == "none" else [kind]):
            for mode, tier in [("stored", "smoke"), ("ab", "smoke"), ("stored", "perf"), ("stored", "nightly")]:
                sel = select(mode, tier, label, k)
                if not sel:
                    continue
                rate = lambda sts: sum(r["status"] in sts for r in sel) / len(sel)  # noqa: E731
                ch = [r["change"] for r in sel if isinstance(r["change"], (int, float))]
                pairs = [r["pairs"] for r in sel if "pairs" in r]
                print(f"{label:<16} {k:<10} {mode + ' ' + tier:<14} {len(sel):>3} {rate(('fail',)):>5.0%} "
                      f"{rate(('fail', 'warn')):>9.0%} {rate(('pass',)):>5.0%} "
                      f"{(f'{statistics.median(ch):+.1%}' if ch else '-'):>13} "
                      f"{statistics.median(r['seconds'] for r in sel):>8.1f} "
                      f"{(f'{statistics.median(pairs):g}' if pairs else '-'):>5}")
    print("(A/A rows: false alarms are `fail`; injected rows: detection is `fail`, flagged is `fail/warn`;"
          " seconds: a decision's wall time, stored = one fresh `canary run` of the head)")
    print(f"median time to a decision: stored {statistics.median(times['stored']):.1f} s, "
          f"A/B {statistics.median(times['ab']):.1f} s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "device": device, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
