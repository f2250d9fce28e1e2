"""Detection and false-alarm table of the verdict suite (tests/verdicts/cases.py, the same catalog the
tests assert): real regressions of the six embedded canaries arriving as a config change, as code with
the config unchanged, and beside a library upgrade; A/A reruns; metric renames; healthy changes.
Timing and memory checks are off.

    python benchmarks/verdict_suite.py [--workers 2] [--types ppo grpo ...] [--json-out FILE] [--work DIR]

Train each run once (two worker processes by default); --work keeps them for the next call.

Columns: regressions detected (verdict fail), warned (warn only), missed (pass); right cause: the
first-ranked cause's `kind` is the expected one (of the cases that name one). Rows below: A/A false
failures and warnings, renames that do not behave (a known alias must pass, an unknown rename must be
a named run.metrics warning), healthy changes that fail as instability.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.verdicts.cases import CASES, TYPES, outcome, problems, runs  # noqa: E402
from tests.verdicts.harness import run_suite  # noqa: E402

ARRIVALS = ("config", "code", "upgrade")


def table(cases, results) -> str:
    lines = [f"{'type':<7} {'arrival':<8} {'regressions':>11} {'detected':>8} {'warned':>6} {'missed':>6} "
             f"{'right cause':>11}"]

    def row(label_t, label_a, sel):
        outs = [outcome(c, results[c.name]) for c in sel]
        named = [c for c in sel if c.kinds is not None]
        right = sum((results[c.name]["kinds"] or [None])[0] in c.kinds for c in named)
        lines.append(f"{label_t:<7} {label_a:<8} {len(sel):>11} {outs.count('detected'):>8} "
                     f"{outs.count('warned'):>6} {outs.count('missed'):>6} {f'{right}/{len(named)}':>11}")

    regs = [c for c in cases if c.arrival in ARRIVALS]
    for t in TYPES:
        for a in ARRIVALS:
            sel = [c for c in regs if c.type == t and c.arrival == a]
            if sel:
                row(t, a, sel)
    for a in ARRIVALS:
        row("all", a, [c for c in regs if c.arrival == a])
    row("all", "all", regs)
    lines.append("")
    for arrival, label in (("aa", "A/A reruns"), ("rename", "metric renames"), ("healthy", "healthy changes")):
        sel = [c for c in cases if c.arrival == arrival]
        if not sel:
            continue
        outs = [outcome(c, results[c.name]) for c in sel]
        bad = [f"{c.name}: {'; '.join(problems(c, results[c.name]))}" for c in sel if outcome(c, results[c.name]) != "ok"]
        if arrival == "healthy":
            lines.append(f"{label:<16} false failures as instability {outs.count('false-fail')}/{len(sel)}")
        else:
            lines.append(f"{label:<16} false failures {outs.count('false-fail')}/{len(sel)}, "
                         f"other departures {outs.count('false-warn')}/{len(sel)}")
        lines += [f"    {b}" for b in bad]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--types", nargs="*", default=list(TYPES))
    parser.add_argument("--json-out", metavar="FILE")
    parser.add_argument("--work", metavar="DIR", help="keep the runs here and reuse them on the next call")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if c.type in args.types]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verdict-suite-") as tmp:
        out = run_suite(args.work or tmp, cases, workers=args.workers, reuse=bool(args.work),
                        log=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    results = out["results"]
    print(table(cases, results))
    misses = [c for c in cases if problems(c, results[c.name])]
    print(f"\n{len(cases)} cases, {len(runs(cases))} runs ({len(out['train_s'])} trained now), "
          f"{time.perf_counter() - t0:.0f} s; "
          f"{len(misses)} cases depart from their expectations:")
    for c in misses:
        g = results[c.name]
        print(f"  {c.name}: {'; '.join(problems(c, g))}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"cases": [{"name": c.name, "type": c.type, "arrival": c.arrival, "breaks": c.breaks,
                        "expected": {"verdict": c.verdict, "must_fail": c.must_fail, "kinds": c.kinds},
                        "outcome": outcome(c, results[c.name]), "problems": problems(c, results[c.name]),
                        **results[c.name]} for c in cases],
             "train_s": out["train_s"], "wall_s": out["wall_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
