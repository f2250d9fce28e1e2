"""correctness.heldout: did the canary learn the right thing, on a set it never trained on?

Reads `record["heldout"]` (canary_runner/heldout.py writes it; docs/heldout.md). With or without a
baseline:

- dpo / reward (held-out preference accuracy over n pairs): fail when the end accuracy is clearly
  below chance (the upper bound of its exact Clopper-Pearson interval at the settings' confidence is
  below `min`, 0.5), or when the mean implicit-reward margin is clearly negative (its normal interval,
  from the pairs' standard error, lies below 0: the model prefers the rejected answers); warn when the
  accuracy fell from step 0 to the end by more than `absolute`.
- sft (held-out loss on the completions): fail when it rose from step 0 to the end by more than
  `relative` while the training loss fell (it learned something other than the held-out task); warn
  when it rose with a training loss that did not fall either (the stability checks say why).
- with a baseline whose held-out result used the same set: warn when the end accuracy is more than
  `absolute` below the baseline's (or the end loss more than `relative` above it). Warn only: both
  are estimates over the same n pairs, and one set of 64 pairs is too few to fail on a small gap.
"""

from __future__ import annotations

import math
import statistics

from .loading import Run
from .model import Check, Context, cap_severity, fmt
from .stats import window_size


def heldout_of(run: Run) -> dict | None:
    h = run.record.get("heldout")
    return h if isinstance(h, dict) else None


def _ends(h: dict) -> tuple[dict, dict] | None:
    pts = [p for p in h.get("points") or [] if isinstance(p.get("value"), (int, float))]
    return (pts[0], pts[-1]) if len(pts) >= 2 else None


def clopper_pearson(successes: float, n: int, confidence: float) -> tuple[float, float]:
    """Exact binomial interval (ties counted half make `successes` fractional: the beta quantiles
    take real parameters)."""
    from scipy.stats import beta

    a = (1 - confidence) / 2
    lo = 0.0 if successes <= 0 else float(beta.ppf(a, successes, n - successes + 1))
    hi = 1.0 if successes >= n else float(beta.ppf(1 - a, successes + 1, n - successes))
    return lo, hi


def _skip_reason(ctx: Context) -> str:
    t = ctx.training_type
    if t in ("ppo", "grpo", "rloo"):
        return f"not applicable to {t}: there is no fixed right answer to score on a held-out set"
    if ctx.cur0.setting("heldout.enabled") is False:
        return "disabled (heldout.enabled: false)"
    if ctx.cur0.setting("heldout") is None:
        return "the run has no held-out result (a record from a canary without the held-out evaluation)"
    return "the run has no held-out result"


def heldout_check(ctx: Context) -> Check:
    t = ctx.training_type
    pref = t in ("dpo", "reward")
    chk = Check("correctness.heldout", "correctness", "Held-out " + ("preference accuracy" if pref else "loss"),
                "heldout", "higher_is_better" if pref else "lower_is_better", "ratio" if pref else None)
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    h = heldout_of(ctx.cur0)
    if h is None:
        return chk.skip(_skip_reason(ctx))
    for key in ("skipped", "error"):
        if h.get(key):
            return chk.skip(f"held-out evaluation {'skipped' if key == 'skipped' else 'failed'}: {h[key]}")
    ends = _ends(h)
    if ends is None:
        return chk.skip("fewer than 2 held-out evaluations (the run stopped before it ended?)")
    if ctx.stopped:
        return chk.skip(f"{ctx.stopped}: the held-out result at the end is not the trained model's")
    start, end = ends
    # No chk.step: the diagnosis reads a correctness check with a step as a curve leaving the baseline's band.
    chk.n_current = h.get("rows")
    chk.details = {"dataset": h.get("dataset"), "rows": h.get("rows"), "metric": h.get("metric"),
                   "points": h.get("points")}
    base = _baseline_heldout(ctx, h)
    if pref:
        status, reasons = _preference(chk, ctx, limit, h, start, end)
    else:
        status, reasons = _loss(chk, ctx, limit, start, end)
    if base is not None:
        status, reasons = _versus_baseline(chk, limit, pref, end, base, status, reasons)
    return cap_severity(chk.set(status, "; ".join(reasons)), limit)


def _preference(chk: Check, ctx: Context, limit, h: dict, start: dict, end: dict):
    n = int(h.get("rows") or 0)
    acc, acc0 = float(end["value"]), float(start["value"])
    lo, hi = clopper_pearson(acc * n, n, ctx.confidence)
    chk.current, chk.baseline, chk.change, chk.change_kind = acc, acc0, acc - acc0, "absolute"
    chk.ci, chk.confidence = (lo, hi), ctx.confidence
    chance = limit.min if limit.min is not None else 0.5
    chk.threshold, chk.threshold_kind = chance, "absolute"
    text = (f"held-out accuracy {fmt(acc0)} at step {start['step']} -> {fmt(acc)} at step {end['step']} over "
            f"{n} pairs of {h.get('dataset')} ({ctx.confidence:.0%} interval {fmt(lo)}..{fmt(hi)})")
    margin, se = end.get("margin"), end.get("margin_se")
    z = statistics.NormalDist().inv_cdf(0.5 + ctx.confidence / 2)
    margin_hi = margin + z * se if isinstance(margin, (int, float)) and isinstance(se, (int, float)) else None
    if margin is not None:
        text += f", mean margin {fmt(margin)}" + (f" (+- {fmt(z * se)})" if margin_hi is not None else "")
    if limit.min is not None and hi < chance:
        return "fail", [text + f": below chance ({fmt(chance)}) with the whole interval; the model learned to prefer "
                               "the rejected answers (chosen and rejected swapped in the training data?)"]
    if margin_hi is not None and margin_hi < 0:
        return "fail", [text + ": the margin's whole interval is below 0, so the model prefers the rejected "
                               "answers (chosen and rejected swapped in the training data?)"]
    if limit.absolute is not None and acc0 - acc > limit.absolute:
        return "warn", [text + f": fell by {fmt(acc0 - acc)}, more than {fmt(limit.absolute)}"]
    return "pass", [text]


def _train_loss_fell(run: Run, window: float) -> tuple[bool | None, str]:
    vals = [v for _, v in run.finite_points("loss")]
    if len(vals) < 2:
        return None, "the training loss is not logged"
    k = window_size(len(vals), window, minimum=1)
    first, last = statistics.median(vals[:k]), statistics.median(vals[-k:])
    return last < first, f"training loss {fmt(first)} -> {fmt(last)} (first/last {k} steps)"


def _loss(chk: Check, ctx: Context, limit, start: dict, end: dict):
    l0, l1 = float(start["value"]), float(end["value"])
    rise = (l1 - l0) / abs(l0) if l0 else math.inf
    chk.current, chk.baseline, chk.change, chk.change_kind = l1, l0, rise, "relative"
    tol = limit.relative if limit.relative is not None else 0.0
    chk.threshold, chk.threshold_kind = tol, "relative"
    text = f"held-out loss {fmt(l0)} at step {start['step']} -> {fmt(l1)} at step {end['step']} ({rise:+.1%})"
    if not math.isfinite(l1):
        return "fail", [text + ": not finite"]
    if rise <= tol:
        return "pass", [text]
    fell, train = _train_loss_fell(ctx.cur0, ctx.settings.window)
    if fell:
        return "fail", [text + f", more than +{tol:.0%}, while the {train} fell: training fits something the "
                               "held-out completions do not share"]
    return "warn", [text + f", more than +{tol:.0%}; {train} did not fall either (see the stability checks)"]


def _baseline_heldout(ctx: Context, cur: dict) -> dict | None:
    if not ctx.has_baseline:
        return None
    b = heldout_of(ctx.baseline[0])
    if b is None or b.get("skipped") or b.get("error") or _ends(b) is None:
        return None
    if (b.get("dataset"), b.get("rows"), b.get("metric")) != (cur.get("dataset"), cur.get("rows"), cur.get("metric")):
        return None  # another held-out set: its figures are not these
    if ctx.baseline[0].info.get("steps_completed") != ctx.cur0.info.get("steps_completed"):
        return None
    return b


def _versus_baseline(chk: Check, limit, pref: bool, end: dict, base: dict, status: str, reasons: list[str]):
    b_end = _ends(base)[1]
    bv, cv = float(b_end["value"]), float(end["value"])
    chk.details["baseline_end"] = bv
    if pref:
        worse = limit.absolute is not None and bv - cv > limit.absolute
        text = f"the baseline's ended at {fmt(bv)}" + (f", {fmt(bv - cv)} higher (tolerance {fmt(limit.absolute)})"
                                                        if worse else "")
    else:
        tol = limit.relative if limit.relative is not None else 0.0
        worse = bv > 0 and (cv - bv) / bv > tol
        text = f"the baseline's ended at {fmt(bv)}" + (f", {(cv - bv) / bv:+.1%} vs it (tolerance +{tol:.0%})"
                                                        if worse else "")
    if worse and status == "pass":
        status = "warn"
    return status, reasons + [text]


def heldout_checks(ctx: Context) -> list[Check]:
    return [heldout_check(ctx)]
