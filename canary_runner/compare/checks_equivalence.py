"""Equivalence classes (run by `canary run` after the canary, see canary_runner/equivalence.py): one
check per class, judged from the current run's record alone, so it speaks with or without a baseline."""

from __future__ import annotations

from .model import Check, Context, cap_severity

# A class result's status -> the check's. A variant that crashed leaves the class unjudged, and the
# config asked for it: that fails like a crashed canary would.
STATUS = {"pass": "pass", "fail": "fail", "error": "fail", "skip": "skip"}


def classes(ctx: Context) -> list[dict]:
    return next((r.record["equivalence"] for r in ctx.current if r.record.get("equivalence")), [])


def _curves(res: dict, metric: str) -> dict | None:
    """Both curves of the first variant pair that parted, for the report's chart."""
    variants = [v for v in res.get("variants") or [] if (v.get("series") or {}).get(metric)]
    diffs = res.get("differences") or []
    j = next((i + 1 for i, d in enumerate(diffs) if not (d.get(metric) or {}).get("agree", True)), None)
    if j is None or j >= len(variants):
        return None
    pick = [variants[0], variants[j]]
    return {"metric": metric, "variants": [{"label": v["label"], "step": v["series"]["step"],
                                            "value": v["series"][metric]} for v in pick]}


def equivalence_checks(ctx: Context) -> list[Check]:
    out = []
    for res in classes(ctx):
        name = res["name"]
        metric = res.get("metric") or (res.get("metrics") or ["loss"])[0]
        chk = Check(f"equivalence.{name}", "equivalence", f"Equivalence: {name.replace('_', ' ')}", metric, "band")
        limit = ctx.limit(chk.id)
        if not limit.enabled:
            out.append(chk.skip(f"disabled by thresholds ({chk.id}: enabled: false)"))
            continue
        labels = [v.get("label", "") for v in res.get("variants") or []]
        status = STATUS.get(res.get("status"), "fail")
        reason = res.get("summary", "")
        if res.get("status") == "error":
            reason = f"could not be judged: {reason}"
        chk.set(status, reason)
        chk.step = res.get("first_step")
        worst = [x for d in res.get("differences") or [] for x in [d.get(metric) or {}] if x.get("compared")]
        if worst:
            chk.current = max(x["max_abs"] for x in worst)
            chk.threshold, chk.threshold_kind = res.get("rtol"), "relative"
        chk.details = {"variants": labels, "steps": res.get("steps"), "rtol": res.get("rtol"),
                       "atol": res.get("atol"), "seconds": res.get("seconds")}
        if status == "fail" and res.get("status") == "fail":
            curves = _curves(res, metric)
            if curves:
                chk.details["curves"] = curves
        out.append(cap_severity(chk, limit) if status != "skip" else chk)
    return out
