"""Run status, config and environment differences, and correctness (curves against the baseline)."""

from __future__ import annotations

import math
import statistics

from .loading import NON_TRAINING_CONFIG, Run
from .model import Check, Context, cap_severity, fmt

SPREAD_K = 3.0  # band widening per standard deviation of the repeats at a step (the usual 3 sigma)
STACK_FIELDS = ("python", "cuda", "cudnn", "nccl", "gpu.driver", "gpu.name", "gpu.count")
# Per-step series that measure the machine, not the computation: left out of exact comparisons.
TIMING_PREFIXES = ("mem_",)
TIMING_NAMES = ("step_time", "warmup")

# The reward-like curve of each training type (loss is always compared).
REWARD_CURVE = {"dpo": "rewards/margins", "ppo": "objective/scores", "grpo": "reward", "rloo": "reward",
                "reward": "margin"}


def flatten(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def _absent(flat: dict, path: str) -> bool:
    """The path and every section above it are missing: a field a newer schema added, not a change."""
    parts = path.split(".")
    return not any(".".join(parts[:i]) in flat for i in range(1, len(parts) + 1))


def diff(base: dict, cur: dict) -> list[dict]:
    """Flattened differences. A path one side's schema does not have at all is marked
    `absent: baseline|current` (a field added by a newer canary, recorded but not held against the run)."""
    fb, fc = flatten(base), flatten(cur)
    out = []
    for k in sorted(set(fb) | set(fc)):
        if fb.get(k) == fc.get(k) and (k in fb) == (k in fc):
            continue
        entry = {"path": k, "baseline": fb.get(k), "current": fc.get(k)}
        if _absent(fb, k):
            entry["absent"] = "baseline"
        elif _absent(fc, k):
            entry["absent"] = "current"
        out.append(entry)
    return out


def env_changes(base: Run, cur: Run) -> list[dict]:
    return [{"field": d["path"], "baseline": d["baseline"], "current": d["current"],
             **({"absent": d["absent"]} if "absent" in d else {})} for d in diff(_with_replaced(base, cur), cur.env)]


def _with_replaced(base: Run, cur: Run) -> dict:
    """The baseline's env, plus the versions an install on the current side replaced (`env.install.changed`
    old versions) where the baseline did not fingerprint that package: `pyyaml 6.0.4 -> 6.0.2` is a
    change of the stack, not a field one side lacks."""
    changed = ((cur.env.get("install") or {}).get("changed")) or []
    packages = dict(base.env.get("packages") or {})
    for c in changed:
        if isinstance(c, dict) and c.get("old") and c.get("name") not in packages:
            packages[c["name"]] = c["old"]
    return {**base.env, "packages": packages}


def training_config_diff(ctx: Context) -> list[dict]:
    return [d for d in ctx.config_diff if d["path"].split(".")[0] not in NON_TRAINING_CONFIG and "absent" not in d]


def stack_changes(ctx: Context) -> list[dict]:
    return [c for c in ctx.env_changes if (c["field"].startswith("packages.") or c["field"] in STACK_FIELDS)
            and "absent" not in c]


# -- run ------------------------------------------------------------------------------------------------


def describe_error(run: Run) -> str:
    err = run.error or {}
    msg = (err.get("message") or "").strip().splitlines()
    text = f"{err.get('type', 'error')}: {msg[0][:300] if msg else 'no message'}"
    if err.get("step") is not None:
        text += f" (after step {err['step']})"
    return text


def run_status_check(ctx: Context) -> Check:
    chk = Check("run.status", "run", "Run status", "status", "none")
    bad = [r for r in ctx.current if r.status != "completed"]
    done = [r.info["steps_completed"] for r in ctx.current]
    planned = ctx.cur0.info["steps_planned"]
    chk.current = float(min(done))
    chk.threshold, chk.threshold_kind = float(planned), "absolute"
    if bad:
        r = bad[0]
        chk.step = (r.error or {}).get("step")
        which = f" ({len(bad)} of {len(ctx.current)} runs)" if len(ctx.current) > 1 else ""
        return chk.set("fail", f"the run {r.status}{which} after {r.info['steps_completed']}/{planned} steps: "
                               f"{describe_error(r)}")
    short = [d for d in done if d < planned]
    if short:
        return chk.set("fail", f"the run completed only {min(short)}/{planned} steps")
    return chk.set("pass", f"completed {planned}/{planned} steps" +
                   (f" in each of {len(ctx.current)} runs" if len(ctx.current) > 1 else ""))


def baseline_status_check(ctx: Context) -> Check:
    chk = Check("run.baseline_status", "run", "Baseline status", "status", "none")
    limit = ctx.limit(chk.id)
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    bad = [r for r in ctx.baseline if r.status != "completed"]
    if bad:
        r = bad[0]
        chk.set("fail", f"the baseline run {r.status} after {r.info['steps_completed']} steps ({describe_error(r)}): "
                        "comparisons use the steps it recorded; refresh the baseline")
    else:
        chk.set("pass", "the baseline completed")
    return cap_severity(chk, limit)


def config_check(ctx: Context) -> Check:
    chk = Check("run.config", "run", "Config", "config", "none")
    limit = ctx.limit(chk.id)
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    d = training_config_diff(ctx)
    if not d:
        return chk.set("pass", "same training config as the baseline")
    shown = ", ".join(f"{x['path']}: {x['baseline']!r} -> {x['current']!r}" for x in d[:5])
    more = f" and {len(d) - 5} more" if len(d) > 5 else ""
    chk.details = {"paths": [x["path"] for x in d]}
    chk.set("fail", f"the config differs from the baseline's: {shown}{more}")
    return cap_severity(chk, limit)


def hardware_check(ctx: Context) -> Check:
    chk = Check("environment.hardware", "environment", "Hardware", "env.hardware_key", "none")
    limit = ctx.limit(chk.id)
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    b, c = ctx.baseline[0].env.get("hardware_key"), ctx.cur0.env.get("hardware_key")
    if ctx.same_hardware:
        return chk.set("pass", f"same hardware ({c})")
    chk.set("fail", f"baseline measured on {b}, current on {c}: performance and memory checks are reported as "
                    "warnings only; compare against a baseline from the same runner type")
    return cap_severity(chk, limit)


def stack_check(ctx: Context) -> Check:
    chk = Check("environment.stack", "environment", "Software stack", "env.packages", "none")
    limit = ctx.limit(chk.id)
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    changes = stack_changes(ctx)
    if not changes:
        return chk.set("pass", "same library, Python and CUDA versions")
    chk.details = {"changes": changes}
    text = ", ".join(f"{c['field'].removeprefix('packages.')} {c['baseline']} -> {c['current']}" for c in changes[:6])
    chk.set("fail", f"versions changed: {text}{' ...' if len(changes) > 6 else ''}")
    return cap_severity(chk, limit)


def _machine_series(name: str) -> bool:
    """Series that measure the machine or the bookkeeping, not the training."""
    return (name in ("step", "warmup", "tokens") or name.endswith("_time_s") or name.startswith(TIMING_PREFIXES))


def _logged(runs: list[Run]) -> set[str]:
    return {n for r in runs for n, vals in r.series.items()
            if any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)}


def metrics_check(ctx: Context) -> Check:
    """A metric the baseline logged and the current run lacks: the checks that read it would skip
    silently. Named here; known renames across TRL / transformers versions are read as aliases
    (loading.ALIASES) and listed."""
    chk = Check("run.metrics", "run", "Metrics logged", "series.*", "none")
    limit = ctx.limit(chk.id)
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    base, cur = _logged(ctx.baseline), _logged(ctx.current)
    missing = sorted(n for n in base - cur if not _machine_series(n))
    renamed = {}
    for side, runs in (("baseline", ctx.baseline), ("current run", ctx.current)):
        for r in runs:
            for canonical, other in r.renamed.items():
                renamed.setdefault((canonical, other), side)
    alias_text = "; ".join(f"the {side} logged {canonical} as {other}" for (canonical, other), side in renamed.items())
    chk.baseline, chk.current = float(len(base)), float(len(cur))
    if renamed:
        chk.details["aliases"] = [{"metric": c, "logged_as": o, "side": s} for (c, o), s in renamed.items()]
    if not missing:
        return cap_severity(chk.set("pass", f"every metric the baseline logged is logged ({len(base)})"
                                    + (f"; {alias_text} (read under one name)" if alias_text else "")), limit)
    chk.details["missing"] = missing
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    chk.set("warn", f"{len(missing)} metric(s) the baseline logged are missing from the current run: {shown}; the "
                    "checks that read them are skipped. A library version may have renamed them (a known rename "
                    "belongs in compare/loading.py ALIASES) or the training no longer logs them"
            + (f" ({alias_text})" if alias_text else ""))
    return cap_severity(chk, limit)


def run_checks(ctx: Context) -> list[Check]:
    return [run_status_check(ctx), baseline_status_check(ctx), config_check(ctx), metrics_check(ctx)]


def environment_checks(ctx: Context) -> list[Check]:
    return [hardware_check(ctx), stack_check(ctx)]


# -- correctness ---------------------------------------------------------------------------------------


def per_step(runs: list[Run], metric: str) -> dict[int, list[float]]:
    """step -> the values of every run at that step (NaN kept)."""
    out: dict[int, list[float]] = {}
    for r in runs:
        for s, v in r.points(metric):
            out.setdefault(s, []).append(v)
    return out


def curve(runs: list[Run], metric: str) -> tuple[list[int], list[float], list[float]]:
    """Per-step median across runs and the repeats' standard deviation (0 with one run)."""
    data = per_step(runs, metric)
    steps, med, sd = [], [], []
    for s in sorted(data):
        vals = data[s]
        fin = [v for v in vals if math.isfinite(v)]
        steps.append(s)
        if len(fin) < len(vals) or not fin:
            med.append(next(v for v in vals if not math.isfinite(v)))
            sd.append(0.0)
        else:
            med.append(statistics.median(fin))
            sd.append(statistics.stdev(fin) if len(fin) > 1 else 0.0)
    return steps, med, sd


def comparable(ctx: Context) -> tuple[bool, str]:
    """Whether differences in the curves can only come from the change under test."""
    why = []
    if ctx.baseline[0].training_hash != ctx.cur0.training_hash:
        paths = [d["path"] for d in training_config_diff(ctx)]
        why.append(f"the configs differ ({', '.join(paths[:4])}{' ...' if len(paths) > 4 else ''})")
    changes = stack_changes(ctx)
    if changes:
        why.append("library versions differ (" + ", ".join(
            f"{c['field'].removeprefix('packages.')} {c['baseline']} -> {c['current']}" for c in changes[:3]) + ")")
    if not ctx.same_hardware:
        why.append("the hardware differs")
    return (not why), "; ".join(why)


def curve_check(ctx: Context, check_id: str, metric: str, title: str) -> Check:
    chk = Check(check_id, "correctness", title, metric, "band", None)
    limit = ctx.limit(check_id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    seeds = {r.config.get("seed") for r in ctx.current + ctx.baseline}
    if len(seeds) > 1:
        return chk.skip(f"the runs use different seeds {sorted(seeds, key=str)}: curves are only comparable "
                        "with the same seed")
    bs, bv, bsd = curve(ctx.baseline, metric)
    cs, cv, csd = curve(ctx.current, metric)
    if not cs:
        return chk.skip(f"{metric} is not logged by the current run")
    if not bs:
        return chk.skip(f"{metric} is not logged by the baseline")
    b_at = {s: (v, sd) for s, v, sd in zip(bs, bv, bsd)}
    common = [(s, v, sd) for s, v, sd in zip(cs, cv, csd) if s in b_at]
    if len(common) < 2:
        return chk.skip("fewer than 2 steps in common with the baseline")
    rtol = limit.relative or 0.0
    atol = limit.absolute or 0.0
    first, outside, max_diff, max_step = None, 0, 0.0, None
    last_vals = None
    for s, c, csd_i in common:
        b, bsd_i = b_at[s]
        band = atol + rtol * abs(b) if math.isfinite(b) else 0.0
        band += SPREAD_K * math.sqrt(bsd_i ** 2 + csd_i ** 2)
        if math.isfinite(b) and math.isfinite(c):
            d = abs(c - b)
            out = d > band
        else:
            d = 0.0 if (math.isnan(b) and math.isnan(c)) or b == c else math.inf
            out = d > 0
        if d > max_diff or max_step is None:
            max_diff, max_step = d, s
        if out:
            outside += 1
            if first is None:
                first = (s, b, c, band)
        last_vals = (s, b, c, band)
    ok, why = comparable(ctx)
    chk.n_baseline, chk.n_current = len(ctx.baseline), len(ctx.current)
    chk.details = {"steps_compared": len(common), "steps_outside": outside, "max_abs_diff": max_diff,
                   "max_abs_diff_step": max_step, "comparable": ok}
    s, b, c, band = first or last_vals
    chk.baseline, chk.current, chk.change, chk.change_kind = b, c, c - b, "absolute"
    chk.threshold, chk.threshold_kind = band, "absolute"
    tol = f"|diff| <= {fmt(atol)} + {rtol:g} x |baseline|" + (" + 3 sd of repeats" if len(ctx.baseline) > 1
                                                             or len(ctx.current) > 1 else "")
    if first is None:
        return cap_severity(chk.set("pass", f"{metric} within the band at all {len(common)} common steps "
                                            f"(largest |diff| {fmt(max_diff)} at step {max_step}; {tol})"), limit)
    chk.step = s
    text = (f"{metric} leaves the band at step {s}: {fmt(c)} vs baseline {fmt(b)} (|diff| {fmt(abs(c - b))} > "
            f"{fmt(band)}); {outside}/{len(common)} steps outside")
    allowed = limit.max or 0.0  # the share of steps that may stray (nondeterministic hardware)
    if outside / len(common) <= allowed:
        return cap_severity(chk.set("pass", text + f", within the allowed {allowed:.0%}"), limit)
    if ok:
        chk.set("fail", text + " with the same seed, config and stack")
    else:
        chk.set("warn", text + f"; expected to differ since {why}")
    return cap_severity(chk, limit)


def deterministic_check(ctx: Context) -> Check:
    chk = Check("correctness.deterministic", "correctness", "Deterministic replay", "series.*", "band", None)
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    runs = ctx.current + ctx.baseline
    if not all(r.setting("train.deterministic") is True for r in runs):
        return chk.skip("needs train.deterministic: true on both sides")
    ok, why = comparable(ctx)
    if not ok:
        return chk.skip(f"exact replay needs the same config, stack and hardware: {why}")
    ref = ctx.baseline[0]
    atol, rtol = limit.absolute or 0.0, limit.relative or 0.0
    first_bad = None  # (step, metric, b, c): the earliest value outside the tolerance
    largest = None  # (|diff|, step, metric, b, c): the largest difference within it
    bitwise = True
    compared = 0
    for run in ctx.current:
        for name in sorted(set(run.series) & set(ref.series)):
            if name == "step" or name in TIMING_NAMES or name.endswith("_time_s") or name.startswith(TIMING_PREFIXES):
                continue
            b_at = dict(ref.points(name))
            for s, c in run.points(name):
                if s not in b_at:
                    continue
                b = b_at[s]
                compared += 1
                if b == c or (math.isnan(b) and math.isnan(c)):
                    continue
                bitwise = False
                finite = math.isfinite(b) and math.isfinite(c)
                if not finite or abs(c - b) > atol + rtol * abs(b):
                    if first_bad is None or s < first_bad[0]:
                        first_bad = (s, name, b, c)
                elif largest is None or abs(c - b) > largest[0]:
                    largest = (abs(c - b), s, name, b, c)
    chk.details = {"values_compared": compared, "bitwise_identical": bitwise}
    chk.threshold, chk.threshold_kind = atol, "absolute"
    if bitwise:
        return cap_severity(chk.set("pass", f"bitwise identical to the baseline ({compared} values)"), limit)
    if first_bad is not None:
        s, name, b, c = first_bad
        chk.baseline, chk.current, chk.change, chk.change_kind, chk.metric = b, c, c - b, "absolute", name
        chk.step = s
        return cap_severity(chk.set("fail", f"deterministic runs differ first at step {s} in {name}: {fmt(c)} vs "
                                            f"{fmt(b)} (tolerance {fmt(atol)} + {rtol:g} x |baseline|)"), limit)
    d, s, name, b, c = largest
    chk.baseline, chk.current, chk.change, chk.change_kind, chk.metric = b, c, c - b, "absolute", name
    return cap_severity(chk.set("pass", f"within {fmt(atol)} + {rtol:g} x |baseline| of the baseline, not bitwise "
                                        f"(largest difference {fmt(d)} in {name} at step {s})"), limit)


def correctness_checks(ctx: Context) -> list[Check]:
    out = [curve_check(ctx, "correctness.loss_curve", "loss", "Loss curve vs baseline")]
    metric = REWARD_CURVE.get(ctx.training_type)
    if metric:
        out.append(curve_check(ctx, "correctness.reward_curve", metric, "Reward curve vs baseline"))
    out.append(deterministic_check(ctx))
    return out
