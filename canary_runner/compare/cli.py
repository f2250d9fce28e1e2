"""`canary compare`: the verdict of a current run (or repeats) against a baseline.

Kept import-light: the `canary` parser imports this module; numpy/scipy load only in `main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_CRASH = 0, 1, 2, 3
TIERS = ("smoke", "perf", "nightly")

DESCRIPTION = """\
Compare a current canary run with a baseline and write comparison.json (verdict, every check with
baseline, current, change, confidence interval, threshold and reason, ranked likely causes).

Runs: CURRENT and each BASELINE is a metrics.json, a run directory (`canary run -o DIR`), or a
directory whose subdirectories are run directories: all of them are repeats of one side. More
current repeats: --current PATH (repeatable). Every BASELINE path belongs to the baseline side.

  canary compare runs/pr runs/main                      one run each
  canary compare runs/pr-repeats/ runs/main-a runs/main-b   repeats on both sides
  canary compare runs/pr1 runs/main --current runs/pr2  two current repeats (options after the paths)
  canary compare runs/pr --no-baseline                  baseline-free checks only

Exit codes: 0 pass, warn or no-baseline; 1 fail; 2 bad input; 3 internal error."""

EPILOG = """\
Thresholds: per-tier defaults (canary_runner/compare/defaults.yaml), then the current run's
`thresholds:` config block, then --thresholds FILE; `canary compare --list-checks` lists the ids.
`canary calibrate CONFIG --runs N` writes a thresholds file fitted to this machine's noise."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("current", nargs="?", metavar="CURRENT",
                        help="the current run: metrics.json, run directory, or directory of repeats")
    parser.add_argument("baselines", nargs="*", metavar="BASELINE",
                        help="baseline run(s): metrics.json, run directory, or directory of repeats")
    parser.add_argument("--current", dest="more_current", action="append", default=[], metavar="PATH",
                        help="another current run (a repeat); may be given several times")
    parser.add_argument("--no-baseline", action="store_true",
                        help="no baseline: run the baseline-free checks only (verdict no-baseline unless one fails)")
    parser.add_argument("--tier", choices=TIERS, help="threshold tier (default: the current run's tier)")
    parser.add_argument("--thresholds", metavar="FILE", help="YAML file of per-check threshold overrides")
    parser.add_argument("-o", "--output", default="comparison.json", metavar="FILE",
                        help="where to write comparison.json (default: ./comparison.json)")
    parser.add_argument("--json", action="store_true", help="print comparison.json to stdout instead of the summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing and skipped checks too")
    parser.add_argument("--list-checks", action="store_true", help="list the check ids and their default thresholds")


def _error(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"canary compare: error: {message}", file=sys.stderr)
    return code


def main(args) -> int:
    from ..thresholds import ThresholdsError
    from .loading import CompareInputError

    try:
        return _run(args)
    except (CompareInputError, ThresholdsError) as e:
        return _error(str(e))
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_CRASH)
    except Exception:
        traceback.print_exc()
        return _error("internal error while comparing (the traceback is above); please report it", EXIT_CRASH)


def _run(args) -> int:
    if args.list_checks:
        return list_checks()
    if not args.current:
        return _error("give the current run: canary compare CURRENT [BASELINE ...] (see --help)")
    if args.no_baseline and args.baselines:
        return _error("--no-baseline and BASELINE paths exclude each other; drop one")

    from ..results import encode, write_json_atomic
    from ..thresholds import load_thresholds, parse_thresholds
    from . import engine
    from .loading import load_side
    from .settings import resolve

    current = load_side([args.current, *args.more_current], "current")
    baseline = load_side(args.baselines, "baseline") if args.baselines else []
    _check_recorded_configs(current + baseline)
    file = load_thresholds(args.thresholds) if args.thresholds else None
    inline_raw = current[0].config.get("thresholds")
    inline = parse_thresholds(inline_raw, f"{current[0].path}: config.thresholds") if inline_raw else None
    tier = args.tier or current[0].info.get("tier", "smoke")
    settings = resolve(tier, inline, f"config:{current[0].info['config_name']}#thresholds", file,
                       f"file:{args.thresholds}")
    doc = engine.compare(current, baseline, settings)
    if args.output and args.output != "-":
        write_json_atomic(args.output, doc)
    if args.json or args.output == "-":
        print(json.dumps(encode(doc), indent=1))
    else:
        print_summary(doc, args.output, args.verbose)
    return EXIT_FAIL if doc["verdict"] == "fail" else EXIT_OK


def _check_recorded_configs(runs) -> None:
    """The checks read single values from each run's recorded config (seed, learning rate, beta): a
    list or a mapping there is bad input, said with the field, not a TypeError deep in a check."""
    from ..config import shape_problems
    from .loading import CompareInputError

    for run in runs:
        problems = shape_problems(run.config)
        if problems:
            raise CompareInputError(f"{run.path}: the recorded config is not one canary config: "
                                    + "; ".join(problems[:5]) + ". Re-run `canary run` to write the run again.")


def list_checks() -> int:
    from .settings import TIERS as tiers, resolve

    per_tier = {t: resolve(t) for t in tiers}
    ids = sorted(per_tier["smoke"].checks)
    table = []
    for cid in ids:
        cells = []
        for t in tiers:
            lim = per_tier[t].limit(cid)
            parts = [f"{k}={v:g}" for k, v in (("relative", lim.relative), ("absolute", lim.absolute),
                                                ("max", lim.max), ("min", lim.min)) if v is not None]
            if lim.severity != "fail":
                parts.append(f"severity={lim.severity}")
            cells.append(", ".join(parts) or "-")
        table.append((cid, cells))
    w0 = max(len(c) for c in ids)
    widths = [max(len(t), *(len(row[1][i]) for row in table)) for i, t in enumerate(tiers)]
    print(f"{'check id':<{w0}}  " + "  ".join(f"{t:<{w}}" for t, w in zip(tiers, widths)).rstrip())
    for cid, cells in table:
        print(f"{cid:<{w0}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip())
    print("\nAlso always run: run.status. Families perf.phase, memory.cuda_max_allocated and "
          "memory.cuda_max_reserved take FAMILY.NAME keys for one phase or device.")
    return EXIT_OK


def print_summary(doc: dict, output: str | None, verbose: bool) -> None:
    cur, base = doc["current"], doc["baseline"]
    against = (f"{base['runs']} baseline run(s) ({base['config_name']})" if base else "no baseline")
    print(f"canary compare: {doc['verdict'].upper()}  {cur['config_name']} ({cur['training_type']}, "
          f"{doc['tier']} tier): {cur['runs']} current run(s) vs {against}")
    shown = [c for c in doc["checks"] if verbose or c["status"] in ("fail", "warn")]
    width = max((len(c["id"]) for c in shown), default=10)
    for c in shown:
        print(f"  {c['status']:<4}  {c['id']:<{width}}  {c['reason']}")
    n = doc["counts"]
    print(f"  {n['pass']} pass, {n['warn']} warn, {n['fail']} fail, {n['skip']} skipped")
    if doc["diagnosis"]:
        print("Likely causes:")
        for d in doc["diagnosis"][:5]:
            print(f"  {d['rank']}. {d['cause']}")
            for e in d["evidence"][:5]:
                print(f"     - {e}")
            if d["next_steps"]:
                print(f"     next: {d['next_steps'][0]}")
    if output and output != "-":
        print(f"wrote {output}")
