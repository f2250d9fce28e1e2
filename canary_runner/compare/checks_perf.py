"""Performance and memory checks.

Step time, throughput and phase times compare the per-step samples after warmup: the change of the
median (current / baseline - 1). With repeats on both sides the run is the unit (a bootstrap over the
runs' medians); with one run on a side, a bootstrap over its steps and a two-sided Mann-Whitney
p-value, and the reason says that this interval sees step-to-step noise only. Memory compares each run's peak; with
repeats, the interval spans the extreme pairs (every current run against every baseline run).
"""

from __future__ import annotations

import statistics
import zlib

from .model import Check, Context, cap_severity, conclude, judge_change, judge_level
from .stats import Change, bootstrap_change, relative_change

PHASE_TITLES = {"generation": "Generation time", "update": "Update time"}


def _seed(check_id: str) -> int:
    return zlib.crc32(check_id.encode())


def _sampled(ctx: Context, check_id: str, title: str, metric: str, unit: str, direction: str,
             samples, what: str) -> Check:
    chk = Check(check_id, "performance", title, metric, direction, unit)
    limit = ctx.limit(check_id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    cur = [samples(r) for r in ctx.current]
    n_cur = sum(len(c) for c in cur)
    chk.n_current = n_cur
    if not ctx.has_baseline:
        if n_cur:
            chk.current = statistics.median(v for c in cur for v in c)
        return chk.skip("no baseline to compare with")
    base = [samples(r) for r in ctx.baseline]
    n_base = sum(len(b) for b in base)
    if n_cur < 3 or n_base < 3:
        return chk.skip(f"too few steps after warmup to compare ({n_base} baseline, {n_cur} current; need 3)")
    by_runs = sum(1 for b in base if b) >= 2 and sum(1 for c in cur if c) >= 2
    if by_runs:
        # The run is the unit of replication: the steps of one run share its machine state, so they are
        # not independent samples of the run-to-run noise. Each run counts once, by its median.
        ch = bootstrap_change([[statistics.median(b)] for b in base if b], [[statistics.median(c)] for c in cur if c],
                              "median", ctx.confidence, ctx.settings.resamples, _seed(check_id))
    else:
        ch = bootstrap_change(base, cur, "median", ctx.confidence, ctx.settings.resamples, _seed(check_id),
                              rank_test=True)
    judge_change(chk, ch, limit, what)
    chk.confidence = ctx.confidence
    chk.details = {
        "runs_baseline": len(base), "runs_current": len(cur),
        "run_medians_baseline": [statistics.median(b) for b in base if b],
        "run_medians_current": [statistics.median(c) for c in cur if c],
        "unit": "run" if by_runs else "step",
    }
    if by_runs:
        chk.reason += f"; interval over runs ({len(base)} baseline, {len(cur)} current), each by its median"
    else:
        if ch.p_value is not None:
            chk.reason += f"; Mann-Whitney p={ch.p_value:.2g}, n={n_base}/{n_cur} steps"
        chk.reason += ("; with one run on a side the interval covers step-to-step noise only, not run-to-run "
                       "noise: repeat runs, or measure base and head side by side (canary ab)")
    return cap_severity(chk, limit)


def phase_names(ctx: Context) -> list[str]:
    names = set()
    for r in ctx.current + ctx.baseline:
        # Per-rank series of distributed runs ("rank1/step_time_s") are not phases.
        names |= {k[: -len("_time_s")] for k in r.series
                  if k.endswith("_time_s") and k != "step_time_s" and "/" not in k}
    return sorted(names)


def _tokens_per_s(run, last: float) -> list[float]:
    """Tokens per second of each step after warmup, up to step `last`."""
    times = dict(run.finite_points("step_time_s", after_warmup=True))
    return [t / times[s] for s, t in run.finite_points("tokens")
            if s <= last and t > 0 and times.get(s, 0) > 0]


def performance_checks(ctx: Context) -> list[Check]:
    # Only the steps both sides recorded: a run that stopped at step 11 is timed against the baseline's
    # steps up to 11 (its last steps, near a crash, are not the baseline's steady state).
    last = ctx.last_common_step

    def steady(name):
        return lambda r: [v for s, v in r.finite_points(name, after_warmup=True) if s <= last]

    out = [
        _sampled(ctx, "perf.step_time", "Step time", "step_time_s", "s", "lower_is_better",
                 steady("step_time_s"), "median step time"),
        _sampled(ctx, "perf.tokens_per_s", "Throughput", "tokens_per_s", "tokens/s", "higher_is_better",
                 lambda r: _tokens_per_s(r, last), "median tokens/s"),
    ]
    if all(not r.tokens_per_s() for r in ctx.current):
        out[1].skip("no token counts recorded")
    for phase in phase_names(ctx):
        out.append(_sampled(ctx, f"perf.phase.{phase}", PHASE_TITLES.get(phase, f"{phase} time"),
                            f"{phase}_time_s", "s", "lower_is_better",
                            steady(f"{phase}_time_s"), f"median {phase} time per step"))
    return out


# -- memory -----------------------------------------------------------------------------------------


def _peak_change(base: list[float], cur: list[float]) -> Change:
    b, c = statistics.median(base), statistics.median(cur)
    rel = relative_change(b, c)
    abs_ci = rel_ci = None
    if len(base) > 1 or len(cur) > 1:
        abs_ci = (min(cur) - max(base), max(cur) - min(base))
        if rel is not None:
            rel_ci = (abs_ci[0] / abs(b), abs_ci[1] / abs(b))
    return Change(b, c, rel, rel_ci, c - b, abs_ci, len(base), len(cur))


def _memory_check(ctx: Context, check_id: str, title: str, metric: str, value, what: str,
                  category: str = "memory", unit: str | None = "MB") -> Check:
    """A per-run peak (lower is better) vs the baseline's, and against an absolute `max`."""
    chk = Check(check_id, category, title, metric, "lower_is_better", unit)
    limit = ctx.limit(check_id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    cur = [v for v in (value(r) for r in ctx.current) if v is not None]
    if not cur:
        return chk.skip("not recorded in the current run")
    chk.current, chk.n_current = statistics.median(cur), len(cur)
    base = [v for v in (value(r) for r in ctx.baseline) if v is not None]
    reasons = []
    status = "pass"
    if base and (limit.relative is not None or limit.absolute is not None):
        judge_change(chk, _peak_change(base, cur), limit, what)
        status, reasons = chk.status, [chk.reason]
        chk.details = {"runs_baseline": base, "runs_current": cur}
    return conclude(chk, limit, status, reasons, judge_level(chk, max(cur), limit, f"peak {what}"),
                    "no baseline to compare with, and no absolute limit (max) set")


def _summary_mem(key: str):
    def get(run):
        v = (run.summary.get("peak_memory") or {}).get(key)
        return float(v) if isinstance(v, (int, float)) else None
    return get


def _device_mem(device: str, key: str):
    def get(run):
        for d in (run.summary.get("peak_memory") or {}).get("devices") or []:
            if d.get("device") == device:
                return float(d[key])
        return None
    return get


def memory_checks(ctx: Context) -> list[Check]:
    out = []
    if any(_summary_mem("cpu_rss_anon_mb")(r) is not None for r in ctx.current):
        out.append(_memory_check(ctx, "memory.cpu_rss_anon_peak", "CPU memory peak (RssAnon)",
                                 "summary.peak_memory.cpu_rss_anon_mb", _summary_mem("cpu_rss_anon_mb"),
                                 "RssAnon"))
        out.append(_memory_check(ctx, "memory.cpu_rss_anon_rise", "CPU memory rise during training",
                                 "summary.peak_memory.cpu_rss_anon_rise_mb", _summary_mem("cpu_rss_anon_rise_mb"),
                                 "RssAnon rise"))
    devices = []
    for r in ctx.current:
        for d in (r.summary.get("peak_memory") or {}).get("devices") or []:
            if d.get("device") not in devices:
                devices.append(d.get("device"))
    for dev in devices:
        out.append(_memory_check(ctx, f"memory.cuda_max_allocated.{dev}", f"GPU memory allocated ({dev})",
                                 "summary.peak_memory.devices.max_allocated_mb",
                                 _device_mem(dev, "max_allocated_mb"), f"allocated on {dev}"))
        out.append(_memory_check(ctx, f"memory.cuda_max_reserved.{dev}", f"GPU memory reserved ({dev})",
                                 "summary.peak_memory.devices.max_reserved_mb",
                                 _device_mem(dev, "max_reserved_mb"), f"reserved on {dev}"))
    return out


# -- distributed ------------------------------------------------------------------------------------


def _distributed(key: str):
    def get(run):
        v = (run.summary.get("distributed") or {}).get(key)
        return float(v) if isinstance(v, (int, float)) else None
    return get


def distributed_checks(ctx: Context) -> list[Check]:
    """Multi-process runs: the largest rank's peak memory and the straggler ratio (slowest rank's
    median step time over the median rank's)."""
    if all(_distributed("world_size")(r) is None for r in ctx.current):
        return []
    return [
        _memory_check(ctx, "distributed.rank_memory", "Peak memory of the largest rank",
                      "summary.distributed.peak_memory_max_mb", _distributed("peak_memory_max_mb"),
                      "largest rank's peak memory", category="distributed"),
        _memory_check(ctx, "distributed.straggler_ratio", "Straggler ratio (slowest / median rank)",
                      "summary.distributed.straggler_ratio", _distributed("straggler_ratio"),
                      "straggler ratio", category="distributed", unit=None),
    ]
