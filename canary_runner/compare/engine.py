"""The comparison: runs in, comparison.json (schema `schemas/comparison.schema.json`) out.

Verdict: `fail` when any check fails; otherwise `no-baseline` when there is no baseline, `warn` when
a check warns, else `pass`. On different hardware, performance, memory and distributed failures become warnings.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timezone

from .. import schemas
from . import checks_ab, checks_equivalence, checks_health, checks_heldout, checks_perf, checks_run, diagnosis
from . import checks_invariants
from .loading import Run, check_compatible, worst_status
from .model import Check, Context
from .settings import Settings

SCHEMA_VERSION = 1
CURVES = {
    "sft": ["loss", "mean_token_accuracy"],
    "dpo": ["loss", "rewards/margins", "rewards/accuracies"],
    "ppo": ["loss", "objective/kl", "objective/scores", "objective/rlhf_reward", "policy/entropy_avg"],
    "grpo": ["loss", "reward", "reward_std", "kl", "completions/mean_length"],
    "rloo": ["loss", "reward", "reward_std", "kl", "completions/mean_length"],
    "reward": ["loss", "accuracy", "margin"],
}
COMMON_CURVES = ["grad_norm", "step_time_s"]


def compare(current: list[Run], baseline: list[Run], settings: Settings, ab: dict | None = None) -> dict:
    """The comparison document (plain data, non-finite floats as floats; encode before writing).
    `ab`: the pairs of an A/B run (canary_runner/ab.py); their decisions replace the stored-baseline
    step-time and peak-memory checks."""
    if baseline:
        check_compatible(current, baseline)
    ctx = Context(current=current, baseline=baseline, settings=settings, training_type=current[0].training_type)
    if baseline:
        ctx.same_hardware = current[0].env.get("hardware_key") == baseline[0].env.get("hardware_key")
        ctx.env_changes = checks_run.env_changes(baseline[0], current[0])
        ctx.config_diff = checks_run.diff(baseline[0].config, current[0].config)

    checks: list[Check] = []
    checks += checks_run.run_checks(ctx)
    checks += checks_run.environment_checks(ctx)
    checks += checks_perf.performance_checks(ctx)
    checks += checks_perf.memory_checks(ctx)
    checks += checks_perf.distributed_checks(ctx)
    checks += checks_health.stability_checks(ctx)
    checks += checks_health.rl_checks(ctx)
    checks += checks_invariants.invariant_checks(ctx)
    checks += checks_run.correctness_checks(ctx)
    checks += checks_heldout.heldout_checks(ctx)
    checks += checks_equivalence.equivalence_checks(ctx)
    if ab is not None and baseline:
        checks = [c for c in checks if not checks_ab.superseded(c.id)] + checks_ab.ab_checks(ctx, ab)
    if baseline and not ctx.same_hardware:
        for c in checks:
            if c.category in ("performance", "memory", "distributed") and c.status == "fail":
                c.status = "warn"
                c.reason += (f" (warning only: measured on different hardware, {baseline[0].env.get('hardware_key')}"
                             f" vs {current[0].env.get('hardware_key')})")

    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "warn", "fail", "skip")}
    if counts["fail"]:
        verdict = "fail"
    elif not baseline:
        verdict = "no-baseline"
    else:
        verdict = "warn" if counts["warn"] else "pass"
    doc = {
        "schema_version": SCHEMA_VERSION,
        "verdict": verdict,
        "tier": settings.tier,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "current": side(current),
        "baseline": side(baseline) if baseline else None,
        "counts": counts,
        "checks": [c.to_json() for c in checks],
        "diagnosis": diagnosis.diagnose(ctx, checks),
        "environment": {"same_hardware": ctx.same_hardware, "changes": ctx.env_changes},
        "curves": curves(ctx),
        "config_diff": ctx.config_diff,
        "metrics": metrics(ctx),
        "thresholds_source": list(settings.sources),
        "settings": {"confidence": settings.confidence, "resamples": settings.resamples,
                     "window": settings.window},
    }
    if ab is not None:
        doc["ab"] = ab
    return doc


def side(runs: list[Run]) -> dict:
    r0 = runs[0]
    failed = next((r for r in runs if r.status != "completed"), None)
    return {
        "run_ids": [r.id for r in runs],
        "config_name": r0.info["config_name"],
        "training_type": r0.training_type,
        "status": worst_status(runs),
        "error": failed.error if failed else None,
        "git_sha": r0.info.get("git_sha"),
        "hardware_key": r0.env.get("hardware_key", "unknown"),
        "runs": len(runs),
        "steps_completed": min(r.info["steps_completed"] for r in runs),
        "config_hash": r0.record.get("config_hash", ""),
        "paths": [str(r.path) for r in runs],
    }


def _curve(runs: list[Run], metric: str) -> dict | None:
    steps, med, _ = checks_run.curve(runs, metric)
    return {"step": steps, "value": med} if steps else None


def curves(ctx: Context) -> dict:
    out = {}
    names = CURVES.get(ctx.training_type, ["loss"]) + COMMON_CURVES
    reward = checks_run.REWARD_CURVE.get(ctx.training_type)
    if reward and reward not in names:
        names.insert(1, reward)
    for name in names:
        cur = _curve(ctx.current, name)
        if cur is None:
            continue
        out[name] = {"baseline": _curve(ctx.baseline, name) if ctx.baseline else None, "current": cur}
    return out


def _last(runs: list[Run], name: str):
    vals = [r.summary.get("last", {}).get(name) for r in runs]
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    finite = [v for v in vals if v == v and abs(v) != float("inf")]
    return statistics.median(finite) if len(finite) == len(vals) else vals[0]


def metrics(ctx: Context) -> dict:
    names = set()
    for r in ctx.current + ctx.baseline:
        names |= set(r.summary.get("last", {}))
    return {n: {"baseline": _last(ctx.baseline, n) if ctx.baseline else None, "current": _last(ctx.current, n)}
            for n in sorted(names)}


def schema() -> dict:
    return schemas.load("comparison")


def validate(document: dict) -> list[str]:
    """Schema violations of an encoded comparison document (empty when valid)."""
    return schemas.all_errors("comparison", document)
