"""Step time and peak memory decided by A/B pairs (see canary_runner/ab.py and sequential.py).

In A/B mode these replace the stored-baseline step-time and peak-memory checks, whose intervals
resample steps within runs: here the pair is the unit of replication, so the interval carries the
run-to-run noise of this machine at this time.
"""

from __future__ import annotations

import statistics

from .model import Check, Context, cap_severity, pct

# A/B metric -> (replaced check id, title, metric name, unit)
REPLACES = {
    "step_time": ("perf.step_time", "Step time", "step_time_s", "s"),
    "memory": ("memory.peak", "Peak memory", "peak_memory_mb", "MB"),
}
# The stored-baseline checks an A/B decision stands in for.
SUPERSEDED = {"perf.step_time": "step_time", "memory.cpu_rss_anon_peak": "memory",
              "memory.cuda_max_allocated": "memory"}
STATE_STATUS = {"fail": "fail", "pass": "pass", "unknown": "warn"}


def superseded(check_id: str) -> bool:
    """Whether an A/B decision stands in for this check: the ids above and their per-device members
    (`memory.cuda_max_allocated.cuda:0`)."""
    return any(check_id == k or check_id.startswith(k + ".") for k in SUPERSEDED)


def ab_checks(ctx: Context, ab: dict) -> list[Check]:
    out = []
    for metric, (check_id, title, name, unit) in REPLACES.items():
        chk = Check(check_id, "performance" if metric == "step_time" else "memory", title, name,
                    "lower_is_better", unit)
        limit = ctx.settings.limit(f"ab.{metric}")
        if not limit.enabled:
            out.append(chk.skip(f"disabled (ab.{metric}: enabled: false)"))
            continue
        d = ab.get("decisions", {}).get(metric)
        per_run = ab.get("per_run", {})
        base = [r.get(metric) for r in per_run.get("base", []) if r.get(metric) is not None]
        head = [r.get(metric) for r in per_run.get("head", []) if r.get(metric) is not None]
        if not d or d.get("change") is None:
            out.append(chk.skip(f"A/B: no completed pair measured the {title.lower()}"))
            continue
        chk.baseline = statistics.median(base) if base else None
        chk.current = statistics.median(head) if head else None
        chk.change, chk.change_kind = d["change"], "relative"
        chk.ci, chk.confidence = (tuple(d["ci"]) if d.get("ci") else None), d.get("level")
        chk.threshold, chk.threshold_kind = d["threshold"], "relative"
        chk.n_baseline = chk.n_current = d["pairs"]
        chk.details = {"pair_ratios": d["ratios"], "decision": d["state"]}
        ci = f" (CI {pct(d['ci'][0])}..{pct(d['ci'][1])})" if d.get("ci") else ""
        said = {"fail": "clearly worse than", "pass": "within", "unknown": "not decided against"}[d["state"]]
        chk.set(STATE_STATUS[d["state"]],
                f"A/B on this runner, {d['pairs']} pair(s): {title.lower()} {pct(d['change'])}{ci}, "
                f"{said} the +{d['threshold']:.0%} limit")
        out.append(cap_severity(chk, limit))
    return out
