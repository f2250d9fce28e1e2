"""`canary calibrate CONFIG --runs N`: thresholds fitted to this machine's own noise.

Runs the config N times in a row (A/A: same config, same seed), measures how far apart the runs land
on each metric, and writes a thresholds file:

- performance (step time, tokens/s, phase times): spread = the largest relative difference between
  the median step times (etc.) of any two runs; threshold `relative` = MULTIPLE x spread, at least 2%.
  With 5 runs or more, the one run farthest from the others is left out first: a single run disturbed
  by another job would otherwise set the threshold for every later comparison.
- memory peaks: spread = max - min over the runs; `absolute` = MULTIPLE x spread (at least 4 MB) and
  `relative` = the same as a fraction of the median peak (at least 2%).
- numeric checks (loss/reward curves, RL late-window means): written only when the A/A spread seen
  would trip the tier default (nondeterministic hardware); then raised to MULTIPLE x spread.

MULTIPLE defaults to 1.5, the factor Megatron-LM applies to the spread of its golden values. Kept
import-light: the runner (TRL, torch) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

EXIT_OK, EXIT_BAD_INPUT, EXIT_CRASH = 0, 2, 3
PERF_FLOOR = 0.02
MEM_FLOOR_MB, MEM_FLOOR_REL = 4.0, 0.02


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run CONFIG N times on this machine (A/A), measure each metric's spread, and write a thresholds file "
        "(MULTIPLE x the spread) for `canary compare --thresholds`. Runs are sequential, in temp dirs.")
    parser.add_argument("config", help="a config file, or the name of a shipped config")
    parser.add_argument("--runs", type=int, default=5, metavar="N", help="number of runs (>= 2; default 5)")
    parser.add_argument("-o", "--output", default="thresholds.yaml", metavar="FILE",
                        help="thresholds file to write (default: ./thresholds.yaml; '-' for stdout)")
    parser.add_argument("--multiple", type=float, default=1.5,
                        help="threshold = MULTIPLE x the largest A/A difference (default 1.5)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--tier", choices=("smoke", "perf", "nightly"),
                        help="tier whose defaults numeric checks are measured against (default: the config's)")
    parser.add_argument("--keep", metavar="DIR", help="keep the runs in DIR (default: a temp dir, removed)")


def _error(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"canary calibrate: error: {message}", file=sys.stderr)
    return code


def main(args) -> int:
    from ..cli import resolve_config_path
    from ..quiet import quiet_libraries
    from ..config import ConfigError, load_config

    if args.runs < 2:
        return _error(f"--runs {args.runs}: at least 2 runs are needed to measure a spread (5 or more recommended)")
    if not args.multiple > 0:
        return _error("--multiple must be positive")
    path = resolve_config_path(args.config)
    try:
        cfg = load_config(path, args.set or [])
    except ConfigError as e:
        return _error(str(e))
    quiet_libraries()
    from ..runner import SetupError, run
    from .loading import load_side

    try:
        with tempfile.TemporaryDirectory(prefix="canary-calibrate-") as tmp:
            root = Path(args.keep) if args.keep else Path(tmp)
            dirs = []
            for i in range(args.runs):
                out = root / f"run-{i + 1:02d}"
                try:
                    record, code = run(cfg, out, config_path=str(path))
                except SetupError as e:
                    return _error(f"{path}: {e}")
                if code != 0:
                    err = record.get("error") or {}
                    return _error(f"run {i + 1} {record['status']}: {err.get('type')}: {err.get('message')}; "
                                  "calibration needs runs that complete", EXIT_CRASH)
                med = record["summary"]["step_time_s"]["median"]
                print(f"run {i + 1}/{args.runs}: median step time {med * 1000:.2f} ms", file=sys.stderr)
                dirs.append(out)
            runs = load_side(dirs, "calibration")
            text = render(runs, args.multiple, args.tier or cfg.tier)
    except Exception:
        traceback.print_exc()
        return _error("internal error while calibrating (traceback above)", EXIT_CRASH)
    if args.output == "-":
        print(text, end="")
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({args.runs} runs, multiple {args.multiple:g})", file=sys.stderr)
    return EXIT_OK


# -- measuring ------------------------------------------------------------------------------------------


def _ceil(x: float, digits: int = 3) -> float:
    f = 10 ** digits
    return math.ceil(x * f) / f


def _max_pair_rel(values: list[float]) -> float:
    return max((abs(a / b - 1) for a, b in itertools.permutations(values, 2) if b), default=0.0)


def measure(runs, multiple: float, tier: str) -> list[tuple[str, dict, str]]:
    """(check id, limits to write, comment) per calibrated check."""
    from . import checks_health, checks_perf, checks_run
    from .settings import resolve

    defaults = resolve(tier)
    out = []
    perf = [("perf.step_time", lambda r: r.steady("step_time_s"), "s"),
            ("perf.tokens_per_s", lambda r: r.tokens_per_s(), "tokens/s")]  # higher is better: a drop
    phases = sorted({k[: -len("_time_s")] for r in runs for k in r.series if k.endswith("_time_s")
                     and k != "step_time_s"})
    perf += [(f"perf.phase.{p}", lambda r, p=p: r.steady(f"{p}_time_s"), "s") for p in phases]
    for cid, samples, unit in perf:
        meds = [statistics.median(s) for s in (samples(r) for r in runs) if s]
        if len(meds) < 2:
            continue
        dropped = ""
        if len(meds) >= 5:
            center = statistics.median(meds)
            far = max(meds, key=lambda m: abs(math.log(m / center)) if m > 0 and center > 0 else 0.0)
            meds.remove(far)
            dropped = f" (left out the farthest run, {far:.4g} {unit})"
        if cid == "perf.tokens_per_s":
            spread = 1 - min(meds) / max(meds)  # the largest drop between two runs
            thr = min(_ceil(max(multiple * spread, PERF_FLOOR)), 0.95)
        else:
            spread = _max_pair_rel(meds)
            thr = _ceil(max(multiple * spread, PERF_FLOOR))
        out.append((cid, {"relative": thr},
                    f"run medians {min(meds):.4g}..{max(meds):.4g} {unit}: largest A/A change {spread:.1%}{dropped}"))

    mem = [("memory.cpu_rss_anon_peak", checks_perf._summary_mem("cpu_rss_anon_mb")),
           ("memory.cpu_rss_anon_rise", checks_perf._summary_mem("cpu_rss_anon_rise_mb"))]
    devices = sorted({d["device"] for r in runs for d in r.summary.get("peak_memory", {}).get("devices", [])})
    for dev in devices:
        mem += [(f"memory.cuda_max_allocated.{dev}", checks_perf._device_mem(dev, "max_allocated_mb")),
                (f"memory.cuda_max_reserved.{dev}", checks_perf._device_mem(dev, "max_reserved_mb"))]
    for cid, value in mem:
        vals = [v for v in (value(r) for r in runs) if v is not None]
        if len(vals) < 2:
            continue
        spread = max(vals) - min(vals)
        med = statistics.median(vals)
        limits = {"absolute": _ceil(max(multiple * spread, MEM_FLOOR_MB), 1)}
        if not cid.endswith("_rise") and med > 0:
            limits["relative"] = _ceil(max(multiple * spread / med, MEM_FLOOR_REL))
        out.append((cid, limits, f"peaks {min(vals):.1f}..{max(vals):.1f} MB: spread {spread:.1f} MB"))

    # numeric checks: loosen a default only when A/A already trips it
    curves = [("correctness.loss_curve", "loss")]
    reward = checks_run.REWARD_CURVE.get(runs[0].training_type)
    if reward:
        curves.append(("correctness.reward_curve", reward))
    for cid, metric in curves:
        lim = defaults.limit(cid)
        rel, atol = lim.relative or 0.0, lim.absolute or 0.0
        largest, needed = 0.0, 0.0  # largest |diff|; absolute tolerance that keeps MULTIPLE x |diff| in the band
        for a, b in itertools.permutations(runs, 2):
            bv = dict(b.finite_points(metric))
            for step, v in a.finite_points(metric):
                if step in bv:
                    d = abs(v - bv[step])
                    largest = max(largest, d)
                    needed = max(needed, multiple * d - rel * abs(bv[step]))
        if needed > atol:
            out.append((cid, {"absolute": _ceil(needed, 6)},
                        f"largest A/A difference {largest:.3g}: the default band would trip"))
        else:
            out.append((cid, None, f"largest A/A difference {largest:.3g}: within the default band"))
    t = runs[0].training_type
    frac = defaults.window
    for name, metric, *_ in checks_health.RL_LEVEL.get(t, []):
        cid = f"rl.{t}.{name}"
        lim = defaults.limit(cid)
        means = [statistics.fmean(v for _, v in w) for w in (checks_health.late_window(r, metric, frac) for r in runs) if w]
        if len(means) < 2:
            continue
        spread = max(means) - min(means)
        rel = _max_pair_rel(means) if all(abs(m) > 1e-12 for m in means) else None
        if lim.absolute is not None and multiple * spread > lim.absolute and \
                (lim.relative is None or rel is None or multiple * rel > lim.relative):
            limits = {"absolute": _ceil(multiple * spread, 4)}
            if lim.relative is not None and rel is not None:
                limits["relative"] = _ceil(multiple * rel)
            out.append((cid, limits, f"late means {min(means):.4g}..{max(means):.4g}: the default would trip"))
        else:
            out.append((cid, None, f"late means {min(means):.4g}..{max(means):.4g}: within the default"))
    return out


def render(runs, multiple: float, tier: str) -> str:
    from ..thresholds import parse_thresholds

    r0 = runs[0]
    rows = measure(runs, multiple, tier)
    lines = [
        "# Thresholds fitted by `canary calibrate` to this runner's own noise.",
        f"# config {r0.info['config_name']} ({r0.training_type}), {len(runs)} A/A runs on {r0.env.get('hardware_key')}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; defaults of tier {tier} for the rest.",
        f"# threshold = {multiple:g} x the largest difference between any two runs (performance floor "
        f"{PERF_FLOOR:.0%}, memory floor {MEM_FLOOR_MB:g} MB / {MEM_FLOOR_REL:.0%}).",
        "# Use: canary compare CURRENT BASELINE --thresholds THIS_FILE",
        "version: 1",
        "checks:",
    ]
    data: dict = {"version": 1, "checks": {}}
    for cid, limits, comment in rows:
        if limits is None:
            lines.append(f"  # {cid}: {comment}")
            continue
        data["checks"][cid] = limits
        body = ", ".join(f"{k}: {v:g}" for k, v in limits.items())
        lines.append(f"  {cid}: {{{body}}}  # {comment}")
    parse_thresholds(data, "calibrated thresholds")  # what we write must load
    return "\n".join(lines) + "\n"
