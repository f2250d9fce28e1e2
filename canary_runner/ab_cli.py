"""`canary ab`: the base and the head of a change measured side by side on this machine, pair by pair."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Run CONFIG on the base and on the head of a change, alternately in fresh processes (ABBA...), after
one untimed warm-up per side, and decide after each pair: fail when the change of step time or peak
memory is clearly past its limit, pass when it is clearly within, otherwise another pair, up to
--pairs or --budget (then unknown: a warning with the interval). The repeated looks keep the error
rate (see canary_runner/compare/sequential.py). Health, curves and correctness are checked against
the base runs as `canary compare` does.

Each side is a directory (a checkout) or a git ref of the repository here (checked out as a
worktree; fetched from origin when a shallow clone lacks it). CONFIG is a path relative to the
repository root, found in each side's own tree (one that exists only in the head is a new canary: no
verdict), or a shipped config name.

  canary ab canary/dpo.yaml --base origin/main --head .
  canary ab dpo_embedded --base ../main-checkout --head . --pairs 6 --budget 300

Exit codes: 0 pass, warn, unknown or new canary; 1 fail; 2 bad input; 3 a side's run crashed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", help="config path relative to the repository root, or a shipped config name")
    parser.add_argument("--base", required=True, metavar="DIR_OR_REF", help="the base side: a directory or a git ref")
    parser.add_argument("--head", default=".", metavar="DIR_OR_REF", help="the head side (default: this directory)")
    parser.add_argument("-o", "--output", default="runs/ab", metavar="DIR",
                        help="where the runs and comparison.json go (default: runs/ab)")
    parser.add_argument("--pairs", type=int, default=10, metavar="N", help="the most pairs to run (default 10)")
    parser.add_argument("--min-pairs", type=int, default=3, metavar="N",
                        help="pairs before the first decision (default 3, at least 2)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="stop starting pairs once the next would end past this many seconds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field on both sides")
    parser.add_argument("--install", action="append", default=[], metavar="PIP_ARGS",
                        help="install into each side's own overlay environment, run in that side's tree (repeatable)")
    parser.add_argument("--tier", choices=("smoke", "perf", "nightly"), help="threshold tier (default: the config's)")


def main(args) -> int:
    from . import ab
    from .results import MetricsFileError

    plan = ab.Plan(config=args.config, base=args.base, head=args.head, out=Path(args.output),
                   max_pairs=args.pairs, min_pairs=args.min_pairs, budget_s=args.budget, sets=args.set,
                   install=args.install, tier=args.tier,
                   progress=lambda line: print(f"canary ab: {line}", file=sys.stderr))
    try:
        doc, code = ab.run_ab(plan)
    except ab.ABError as e:
        print(f"canary ab: error: {e}", file=sys.stderr)
        return ab.EXIT_BAD_INPUT
    except ab.ABCrashed as e:
        print(f"canary ab: error: {e}", file=sys.stderr)
        return ab.EXIT_CRASHED
    except MetricsFileError as e:
        print(f"canary ab: error: a run left no usable record: {e}", file=sys.stderr)
        return ab.EXIT_CRASHED
    info = doc.get("ab", {})
    print(f"canary ab: {doc['verdict'].upper()}  {info.get('stopped', '')}")
    for metric, d in info.get("decisions", {}).items():
        print(f"  {metric:<10} {ab._fmt_decision(d)}  pair ratios " + " ".join(f"{r:.3f}" for r in d["ratios"]))
    print(f"wrote {Path(args.output) / 'comparison.json'}")
    return code
