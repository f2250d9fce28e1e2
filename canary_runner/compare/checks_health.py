"""Stability, RL health and the invariants that need no baseline.

Stability reads the current run alone: non-finite values anywhere, a loss that trends up or gives
back its progress (Theil-Sen trend with its interval: works on a 10-step run), grad-norm explosion.
RL health compares each training type's signals over a late window (the last `window` of the steps)
with absolute limits and, when a baseline is given, with the baseline's late window (bootstrap
interval of the change of the mean).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import zlib

import numpy as np

from .checks_run import training_config_diff
from .loading import Run
from .model import (STATUS_RANK, Check, Context, cap_severity, conclude, fmt, judge_change, judge_level, pct,
                    signed)
from .settings import Limit
from .stats import bootstrap_change, trend, window_size

LOSS_TRENDED_TYPES = ("sft", "dpo", "reward", "custom")  # GRPO/RLOO losses are ~0 by design; PPO's is checked by parts; custom: a plain Trainer under canary exec


def _seed(check_id: str) -> int:
    return zlib.crc32(check_id.encode())


# -- stability ----------------------------------------------------------------------------------------


def nonfinite_report(run: Run) -> dict:
    """Where non-finite values are: per metric counts, first step, and which metrics at that step."""
    by_metric: dict[str, int] = {}
    first_step, first_metrics = None, []
    first_by_metric: dict[str, int] = {}
    for name, values in run.series.items():
        if name in ("step", "warmup"):
            continue
        for step, v in zip(run.steps, values):
            if isinstance(v, float) and not math.isfinite(v):
                by_metric[name] = by_metric.get(name, 0) + 1
                first_by_metric.setdefault(name, step)
    if by_metric:
        first_step = min(first_by_metric.values())
        first_metrics = sorted(m for m, s in first_by_metric.items() if s == first_step)
    return {"total": sum(by_metric.values()), "by_metric": by_metric, "first_step": first_step,
            "first_metrics": first_metrics, "first_by_metric": first_by_metric}


def nan_inf_check(ctx: Context) -> Check:
    chk = Check("stability.nan_inf", "stability", "NaN / Inf", "series.*", "none")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    worst = None
    for run in ctx.current:
        rep = nonfinite_report(run)
        if rep["total"] and (worst is None or rep["first_step"] < worst[1]["first_step"]):
            worst = (run, rep)
    chk.current = float(sum(nonfinite_report(r)["total"] for r in ctx.current))
    chk.threshold, chk.threshold_kind = 0.0, "absolute"
    if ctx.has_baseline:
        chk.baseline = float(sum(nonfinite_report(r)["total"] for r in ctx.baseline))
    if worst is None:
        return chk.set("pass", "every logged value is finite")
    run, rep = worst
    chk.step = rep["first_step"]
    chk.details = {"run": run.id, **rep}
    counts = ", ".join(f"{m} x{n}" for m, n in sorted(rep["by_metric"].items(), key=lambda kv: -kv[1])[:6])
    pre = " (the baseline had non-finite values too)" if chk.baseline else ""
    chk.set("fail", f"non-finite values from step {rep['first_step']} in {', '.join(rep['first_metrics'])}; "
                    f"{rep['total']} in all ({counts}){pre}")
    return cap_severity(chk, limit)


def _rolling_median(values: list[float], w: int) -> list[float]:
    return [statistics.median(values[max(0, i - w + 1): i + 1]) for i in range(len(values))]


def loss_divergence_check(ctx: Context) -> Check:
    chk = Check("stability.loss_divergence", "stability", "Loss divergence", "loss", "lower_is_better", "ratio")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if ctx.training_type not in LOSS_TRENDED_TYPES:
        why = "its loss is ~0 by design" if ctx.training_type in ("grpo", "rloo") else \
            "its loss mixes policy and value terms; see the rl.ppo checks"
        return chk.skip(f"not applied to {ctx.training_type}: {why}")
    worst = None
    for run in ctx.current:
        pts = run.finite_points("loss")
        if len(pts) < 5:
            continue
        res = _divergence(pts, ctx.settings.window, ctx.confidence)
        if worst is None or res["score"] > worst["score"]:
            worst = res | {"run": run.id}
    if worst is None:
        return chk.skip("fewer than 5 finite loss values")
    chk.details = {k: v for k, v in worst.items() if k != "score"}
    statuses = []
    if limit.relative is not None:
        rise, lo = worst["rise_rel"], worst["rise_rel_ci"][0]
        text = (f"loss trend over the run {pct(rise)} of its start ({fmt(worst['start'])} -> "
                f"{fmt(worst['end'])} fitted), CI {pct(lo)}..{pct(worst['rise_rel_ci'][1])}, limit +{limit.relative:.0%}")
        s = "fail" if lo > limit.relative else ("warn" if rise > limit.relative else "pass")
        statuses.append((s, text, "relative", limit.relative, rise, worst["rise_rel_ci"]))
    if limit.max is not None:
        lost = worst["lost"]
        text = (f"the late loss {fmt(worst['late'])} gave back {pct(lost, False)} of the improvement to its best "
                f"{fmt(worst['best'])} (step {worst['best_step']}), limit {limit.max:.0%}")
        s = "fail" if lost > limit.max else "pass"
        statuses.append((s, text, "absolute", limit.max, lost, None))
    if not statuses:
        return chk.skip("no limit set (relative: trend, max: rebound)")
    worst_s = max(statuses, key=lambda t: ["pass", "warn", "fail"].index(t[0]))
    status, _, kind, thr, value, ci = worst_s
    chk.current, chk.threshold, chk.threshold_kind, chk.ci = value, thr, kind, ci
    chk.confidence = ctx.confidence if ci is not None else None
    if status != "pass" and worst_s[1].startswith("the late loss"):
        chk.step = worst["best_step"]
    reason = "; ".join(t[1] for t in ([worst_s] + [t for t in statuses if t is not worst_s]))
    chk.set(status, reason)
    return cap_severity(chk, limit)


def _divergence(pts: list[tuple[int, float]], window: float, confidence: float) -> dict:
    steps = [p[0] for p in pts]
    vals = [p[1] for p in pts]
    tr = trend(steps, vals, confidence)
    scale = abs(tr.start) if tr and abs(tr.start) > 1e-12 else max(abs(statistics.median(vals)), 1e-12)
    rise_rel = tr.rise / scale if tr else 0.0
    rise_ci = (tr.rise_ci[0] / scale, tr.rise_ci[1] / scale) if tr else (0.0, 0.0)
    n = len(vals)
    k = window_size(n, window)
    smooth = _rolling_median(vals, 3)
    head = smooth[: max(1, n - k)]
    best_i = int(np.argmin(head))
    best = head[best_i]
    late = statistics.median(vals[-k:])
    start = statistics.median(vals[: min(3, n)])
    progress = max(start - best, 0.05 * abs(start), 1e-12)
    lost = max(0.0, late - best) / progress
    return {"start": tr.start if tr else start, "end": tr.end if tr else late, "rise_rel": rise_rel,
            "rise_rel_ci": rise_ci, "best": best, "best_step": steps[best_i], "late": late, "lost": lost,
            "score": max(rise_rel, lost)}


# Gradient norms: instability is judged against the run's own level, never against the baseline's
# scale. A LoRA rank, a loss type (DPO ipo) or a reward scale moves the whole grad-norm series up or
# down with the same shape: healthy, and only reported. What is unstable is the shape: growth over the
# run, spikes far above the steps just before them, a jitter from step to step larger than the
# baseline's (on the log scale, so it is scale-free), and more steps clipped than the baseline's shape
# would be clipped at the current scale.
SPIKE_LOOKBACK = 5  # a spike is measured against the median of up to this many steps before it
SPIKES_REPEATED = 2  # this many spikes in one run is an instability, not a lone event that recovered


def _grad_points(run: Run, last: float = math.inf) -> list[tuple[int, float]]:
    return [(s, v) for s, v in run.finite_points("grad_norm", after_warmup=True) if s <= last]


def _spikes(pts: list[tuple[int, float]], multiple: float) -> list[tuple[int, float]]:
    """(step, ratio) of each grad norm above `multiple` x the median of the steps just before it."""
    out = []
    for i in range(3, len(pts)):
        level = statistics.median(v for _, v in pts[max(0, i - SPIKE_LOOKBACK): i])
        if level > 0 and pts[i][1] > multiple * level:
            out.append((pts[i][0], pts[i][1] / level))
    return out


def _log_steps(pts: list[tuple[int, float]], multiple: float) -> list[float]:
    """|log(g[i+1] / g[i])| between consecutive positive grad norms: the step-to-step jitter, scale-free.
    The steps into and out of a spike are left out: spikes are counted on their own, and one spike that
    recovers must not read as a run-long jitter."""
    spiked = {s for s, _ in _spikes(pts, multiple)}
    pos = [(s, v) for s, v in pts if v > 0]
    return [abs(math.log(b / a)) for (sa, a), (sb, b) in zip(pos, pos[1:]) if sa not in spiked and sb not in spiked]


def _grad_growth(pts: list[tuple[int, float]], frac: float) -> tuple[float, float, float, int] | None:
    vals = [v for _, v in pts]
    k = window_size(len(vals), frac)
    early, late = statistics.median(vals[:k]), statistics.median(vals[-k:])
    return (late / early, early, late, pts[-k][0]) if early > 0 else None


def _judged(chk: Check, ch, limit: Limit, what: str, prefer: str = "relative") -> Check:
    """judge_change on a copy of `chk`, so that several criteria can be judged and the worst reported."""
    sub = dataclasses.replace(chk, details={})
    judge_change(sub, ch, limit, what, prefer)
    return sub


def _grad_vs_baseline(ctx: Context, chk: Check, limit: Limit) -> tuple[list[Check], list[str]]:
    """The shape criteria that need the baseline: jitter and excess clipping; and the scale, as information."""
    last = ctx.last_common_step
    base = [p for p in (_grad_points(r, last) for r in ctx.baseline) if len(p) >= 3]
    cur = [p for p in (_grad_points(r, last) for r in ctx.current) if len(p) >= 3]
    if not base or not cur:
        return [], []
    judged, info = [], []
    b_med = statistics.median(v for p in base for _, v in p)
    c_med = statistics.median(v for p in cur for _, v in p)
    if b_med > 0 and c_med > 0:
        info.append(f"median grad norm {fmt(b_med)} -> {fmt(c_med)} ({c_med / b_med:.2g}x the baseline's): a change "
                    "of scale alone (LoRA rank, loss type, reward scale) is not judged, only the shape")
    if limit.relative is not None:
        multiple = limit.max if limit.max is not None else 10.0
        ch = bootstrap_change([_log_steps(p, multiple) for p in base], [_log_steps(p, multiple) for p in cur], "mean",
                              ctx.confidence, ctx.settings.resamples, _seed(chk.id))
        # a baseline whose grad norm never moved has no jitter to compare with
        if ch is not None and ch.n_baseline >= 3 and ch.n_current >= 3 and ch.baseline > 1e-9:
            judged.append(_judged(chk, ch, Limit(relative=limit.relative),
                                  "step-to-step jitter of the grad norm (mean |log ratio| of consecutive steps)"))
    clip = ctx.cur0.setting("train.max_grad_norm")
    b_low, c_low = (float(np.percentile([v for p in side for _, v in p], 25)) for side in (base, cur))
    if limit.absolute is not None and isinstance(clip, (int, float)) and clip > 0 and b_low > 0 and c_low > 0:
        # The share of the baseline's steps that would be clipped at the current scale: clipping that a
        # change of scale explains (every step of a DPO ipo run is clipped) is not instability. The scale
        # is read from the lower quartile, the body of the series, which an upper tail of bad steps leaves
        # where it was (the median would follow a tail that covers half the steps).
        at = clip * b_low / c_low
        ch = bootstrap_change([[float(v > at) for _, v in p] for p in base], [[float(v > clip) for _, v in p] for p in cur],
                              "mean", ctx.confidence, ctx.settings.resamples, _seed(chk.id) + 1)
        sub = dataclasses.replace(chk, unit="ratio")
        judged.append(_judged(sub, ch, Limit(absolute=limit.absolute),
                              f"share of steps clipped (grad norm above train.max_grad_norm {fmt(clip)}, the baseline's "
                              "at the current scale)", prefer="absolute"))
    return judged, info


def grad_norm_check(ctx: Context) -> Check:
    """Gradient instability, judged by the shape of the grad-norm series relative to the run's own level:
    sustained growth (late / early), repeated spikes above the steps just before them, and with a
    baseline, the step-to-step jitter and the clipped share against the baseline's shape. A lone spike
    that recovers is reported; a change of scale is reported, never failed; NaN is its own check."""
    chk = Check("stability.grad_norm", "stability", "Gradient norm", "grad_norm", "lower_is_better", "ratio")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if sum(len(r.steady("grad_norm")) for r in ctx.current) < 3:
        return chk.skip("grad_norm not logged after warmup")
    frac = ctx.settings.window
    multiple = limit.max if limit.max is not None else 10.0
    reasons, status = [], "pass"
    growth, spikes, vanished = None, [], False
    for run in ctx.current:
        pts = _grad_points(run)
        if len(pts) < 3:
            continue
        if statistics.median(v for _, v in pts) <= 0:
            vanished = True
            continue
        g = _grad_growth(pts, frac)
        if g is not None and (growth is None or g[0] > growth[0]):
            growth = g
        found = _spikes(pts, multiple)
        if len(found) > len(spikes):
            spikes = found
    if vanished:
        status = "warn"
        reasons.append("grad norm is 0 at the median step after warmup: gradients vanished (saturated or "
                       "frozen parameters)")
    if limit.max is not None and growth is not None:
        chk.current, chk.threshold, chk.threshold_kind = growth[0], limit.max, "absolute"
        text = (f"late median grad norm {fmt(growth[2])} is {growth[0]:.2g}x the early median {fmt(growth[1])} "
                f"(limit {limit.max:g}x)")
        if growth[0] > limit.max:
            status, chk.step = "fail", growth[3]
            reasons.insert(0, text + ": the gradients exploded")
        else:
            reasons.append(text)
    if spikes:
        base_spikes = max((len(_spikes(_grad_points(r, ctx.last_common_step), multiple)) for r in ctx.baseline),
                          default=0)
        top = max(spikes, key=lambda s: s[1])
        where = ", ".join(f"{s}" for s, _ in spikes[:5]) + (" ..." if len(spikes) > 5 else "")
        if len(spikes) >= SPIKES_REPEATED and len(spikes) > base_spikes:
            text = (f"{len(spikes)} spikes above {multiple:g}x the median of the {SPIKE_LOOKBACK} steps before them "
                    f"(steps {where}; the largest {top[1]:.0f}x at step {top[0]})"
                    + (f", the baseline had {base_spikes}" if ctx.has_baseline else "") + ": the gradients are unstable")
            if status != "fail":
                chk.current, chk.threshold, chk.threshold_kind, chk.step = float(len(spikes)), multiple, "absolute", top[0]
            status = "fail"
            reasons.insert(0, text)
        else:
            reasons.append(f"a spike at step {top[0]} reached {top[1]:.0f}x the median of the steps before it and the "
                           "run recovered" + (f" (the baseline had {base_spikes})" if base_spikes else ""))
    if ctx.has_baseline:
        judged, info = _grad_vs_baseline(ctx, chk, limit)
        for sub in sorted(judged, key=lambda c: -STATUS_RANK[c.status]):
            if STATUS_RANK[sub.status] > STATUS_RANK[status]:
                status = sub.status
                for f in ("baseline", "current", "change", "change_kind", "ci", "n_baseline", "n_current",
                          "threshold", "threshold_kind", "unit"):
                    setattr(chk, f, getattr(sub, f))
                chk.confidence = ctx.confidence
                reasons.insert(0, sub.reason + (": the gradients are unstable" if sub.status == "fail" else ""))
            else:
                reasons.append(sub.reason)
        reasons += info
    return conclude(chk, limit, status, reasons, None, "no limit set")


# -- collapse ------------------------------------------------------------------------------------------
# A run can break without a single NaN: one huge update sends the model to a degenerate point (uniform
# or constant output, dead gradients) where every value is finite and the loss even looks stable. The
# signs are read from the current run alone, so no config difference and no baseline can excuse them.

ACCURACY = {"sft": "mean_token_accuracy", "dpo": "rewards/accuracies", "reward": "accuracy"}
FLAT_RTOL = 1e-6  # spread (relative) under which a loss is the same at every step, though batches differ
DEAD_GRAD = 1e-8  # grad norm, relative to the first step's, under which the gradients are gone


def _flat_tail(pts: list[tuple[int, float]]) -> int:
    """How many of the last points hold the same value (within FLAT_RTOL)."""
    level = pts[-1][1]
    n = 0
    for _, v in reversed(pts):
        if abs(v - level) > FLAT_RTOL * max(abs(level), 1e-12):
            break
        n += 1
    return n


def collapse_signs(run: Run, training_type: str, window: float, spike_max: float | None) -> list[tuple[int, str]]:
    """(step, evidence) for each sign of a collapse in one run: a loss spike of orders of magnitude, a
    loss pinned at one value (the output no longer depends on the input; uniform when it equals the
    output entropy), gradients at zero, accuracy at zero after it was above."""
    signs = []
    loss = run.finite_points("loss")
    k = window_size(len(loss), window)
    if training_type in LOSS_TRENDED_TYPES and len(loss) >= 2 and spike_max is not None:
        first = loss[0][1]
        step, peak = max(loss[1:], key=lambda p: abs(p[1]))
        if abs(first) > 1e-12 and abs(peak) > spike_max * abs(first):
            signs.append((step, f"the loss spiked to {fmt(peak)} at step {step}, {abs(peak / first):.2g}x its "
                                f"first value {fmt(first)}"))
    if training_type in LOSS_TRENDED_TYPES and len(loss) >= 5:
        n = _flat_tail(loss)
        level = loss[-1][1]
        # flat from the first step is a run that never trained (the learning check's case), not a collapse
        if k <= n < len(loss) and abs(level) > 1e-6:
            step = loss[-n][0]
            text = (f"the loss is {fmt(level)} at every step from step {step} on ({n} steps): the output no "
                    "longer depends on the input")
            entropy = dict(run.finite_points("entropy"))
            if all(abs(entropy.get(s, math.inf) - level) <= 1e-3 * abs(level) for s, _ in loss[-n:]):
                text += (f"; the output entropy equals the loss: a uniform distribution over ~{math.exp(level):.0f} "
                         "tokens")
            signs.append((step, text))
    grads = run.finite_points("grad_norm")
    if len(grads) >= 5 and grads[0][1] > 0:
        late = grads[-window_size(len(grads), window):]
        fit = training_type in LOSS_TRENDED_TYPES and loss and abs(loss[-1][1]) <= 1e-6  # a perfect fit has no gradient
        if not fit and all(v <= DEAD_GRAD * grads[0][1] for _, v in late):
            n = next((i for i, (_, v) in enumerate(reversed(grads)) if v > DEAD_GRAD * grads[0][1]), len(grads))
            signs.append((grads[-n][0], f"the gradient norm is 0 from step {grads[-n][0]} on ({n} steps, "
                                        f"{fmt(grads[0][1])} at step {grads[0][0]}): nothing is trained any more"))
    acc = run.finite_points(ACCURACY.get(training_type, ""))
    if len(acc) >= 5:
        ka = window_size(len(acc), window)
        before = [p for p in acc[:-ka] if p[1] > 0]
        if before and all(v == 0 for _, v in acc[-ka:]):
            best = max(before, key=lambda p: p[1])
            signs.append((acc[-ka][0], f"{ACCURACY[training_type]} is 0 at each of the last {ka} steps (it was "
                                       f"{fmt(best[1])} at step {best[0]}): worse than chance"))
    return sorted(signs, key=lambda s: s[0])


def collapse_check(ctx: Context) -> Check:
    chk = Check("stability.collapse", "stability", "Training collapse", "loss", "none")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    frac = ctx.settings.window
    found = [(run, collapse_signs(run, ctx.training_type, frac, limit.max)) for run in ctx.current]
    found = [(run, signs) for run, signs in found if signs]
    if limit.max is not None and ctx.training_type in LOSS_TRENDED_TYPES:
        chk.threshold, chk.threshold_kind = limit.max, "absolute"
    if not found:
        logged = set().union(*(r.series for r in ctx.current))
        what = [("no loss spike, no pinned loss", ctx.training_type in LOSS_TRENDED_TYPES and "loss" in logged),
                ("no vanished gradients", "grad_norm" in logged),
                ("no accuracy stuck at 0", ACCURACY.get(ctx.training_type) in logged)]
        seen = [text for text, ok in what if ok]
        if not seen:
            return chk.skip(f"nothing to read: {ctx.training_type} logs no grad_norm" +
                            ("" if ctx.training_type in LOSS_TRENDED_TYPES else " and its loss is no health signal"))
        return chk.set("pass", ", ".join(seen))
    run, signs = min(found, key=lambda f: f[1][0][0])
    chk.step = signs[0][0]
    chk.details = {"run": run.id, "signs": [text for _, text in signs]}
    text = "; ".join(t for _, t in signs)
    which = f" ({len(found)} of {len(ctx.current)} runs)" if len(ctx.current) > 1 else ""
    base = any(collapse_signs(r, ctx.training_type, frac, limit.max) for r in ctx.baseline)
    chk.set("fail", f"training collapsed{which}: {text}" + (" (the baseline shows it too)" if base else ""))
    return cap_severity(chk, limit)


# -- learning ------------------------------------------------------------------------------------------
# A run that trains without breaking can still learn nothing (a learning rate 100x too low, a loss whose
# gradient is zero). Unlike the curve checks, this holds whatever the config says: a changed config
# excuses a curve of another shape, not a run that stopped learning.

# The signals that show learning, and their sign (+1: learning raises them, -1: lowers them).
LEARNING_SIGNALS = {
    "sft": [("loss", -1), ("mean_token_accuracy", 1)],
    "dpo": [("loss", -1), ("rewards/margins", 1), ("rewards/accuracies", 1)],
    "reward": [("loss", -1), ("margin", 1), ("accuracy", 1)],
    "custom": [("loss", -1)],  # a plain transformers Trainer under canary exec: its loss is all we know
}


def progress(run: Run, metric: str, sign: int, confidence: float,
             last: float = math.inf) -> tuple[float, tuple[float, float], float] | None:
    """How far `metric` moved the learning way over the run, up to step `last`: the Theil-Sen rise,
    signed so that learning is positive, with its interval, and the fitted start."""
    pts = [p for p in run.finite_points(metric) if p[0] <= last]
    tr = trend([p[0] for p in pts], [p[1] for p in pts], confidence)
    if tr is None:
        return None
    lo, hi = sorted((sign * tr.rise_ci[0], sign * tr.rise_ci[1]))
    return sign * tr.rise, (lo, hi), tr.start


def _judge_progress(value: float, ci: tuple[float, float], need: float) -> str:
    return "pass" if value >= need else ("warn" if ci[1] >= need else "fail")


def _loss_decline(ctx: Context, limit) -> tuple[str, str] | None:
    """With or without a baseline: the loss must fall by `min` of its start over the run (every run)."""
    if limit.min is None:
        return None
    if any(r.info["steps_completed"] < r.info["steps_planned"] for r in ctx.current):
        return None  # a run cut short is judged against the baseline's same steps only
    worst = None
    for run in ctx.current:
        p = progress(run, "loss", -1, ctx.confidence)
        if p is None or abs(p[2]) < 1e-12:
            continue
        rel = (p[0] / abs(p[2]), (p[1][0] / abs(p[2]), p[1][1] / abs(p[2])), p[2])
        if worst is None or rel[0] < worst[0]:
            worst = rel
    if worst is None:
        return None
    value, ci, start = worst
    ci = (ci[0] + 0.0, ci[1] + 0.0)  # no "-0.0%"
    status = _judge_progress(value, ci, limit.min)
    moved = f"fell {pct(abs(value), False)}" if value >= 0 else f"rose {pct(-value, False)}"
    text = (f"the loss {moved} of its start {fmt(start)} over the run (Theil-Sen, decline CI {pct(ci[0])}.."
            f"{pct(ci[1])}), needs to fall {limit.min:.0%}")
    return status, text


def _vs_baseline(ctx: Context, limit) -> tuple[str, str, list[dict]] | None:
    """With a baseline: each signal the baseline clearly learned (interval above 0), over the steps both
    sides recorded; the run passes when at least one signal moved `1 - relative` of the baseline's way."""
    if limit.relative is None or not ctx.has_baseline:
        return None
    last = ctx.last_common_step
    rows = []
    for metric, sign in LEARNING_SIGNALS[ctx.training_type]:
        base = [p for p in (progress(r, metric, sign, ctx.confidence, last) for r in ctx.baseline) if p is not None]
        cur = [p for p in (progress(r, metric, sign, ctx.confidence, last) for r in ctx.current) if p is not None]
        if not base or not cur or not all(b[1][0] > 0 for b in base):
            continue
        ref = statistics.median(b[0] for b in base)
        value, ci, _ = min(cur, key=lambda c: c[0])  # every run must learn: the one that learned least
        need = (1 - limit.relative) * ref
        rows.append({"metric": metric, "baseline": ref, "current": value, "ci": list(ci), "need": need,
                     "status": _judge_progress(value, ci, need)})
    if not rows:
        return None
    best = min(rows, key=lambda r: ["pass", "warn", "fail"].index(r["status"]))
    share = f"{1 - limit.relative:.0%} of the baseline's"
    parts = ", ".join(_describe_progress(r, dict(LEARNING_SIGNALS[ctx.training_type])[r["metric"]]) for r in rows)
    upto = f" over steps 1-{last}" if ctx.stopped else ""
    if best["status"] == "pass":
        text = f"{best['metric']} moved {best['current'] / best['baseline']:.0%} of the baseline's way{upto} ({parts})"
    elif best["status"] == "warn":
        text = f"learning below {share}{upto} ({parts}), but the interval reaches it (not conclusive)"
    else:
        text = f"no signal learned {share} progress{upto}: {parts}"
    return best["status"], text, rows


def _describe_progress(row: dict, sign: int) -> str:
    good, bad = ("fell", "rose") if sign < 0 else ("rose", "fell")
    moved = f"{good} {fmt(row['current'])}" if row["current"] >= 0 else f"{bad} {fmt(-row['current'])}"
    return f"{row['metric']} {moved} (baseline {good} {fmt(row['baseline'])})"


def learning_check(ctx: Context) -> Check:
    chk = Check("stability.learning", "stability", "Learning progress", "loss", "higher_is_better", None)
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if ctx.training_type not in LEARNING_SIGNALS:
        return chk.skip(f"not applied to {ctx.training_type}: its rewards are too noisy over a canary run to "
                        "demand progress; see the rl checks")
    absolute = _loss_decline(ctx, limit)
    relative = _vs_baseline(ctx, limit)
    results = []
    if absolute is not None:
        results.append(absolute)
    if relative is not None:
        status, text, rows = relative
        chk.details = {"signals": rows}
        results.append((status, text))
        top = min(rows, key=lambda r: ["pass", "warn", "fail"].index(r["status"]))
        chk.metric, chk.baseline, chk.current = top["metric"], top["baseline"], top["current"]
        chk.ci, chk.confidence = tuple(top["ci"]), ctx.confidence
        chk.threshold, chk.threshold_kind = top["need"], "absolute"
    elif absolute is not None and ctx.has_baseline:
        results.append(("pass", "the baseline shows no clear progress to compare with"))
    if not results:
        if ctx.stopped:
            return chk.skip(f"not judged: {ctx.stopped}")
        return chk.skip("fewer than 5 logged values, or no limit set (min: loss decline, relative: vs baseline)")
    order = ["pass", "warn", "fail"]
    results.sort(key=lambda r: -order.index(r[0]))
    status = results[0][0]
    chk.set(status, "; ".join(r[1] for r in results) + (": the model is not learning" if status == "fail" else ""))
    return cap_severity(chk, limit)


# -- learning signal -----------------------------------------------------------------------------------
# How far each optimizer step moved the trainable parameters (`update_ratio`, ||delta theta|| / ||theta||,
# measured by the collector) and the learning rate it applied. A policy that never updates (a learning
# rate of 1e-9, a warmup that never ends, a frozen parameter group) can keep every loss and reward inside
# its band; it cannot hide here. Like the learning check, no config or library difference excuses it.

LR_SERIES = ("effective_lr", "learning_rate")  # the collector's, then the trainer's log (`lr` is aliased)
# Config fields (last part of the path) that set the learning-rate schedule. `train.warmup_steps` is the
# canary's timing warmup, not the scheduler's, so it is left out.
LR_CONFIG_FIELDS = ("learning_rate", "lr_scheduler", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio",
                    "max_steps", "num_train_epochs", "total_episodes")


def update_ratio_check(ctx: Context) -> Check:
    chk = Check("stability.update_ratio", "stability", "Parameter updates", "update_ratio", "higher_is_better",
                "ratio")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    cur = [r.finite_points("update_ratio") for r in ctx.current]
    if not any(cur):
        return chk.skip("update_ratio is not recorded (an older canary's run, or no optimizer step was taken)")
    status, reasons = "pass", []
    # Baseline-free: parameters that did not move at all, at any step, were not trained.
    frozen = [r for r, pts in zip(ctx.current, cur) if pts and all(v == 0 for _, v in pts)]
    if frozen:
        status = "fail"
        reasons.append(f"the trainable parameters did not change at any of the {len(cur[0])} optimizer steps "
                       "(update ratio 0): the policy is frozen (learning rate ~0, a warmup that has not started, "
                       "or no parameter left trainable)")
        chk.current = 0.0
    if ctx.has_baseline and limit.relative is not None and not frozen:
        last = ctx.last_common_step
        base = [[v for s, v in r.finite_points("update_ratio") if s <= last] for r in ctx.baseline]
        common = [[v for s, v in pts if s <= last] for pts in cur]
        if any(base) and any(common):
            ch = bootstrap_change(base, common, "median", ctx.confidence, ctx.settings.resamples, _seed(chk.id))
            judge_change(chk, ch, type(limit)(relative=limit.relative), "median update ||dθ||/||θ|| per step")
            chk.confidence = ctx.confidence
            status, reasons = chk.status, [chk.reason + (": the policy barely moves (near-frozen)"
                                                         if chk.status == "fail" else "")]
        else:
            reasons.append("the baseline does not record update_ratio")
    level = None
    if limit.min is not None and not frozen:
        med = statistics.median(v for pts in cur for _, v in pts)
        if chk.current is None:
            chk.current = med
        level = judge_level(chk, med, type(limit)(min=limit.min), "median update ratio")
        if level is not None and level[0] == "fail":
            level = ("fail", level[1] + ": the parameters barely move (below float32 resolution)")
    return conclude(chk, limit, status, reasons, level, "no limit set (relative: vs baseline, min)")


def _sets_lr(path: str) -> bool:
    if path.endswith("extra_args.warmup_steps"):
        return True
    return path != "train.warmup_steps" and path.split(".")[-1] in LR_CONFIG_FIELDS


def _log10_ratio(c: float, b: float) -> float:
    if b == c:
        return 0.0
    if b <= 0 or c <= 0:
        return math.copysign(12.0, c - b)  # one side at 0: as far apart as it gets
    return math.log10(c / b)


def learning_rate_check(ctx: Context) -> Check:
    chk = Check("stability.learning_rate", "stability", "Learning rate applied", "effective_lr", "band", None)
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if not ctx.has_baseline:
        return chk.skip("no baseline")
    name = next((n for n in LR_SERIES if ctx.cur0.finite_points(n) and ctx.baseline[0].finite_points(n)), None)
    if name is None:
        return chk.skip("neither effective_lr nor learning_rate is recorded on both sides")
    chk.metric = name
    if limit.absolute is None:
        return chk.skip("no limit set (absolute: orders of magnitude, log10)")
    b_at = dict(ctx.baseline[0].finite_points(name))
    pairs = [(s, c, b_at[s]) for s, c in ctx.cur0.finite_points(name) if s in b_at]
    if not pairs:
        return chk.skip("no step in common with the baseline")
    logs = [_log10_ratio(c, b) for _, c, b in pairs]
    shift = statistics.median(logs)
    worst = max(pairs, key=lambda p: abs(_log10_ratio(p[1], p[2])))
    chk.baseline = statistics.median(b for _, _, b in pairs)
    chk.current = statistics.median(c for _, c, _ in pairs)
    chk.change, chk.change_kind = shift, "absolute"
    chk.threshold, chk.threshold_kind = limit.absolute, "absolute"
    chk.n_baseline = chk.n_current = len(pairs)
    text = (f"median {name} {fmt(chk.current)} vs the baseline's {fmt(chk.baseline)} over {len(pairs)} common steps: "
            f"{shift:+.2f} orders of magnitude (log10; limit +-{limit.absolute:g}); at step {worst[0]} "
            f"{fmt(worst[1])} vs {fmt(worst[2])}")
    if abs(shift) <= limit.absolute:
        return cap_severity(chk.set("pass", text), limit)
    chk.step = worst[0]
    explain = [d for d in training_config_diff(ctx) if _sets_lr(d["path"])]
    if explain:
        shown = ", ".join(f"{d['path']}: {d['baseline']!r} -> {d['current']!r}" for d in explain[:3])
        return cap_severity(chk.set("warn", text + f"; the config changed the schedule ({shown}): deliberate? "
                                    "stability.update_ratio tells whether the policy still learns"), limit)
    return cap_severity(chk.set("fail", text + " with the same learning-rate config: the optimizer applies a learning "
                                "rate the config does not ask for (a scheduler, warmup or optimizer change in code "
                                "or in a library)"), limit)


def stability_checks(ctx: Context) -> list[Check]:
    return [nan_inf_check(ctx), loss_divergence_check(ctx), grad_norm_check(ctx), collapse_check(ctx),
            learning_check(ctx), update_ratio_check(ctx), learning_rate_check(ctx)]


# -- RL health ----------------------------------------------------------------------------------------

# (check id suffix, metric, title, direction, unit)
RL_LEVEL = {
    "ppo": [
        ("kl", "objective/kl", "KL to the reference", "lower_is_better", "nats"),
        ("entropy", "policy/entropy_avg", "Policy entropy", "higher_is_better", "nats"),
        ("clipfrac", "policy/clipfrac_avg", "Policy clip fraction", "lower_is_better", "ratio"),
        ("value_loss", "loss/value_avg", "Value loss", "lower_is_better", None),
        ("reward", "objective/scores", "Reward model score", "higher_is_better", None),
    ],
    "dpo": [
        ("reward_accuracy", "rewards/accuracies", "Reward accuracy", "higher_is_better", "ratio"),
        ("margins", "rewards/margins", "Reward margin", "higher_is_better", None),
    ],
    "reward": [
        ("accuracy", "accuracy", "Preference accuracy", "higher_is_better", "ratio"),
        ("margin", "margin", "Reward margin", "higher_is_better", None),
    ],
}
for _t in ("grpo", "rloo"):
    RL_LEVEL[_t] = [
        ("reward", "reward", "Reward", "higher_is_better", None),
        ("reward_std", "reward_std", "Reward spread in a group", "higher_is_better", None),
        ("zero_std_fraction", "frac_reward_zero_std", "Groups with zero reward spread", "lower_is_better", "ratio"),
        ("kl", "kl", "KL to the reference", "lower_is_better", "nats"),
        ("clip_ratio", "clip_ratio/region_mean", "Clip ratio", "lower_is_better", "ratio"),
        ("completion_length", "completions/mean_length", "Completion length", "band", "tokens"),
        ("truncation", "completions/clipped_ratio", "Truncated completions", "lower_is_better", "ratio"),
    ]


# Compared relative to the baseline's level with a floor of NOISE_K sd of the baseline's late window
# (no fixed floor in the metric's unit): KL, and PPO's reward-model score, whose scale is the reward model's.
NOISE_FLOORED = ("objective/kl", "kl", "objective/scores")


def late_window(run: Run, metric: str, fraction: float) -> list[tuple[int, float]]:
    pts = run.finite_points(metric)
    return pts[-window_size(len(pts), fraction):] if pts else []


def early_window(run: Run, metric: str, fraction: float) -> list[tuple[int, float]]:
    pts = run.finite_points(metric)
    return pts[: window_size(len(pts), fraction)] if pts else []


def level_check(ctx: Context, check_id: str, metric: str, title: str, direction: str, unit) -> Check:
    """A signal's late-window mean: against max/min, and against the baseline's late window."""
    chk = Check(check_id, "rl_health", title, metric, direction, unit)
    limit = ctx.limit(check_id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    frac = ctx.settings.window
    cur = [[v for _, v in late_window(r, metric, frac)] for r in ctx.current]
    if not any(cur):
        logged = ctx.has_baseline and any(late_window(r, metric, frac) for r in ctx.baseline)
        return chk.skip(f"{metric} is not logged by the current run"
                        + (" (the baseline logs it: see run.metrics)" if logged else ""))
    pooled = [v for c in cur for v in c]
    level = statistics.fmean(pooled)
    chk.current, chk.n_current = level, len(pooled)
    first_late = next(late_window(r, metric, frac)[0][0] for r in ctx.current if late_window(r, metric, frac))
    what = f"late mean (steps {first_late}+)"
    status, reasons = "pass", []
    if ctx.has_baseline and (limit.relative is not None or limit.absolute is not None) and ctx.stopped:
        # The late window of a run stopped at step 11/30 is steps 9-11, the baseline's is 23-30: a
        # difference there measures the training time the run lost, not the change under test.
        level = judge_level(chk, level, limit, what)
        if level is None:
            return chk.skip(f"not compared: {ctx.stopped}")
        return conclude(chk, limit, status, [f"not compared with the baseline: {ctx.stopped}"], level, "")
    if ctx.has_baseline and (limit.relative is not None or limit.absolute is not None):
        base = [[v for _, v in late_window(r, metric, frac)] for r in ctx.baseline]
        if any(base):
            ch = bootstrap_change(base, cur, "mean", ctx.confidence, ctx.settings.resamples, _seed(check_id))
            floor = ""
            if metric in NOISE_FLOORED and limit.absolute is None and limit.relative is not None:
                # KL's and a reward model's scales differ by orders of magnitude between setups: instead of
                # a fixed floor, a change must also clear the baseline's own step-to-step noise.
                pooled_base = [v for b in base for v in b]
                noise = NOISE_K * statistics.stdev(pooled_base) if len(pooled_base) > 1 else 0.0
                limit = type(limit)(relative=limit.relative, absolute=noise, max=limit.max, min=limit.min,
                                    severity=limit.severity)
                floor = f" (absolute floor {fmt(noise, unit)}: {NOISE_K:g} sd of the baseline's late {metric})"
            judge_change(chk, ch, limit, "late mean vs baseline", prefer="relative" if floor else
                         "absolute" if unit in ("nats", "ratio") else "relative")
            chk.reason += floor
            chk.confidence = ctx.confidence
            status, reasons = chk.status, [chk.reason]
        else:
            reasons.append(f"the baseline does not log {metric}")
    return conclude(chk, limit, status, reasons, judge_level(chk, level, limit, what),
                    "no baseline to compare with, and no absolute limit (max/min) set")


CONSTANT_STD = 1e-9  # below this a reward function's spread over a step's completions is "none"
SCORED_MOST_STEPS = 0.5  # the baseline's scores varied at this share of its steps at least


def reward_func_collapse_check(ctx: Context) -> Check:
    """Each GRPO/RLOO reward function's spread over a step's completions (`rewards/<fn>/std`). A function
    that gives every completion the same score at every step has stopped scoring (a constant return, an
    exception swallowed into a default): the summed reward may still vary through the other functions,
    so the reward-level checks can miss it."""
    t = ctx.training_type
    chk = Check(f"rl.{t}.reward_func_collapse", "rl_health", "Reward functions still score", "rewards/*/std",
                "higher_is_better", None)
    if not ctx.limit(chk.id).enabled:
        return chk.skip("disabled by thresholds")
    names = sorted({k[len("rewards/"):-len("/std")] for r in ctx.current for k in r.series
                    if k.startswith("rewards/") and k.endswith("/std")})
    if not names:
        return chk.skip("no reward function's spread is logged (rewards/<fn>/std)")

    def spreads(runs, fn):
        return [v for r in runs for _, v in r.finite_points(f"rewards/{fn}/std")]

    dead, constant_before = [], []
    for fn in names:
        cur = spreads(ctx.current, fn)
        if not cur or max(cur) > CONSTANT_STD:
            continue
        base = spreads(ctx.baseline, fn) if ctx.has_baseline else []
        varied = sum(v > CONSTANT_STD for v in base) / len(base) if base else None
        if varied is not None and varied < SCORED_MOST_STEPS:
            # A reward the baseline earned at a few steps only (the untrained model rarely ends a
            # sentence): another seed may never earn it. Not evidence that the function broke.
            constant_before.append(fn)
        else:
            dead.append((fn, len(cur), statistics.fmean(base) if base else None))
    chk.current, chk.n_current = float(len(dead)), len(names)
    if not dead:
        note = (f" ({', '.join(constant_before)} constant here and varied at under half of the baseline's steps: "
                "not compared)") if constant_before else ""
        return chk.set("pass", f"{len(names) - len(constant_before)} of {len(names)} reward function(s) give "
                               f"varying scores{note}")
    parts = [f"{fn} gives every completion the same score at all {n} steps (std 0"
             + (f"; baseline mean std {fmt(b)})" if b is not None else ")") for fn, n, b in dead]
    varied_before = any(b is not None for _, _, b in dead)
    chk.details = {"constant": [fn for fn, _, _ in dead]}
    return chk.set("fail" if varied_before else "warn",
                   "; ".join(parts) + ": it has stopped scoring, so it gives the policy no learning signal"
                   + ("" if varied_before else " (warning only: no baseline shows that it used to vary)"))


def kl_growth_check(ctx: Context) -> Check:
    chk = Check("rl.ppo.kl_growth", "rl_health", "KL growth over the run", "objective/kl", "lower_is_better", "nats")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")

    def rises(runs):
        out = []
        for r in runs:
            pts = r.finite_points("objective/kl")
            tr = trend([p[0] for p in pts], [p[1] for p in pts], ctx.confidence)
            if tr is not None:
                out.append(tr)
        return out

    cur = rises(ctx.current)
    if not cur:
        return chk.skip("objective/kl has fewer than 5 finite values")
    worst = max(cur, key=lambda t: t.rise)
    chk.current, chk.ci, chk.confidence = worst.rise, worst.rise_ci, ctx.confidence
    chk.n_current = len(cur)
    status, reasons = "pass", []
    if limit.max is not None:
        chk.threshold, chk.threshold_kind = limit.max, "absolute"
        text = (f"KL rises by {fmt(worst.rise)} nats over the run (Theil-Sen, CI {fmt(worst.rise_ci[0])}.."
                f"{fmt(worst.rise_ci[1])}), limit {fmt(limit.max)}")
        status = "fail" if worst.rise_ci[0] > limit.max else ("warn" if worst.rise > limit.max else "pass")
        reasons.append(text)
    base = rises(ctx.baseline)
    vs_base = limit.relative is not None or limit.absolute is not None
    if base and vs_base and ctx.stopped:
        # a rise over 11 steps against one over 30 measures the lost steps, not the change
        reasons.append(f"not compared with the baseline: {ctx.stopped}")
    elif base and vs_base:
        s, text, allowed, ci = _kl_rise_vs_baseline(worst, base, limit)
        ref = statistics.median(b.rise for b in base)
        chk.baseline, chk.change, chk.change_kind, chk.n_baseline = ref, worst.rise - ref, "absolute", len(base)
        if STATUS_RANK[s] > STATUS_RANK[status]:
            status = s
            chk.threshold, chk.threshold_kind, chk.ci = allowed, "absolute", ci
            reasons.insert(0, text + (": the KL penalty no longer holds the policy near its reference (ppo.kl_coef "
                                      "0 or ignored, or a stronger reward)" if s == "fail" else ""))
        else:
            reasons.append(text)
    return conclude(chk, limit, status, reasons, None, "no limit set")


def _kl_rise_vs_baseline(worst, base: list, limit: Limit) -> tuple[str, str, float, tuple[float, float]]:
    """The current KL rise against the baseline's, relative to the baseline's own rise and noise. The
    difference of the two Theil-Sen rises gets an interval from both runs' intervals (half-widths added
    in quadrature); it fails when the whole interval is past `relative` x the baseline's rise (and
    `absolute` nats, when set), and warns when only the point is. Returns (status, text, limit, ci)."""
    ref = statistics.median(b.rise for b in base)
    half_b = statistics.median((b.rise_ci[1] - b.rise_ci[0]) / 2 for b in base)
    noise = math.hypot((worst.rise_ci[1] - worst.rise_ci[0]) / 2, half_b)
    diff = worst.rise - ref
    ci = (diff - noise, diff + noise)
    allowed, parts = 0.0, []
    if limit.relative is not None:
        allowed = limit.relative * abs(ref)
        parts.append(f"+{limit.relative:.0%} of the baseline's rise")
    if limit.absolute is not None:
        allowed = max(allowed, limit.absolute)
        parts.append(f"+{fmt(limit.absolute)} nats")
    s = "fail" if ci[0] > allowed else ("warn" if diff > allowed else "pass")
    rel = f", {pct(diff / ref)}" if ref > 1e-12 else ""
    text = (f"KL rose {fmt(worst.rise)} nats where the baseline's rose {fmt(ref)}: {signed(diff)} nats{rel} (CI "
            f"{signed(ci[0])}..{signed(ci[1])} from both runs' intervals), limit +{fmt(allowed)} ({' and '.join(parts)})")
    return s, text, allowed, ci


def entropy_collapse_check(ctx: Context) -> Check:
    chk = Check("rl.ppo.entropy_collapse", "rl_health", "Entropy collapse", "policy/entropy_avg",
                "higher_is_better", "ratio")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    frac = ctx.settings.window
    ratios = []
    for r in ctx.current:
        early = [v for _, v in early_window(r, "policy/entropy_avg", frac)]
        late = [v for _, v in late_window(r, "policy/entropy_avg", frac)]
        if early and late and statistics.fmean(early) > 0:
            e0 = statistics.fmean(early)
            below = next((s for s, v in r.finite_points("policy/entropy_avg")
                          if limit.min is not None and v < limit.min * e0), None)
            ratios.append((statistics.fmean(late) / e0, e0, statistics.fmean(late), below))
    if not ratios:
        return chk.skip("policy/entropy_avg is not logged")
    worst = min(ratios, key=lambda t: t[0])
    chk.current = worst[0]
    lv = judge_level(chk, worst[0], limit, "late / early entropy")
    if lv is None:
        return chk.skip("no limit set (min: the lowest late/early entropy ratio)")
    if lv[0] == "fail":
        chk.step = worst[3]
    chk.threshold, chk.threshold_kind = limit.min, "absolute"
    chk.set(lv[0], f"{lv[1]} (entropy {fmt(worst[1])} -> {fmt(worst[2])} nats per token)")
    return cap_severity(chk, limit)


def value_loss_explosion_check(ctx: Context) -> Check:
    chk = Check("rl.ppo.value_loss_explosion", "rl_health", "Value loss explosion", "loss/value_avg",
                "lower_is_better", "ratio")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    frac = ctx.settings.window
    worst = None
    for r in ctx.current:
        early = [v for _, v in early_window(r, "loss/value_avg", frac)]
        after = r.finite_points("loss/value_avg", after_warmup=True)
        if not early or not after or statistics.median(early) <= 0:
            continue
        step, peak = max(after, key=lambda p: p[1])
        ratio = peak / statistics.median(early)
        if worst is None or ratio > worst[0]:
            worst = (ratio, step, peak, statistics.median(early))
    if worst is None:
        return chk.skip("loss/value_avg is not logged")
    chk.current = worst[0]
    lv = judge_level(chk, worst[0], limit, "largest value loss after warmup / early median")
    if lv is None:
        return chk.skip("no limit set (max: largest value loss / early median)")
    chk.threshold, chk.threshold_kind = limit.max, "absolute"
    if lv[0] == "fail":
        chk.step = worst[1]
    chk.set(lv[0], f"{lv[1]} (peak {fmt(worst[2])} at step {worst[1]}, early median {fmt(worst[3])})")
    return cap_severity(chk, limit)


# -- two-sided RL checks: relative to the baseline's own scale and noise -------------------------------

KL_METRIC = {"ppo": "objective/kl", "grpo": "kl", "rloo": "kl"}
ENTROPY_METRIC = {"ppo": "policy/entropy_avg", "grpo": "entropy", "rloo": "entropy"}
NOISE_K = 2.0  # a baseline level counts as positive when its mean is this many standard errors above 0


def _late(runs: list[Run], metric: str, fraction: float) -> list[list[float]]:
    return [[v for _, v in late_window(r, metric, fraction)] for r in runs]


KL_FIELD = {"ppo": "ppo.kl_coef", "grpo": "grpo.beta", "rloo": "rloo.beta"}


def applied_kl_weight(runs: list[Run], t: str) -> float | None:
    """The KL weight the trainer applied, read from what it logs: PPO logs the penalty it added to the
    reward (objective/non_score_reward = -kl_coef x objective/kl, both per sequence); GRPO's loss is its
    KL term (beta x kl: the policy-gradient part averages to ~0 over a group). The median over the steps
    whose KL is clearly above 0. None where it cannot be read (RLOO logs no penalty of its own)."""
    if t not in ("ppo", "grpo"):
        return None
    term = "objective/non_score_reward" if t == "ppo" else "loss"
    sign = -1.0 if t == "ppo" else 1.0
    ratios = []
    for r in runs:
        other = dict(r.finite_points(term))
        ratios += [sign * other[s] / k for s, k in r.finite_points(KL_METRIC[t]) if k > 1e-3 and s in other]
    return statistics.median(ratios) if len(ratios) >= 3 else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def kl_penalty_check(ctx: Context) -> Check:
    """The KL penalty that holds the policy near its reference, where the baseline had one: the weight in
    the config (grpo.beta 0 also stops TRL logging KL at all, so no KL check can see it), else the weight
    the trainer applied as read from its logs (a code path that zeroes it leaves the config unchanged,
    and over a smoke run the KL itself may barely move). relative: the share of the baseline's weight
    that may be lost (fails past it; warns past half of it). No config change excuses it: health."""
    t = ctx.training_type
    field = KL_FIELD[t]
    chk = Check(f"rl.{t}.kl_penalty", "rl_health", "KL penalty", field, "higher_is_better", None)
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if not ctx.has_baseline:
        return chk.skip("no baseline: whether a KL penalty is wanted is the baseline's to say")
    if limit.relative is None:
        return chk.skip("no limit set (relative: the share of the baseline's KL weight that may be lost)")
    b_cfg, c_cfg = _number(ctx.baseline[0].setting(field)), _number(ctx.cur0.setting(field))
    if b_cfg is not None and c_cfg is not None and b_cfg > 0:
        b, c, what = b_cfg, c_cfg, f"{field} in the config"
        if c >= 0.5 * b:  # the config keeps it: the applied weight tells whether code removed it
            b_w, c_w = applied_kl_weight(ctx.baseline, t), applied_kl_weight(ctx.current, t)
            if b_w is not None and c_w is not None and b_w > 0:
                term = "objective/non_score_reward / objective/kl" if t == "ppo" else "loss / kl"
                b, c, what = b_w, c_w, f"the KL weight applied (median {term} per step)"
    else:
        return chk.skip(f"the baseline applies no KL penalty ({field} {ctx.baseline[0].setting(field)})")
    chk.baseline, chk.current = b, c
    chk.change, chk.change_kind = (c - b) / b, "relative"
    chk.threshold, chk.threshold_kind = -limit.relative, "relative"
    lost = 1 - c / b
    text = f"{what}: {fmt(c)} vs the baseline's {fmt(b)} ({pct(-lost)})"
    if lost > limit.relative:
        return cap_severity(chk.set("fail", text + ": the KL penalty is removed, nothing holds the policy near "
                                                  "its reference (reward hacking and drift go unchecked)"), limit)
    if lost > limit.relative / 2:
        return cap_severity(chk.set("warn", text + ": the KL penalty is much weaker than the baseline's"), limit)
    return chk.set("pass", text)


def kl_vanish_check(ctx: Context) -> Check:
    """KL is checked upward by rl.<type>.kl; a KL that falls to ~0 where the baseline's was clearly positive
    means the policy no longer moves away from its reference: not trained (frozen), or the reference is
    the policy itself. Judged on the late window against the baseline's, relative to its level."""
    t = ctx.training_type
    metric = KL_METRIC[t]
    chk = Check(f"rl.{t}.kl_vanish", "rl_health", "KL vanished", metric, "higher_is_better", "nats")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if not ctx.has_baseline:
        return chk.skip("no baseline: a KL near 0 is also what an early or short run shows")
    if limit.relative is None:
        return chk.skip("no limit set (relative: the share of the baseline's KL that may be lost)")
    frac = ctx.settings.window
    cur, base = _late(ctx.current, metric, frac), _late(ctx.baseline, metric, frac)
    if not any(cur):
        return chk.skip(f"{metric} is not logged by the current run" + (" (the baseline logs it: see run.metrics)"
                                                                         if any(base) else ""))
    if not any(base):
        return chk.skip(f"the baseline does not log {metric}")
    if ctx.stopped:
        return chk.skip(f"not compared: {ctx.stopped}")
    pooled = [v for b in base for v in b]
    mean = statistics.fmean(pooled)
    se = statistics.stdev(pooled) / math.sqrt(len(pooled)) if len(pooled) > 1 else 0.0
    if mean <= 0 or mean <= NOISE_K * se:
        chk.baseline = mean
        return chk.set("pass", f"the baseline's late KL {fmt(mean)} (standard error {fmt(se)}) is not clearly "
                               "above 0: there is no KL that could vanish")
    ch = bootstrap_change(base, cur, "mean", ctx.confidence, ctx.settings.resamples, _seed(chk.id))
    judge_change(chk, ch, type(limit)(relative=limit.relative), "late mean KL vs baseline")
    chk.confidence = ctx.confidence
    if chk.status == "fail":
        chk.reason += (": the KL to the reference vanished, so the policy no longer moves away from it (a frozen "
                       "policy: learning rate, warmup or trainable parameters; or the reference is the policy)")
    return cap_severity(chk, limit)


def entropy_stuck_check(ctx: Context) -> Check:
    """The policy's entropy falls as it learns to prefer some tokens. An entropy that stays where it
    started (at its maximum ln(vocab) for an untrained model) while the baseline's clearly fell over the
    same steps means the policy is not learning. Judged with the Theil-Sen fall and its interval."""
    t = ctx.training_type
    metric = ENTROPY_METRIC[t]
    chk = Check(f"rl.{t}.entropy_stuck", "rl_health", "Entropy falls as the policy learns", metric,
                "higher_is_better", "nats")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if not ctx.has_baseline:
        return chk.skip("no baseline: how far entropy should fall depends on the task")
    if limit.relative is None:
        return chk.skip("no limit set (relative: how much of the baseline's fall may be missing)")
    last = ctx.last_common_step
    base = [p for p in (progress(r, metric, -1, ctx.confidence, last) for r in ctx.baseline) if p is not None]
    cur = [p for p in (progress(r, metric, -1, ctx.confidence, last) for r in ctx.current) if p is not None]
    if not cur:
        return chk.skip(f"{metric} has fewer than 5 values in the current run")
    if not base:
        return chk.skip(f"the baseline does not log {metric}")
    ref = statistics.median(b[0] for b in base)
    if not all(b[1][0] > 0 for b in base):
        chk.baseline = ref
        return chk.set("pass", f"the baseline's {metric} did not clearly fall ({fmt(ref)} nats, interval reaching 0): "
                               "nothing to compare the fall with")
    value, ci, start = min(cur, key=lambda c: c[0])
    need = (1 - limit.relative) * ref
    chk.baseline, chk.current, chk.ci, chk.confidence = ref, value, ci, ctx.confidence
    chk.change, chk.change_kind = value - ref, "absolute"
    chk.threshold, chk.threshold_kind = need, "absolute"
    status = _judge_progress(value, ci, need)
    text = (f"{metric} fell {fmt(value)} nats from {fmt(start)} over the run (Theil-Sen, CI {fmt(ci[0])}..{fmt(ci[1])}) "
            f"where the baseline's fell {fmt(ref)}; needs {1 - limit.relative:.0%} of that ({fmt(need)})")
    if status != "pass":
        text += (f": the entropy stays near where it started (~{math.exp(start):.0f} equally likely tokens), "
                 "so the policy is not learning to prefer any output")
    return cap_severity(chk.set(status, text), limit)


REWARD_METRIC = {"ppo": "objective/scores", "grpo": "reward", "rloo": "reward"}


def reward_trend_check(ctx: Context) -> Check:
    """The reward must keep improving as the baseline's did: its Theil-Sen rise over the steps both sides
    recorded, with its interval, against the baseline's. A run that trains without error but whose reward
    stays flat (a learning rate far too low, a reward that no longer reaches the policy, advantages that
    cancel) fails, where the level checks may still pass because the baseline's reward was low early on."""
    t = ctx.training_type
    metric = REWARD_METRIC[t]
    chk = Check(f"rl.{t}.reward_trend", "rl_health", "Reward improves over the run", metric, "higher_is_better", None)
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if not ctx.has_baseline:
        return chk.skip("no baseline: how fast a reward should rise depends on the task")
    if limit.relative is None:
        return chk.skip("no limit set (relative: how much of the baseline's rise may be missing)")
    last = ctx.last_common_step
    base = [p for p in (progress(r, metric, 1, ctx.confidence, last) for r in ctx.baseline) if p is not None]
    cur = [p for p in (progress(r, metric, 1, ctx.confidence, last) for r in ctx.current) if p is not None]
    if not cur:
        return chk.skip(f"{metric} has fewer than 5 values in the current run")
    if not base:
        return chk.skip(f"the baseline does not log {metric}")
    ref = statistics.median(b[0] for b in base)
    upto = f" over steps 1-{last:g}" if ctx.stopped else " over the run"
    if not all(b[1][0] > 0 for b in base):
        chk.baseline = ref
        return chk.set("pass", f"the baseline's {metric} did not clearly rise{upto} ({fmt(ref)}, interval reaching "
                               "0): no learning to compare with")
    value, ci, start = min(cur, key=lambda c: c[0])  # every run must learn: the one that learned least
    need = (1 - limit.relative) * ref
    chk.baseline, chk.current, chk.ci, chk.confidence = ref, value, ci, ctx.confidence
    chk.change, chk.change_kind = value - ref, "absolute"
    chk.threshold, chk.threshold_kind = need, "absolute"
    status = _judge_progress(value, ci, need)
    text = (f"{metric} rose {fmt(value)} from {fmt(start)}{upto} (Theil-Sen, CI {fmt(ci[0])}..{fmt(ci[1])}) where the "
            f"baseline's rose {fmt(ref)}; needs {1 - limit.relative:.0%} of that ({fmt(need)})")
    if status == "fail":
        text += ": the reward stopped improving, so the policy is not learning the task"
    elif status == "warn":
        text += ", but the interval reaches it (not conclusive)"
    return cap_severity(chk.set(status, text), limit)


def rl_checks(ctx: Context) -> list[Check]:
    t = ctx.training_type
    out = [level_check(ctx, f"rl.{t}.{name}", metric, title, direction, unit)
           for name, metric, title, direction, unit in RL_LEVEL.get(t, [])]
    if t == "ppo":
        out.insert(1, kl_growth_check(ctx))
        out.insert(3, entropy_collapse_check(ctx))
        out.append(value_loss_explosion_check(ctx))
    if t in KL_METRIC:
        at = next(i for i, c in enumerate(out) if c.id == f"rl.{t}.kl") + 1
        out[at:at] = [kl_vanish_check(ctx), kl_penalty_check(ctx), entropy_stuck_check(ctx)]
    if t in REWARD_METRIC:
        at = next(i for i, c in enumerate(out) if c.id == f"rl.{t}.reward") + 1
        out.insert(at, reward_trend_check(ctx))
    if t in ("grpo", "rloo"):
        out.insert(3, reward_func_collapse_check(ctx))
        beta = ctx.cur0.setting(f"{t}.beta")
        for c in out:
            if c.id == f"rl.{t}.kl" and c.status == "skip" and beta == 0:
                c.reason = f"{t}.beta is 0: no KL term, so TRL logs no KL"
    return out


# -- invariants ---------------------------------------------------------------------------------------


def _first(run: Run, metric: str) -> tuple[int, float] | None:
    pts = run.points(metric)
    return pts[0] if pts and pts[0][0] == run.steps[0] else None


def expected_dpo_loss(run: Run) -> tuple[float | None, str]:
    sec = run.config.get("dpo") or {}
    extra = sec.get("extra_args") or {}
    loss_type = extra.get("loss_type", sec.get("loss_type", "sigmoid"))
    beta = float(extra.get("beta", sec.get("beta", 0.1)))
    if isinstance(loss_type, list):
        if len(loss_type) != 1:
            return None, f"loss_type {loss_type} mixes losses"
        loss_type = loss_type[0]
    for key in ("rpo_alpha", "loss_weights", "ld_alpha"):
        if extra.get(key) is not None:
            return None, f"dpo.extra_args.{key} adds terms to the loss"
    if loss_type in ("sigmoid", "robust"):
        return math.log(2), f"ln 2 for loss_type {loss_type}"
    if loss_type == "hinge":
        return 1.0, "1 for loss_type hinge"
    if loss_type == "ipo":
        return 1 / (4 * beta * beta), f"1/(4 beta^2) for loss_type ipo, beta {beta:g}"
    return None, f"no closed form at step 1 for loss_type {loss_type}"


def dpo_initial_loss_check(ctx: Context) -> Check:
    chk = Check("invariant.dpo.initial_loss", "invariant", "DPO loss at step 1", "loss", "band", None)
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    expected, why = expected_dpo_loss(ctx.cur0)
    if expected is None:
        return chk.skip(why)
    worst = None
    for r in ctx.current:
        first = _first(r, "loss")
        if first is not None and (worst is None or abs(first[1] - expected) > abs(worst[1] - expected)
                                  or not math.isfinite(first[1])):
            worst = first
    if worst is None:
        return chk.skip("no loss logged at the first step")
    chk.step, chk.current, chk.baseline = worst[0], worst[1], expected
    chk.change, chk.change_kind = worst[1] - expected, "absolute"
    margin = _first(ctx.cur0, "rewards/margins")
    if margin is not None:
        chk.details = {"rewards/margins": margin[1]}
    tol = limit.absolute if limit.absolute is not None else 0.0
    chk.threshold, chk.threshold_kind = tol, "absolute"
    off = abs(worst[1] - expected) if math.isfinite(worst[1]) else math.inf
    if off > tol:
        chk.set("fail", f"loss at step {worst[0]} is {fmt(worst[1])}, expected {fmt(expected)} ({why}) when the "
                        f"policy equals the reference; off by {fmt(off)} (tolerance {fmt(tol)})")
    else:
        chk.set("pass", f"loss at step {worst[0]} is {fmt(worst[1])}, {why} (off by {fmt(off)}, tolerance {fmt(tol)})")
    return cap_severity(chk, limit)


def ppo_first_minibatch_check(ctx: Context) -> Check:
    chk = Check("invariant.ppo.first_minibatch", "invariant", "PPO ratio and clipping at step 1", "val/ratio",
                "band", "ratio")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    r0 = ctx.cur0
    per_step = (r0.setting("ppo.num_ppo_epochs", 1) * r0.setting("ppo.num_mini_batches", 1)
                * r0.setting("train.gradient_accumulation_steps", 1))
    if per_step != 1:
        return chk.skip(f"step 1 averages {per_step} minibatches/epochs, so the first minibatch's ratio is not "
                        "observable (it is with ppo.num_ppo_epochs = num_mini_batches = 1)")
    problems, facts = [], []
    for r in ctx.current:
        ratio = _first(r, "val/ratio")
        clip = _first(r, "policy/clipfrac_avg")
        if ratio is None and clip is None:
            continue
        if ratio is not None:
            chk.step, chk.current, chk.baseline = ratio[0], ratio[1], 1.0
            chk.change, chk.change_kind = ratio[1] - 1.0, "absolute"
            tol = limit.absolute if limit.absolute is not None else 0.0
            chk.threshold, chk.threshold_kind = tol, "absolute"
            off = abs(ratio[1] - 1.0) if math.isfinite(ratio[1]) else math.inf
            (problems if off > tol else facts).append(
                f"importance ratio {fmt(ratio[1])} at step {ratio[0]} (|ratio - 1| tolerance {fmt(tol)})")
        if clip is not None and limit.max is not None:
            bad = not math.isfinite(clip[1]) or clip[1] > limit.max
            (problems if bad else facts).append(f"clip fraction {fmt(clip[1])} at step {clip[0]} (limit {fmt(limit.max)})")
    if not problems and not facts:
        return chk.skip("val/ratio and policy/clipfrac_avg are not logged at the first step")
    if problems:
        return cap_severity(chk.set("fail", "; ".join(problems) + ": the policy that sampled and the policy "
                                    "being trained disagree before any update"), limit)
    return cap_severity(chk.set("pass", "; ".join(facts)), limit)


def first_clip_check(ctx: Context) -> Check:
    t = ctx.training_type
    chk = Check(f"invariant.{t}.first_clip", "invariant", "Clip ratio at step 1", "clip_ratio/region_mean",
                "lower_is_better", "ratio")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    firsts = [f for f in (_first(r, "clip_ratio/region_mean") for r in ctx.current) if f is not None]
    if not firsts:
        return chk.skip("clip_ratio/region_mean is not logged at the first step")
    step, value = max(firsts, key=lambda f: f[1] if math.isfinite(f[1]) else math.inf)
    chk.step, chk.current = step, value
    lv = judge_level(chk, value if math.isfinite(value) else math.inf, limit, f"clip ratio at step {step}")
    if lv is None:
        return chk.skip("no limit set (max)")
    chk.threshold, chk.threshold_kind = limit.max, "absolute"
    extra = "" if lv[0] == "pass" else ": the importance ratio is not 1 before any update"
    if t == "grpo" and _grpo_ratio_is_one_by_construction(ctx.cur0):
        extra += (" (vacuous here: with num_iterations x steps_per_generation dividing gradient_accumulation_steps "
                  f"TRL computes no old log-probs and the ratio is exp(logp - logp.detach()) = 1; "
                  f"invariant.{t}.logprob_mismatch carries this fact)")
    return cap_severity(chk.set(lv[0], lv[1] + extra), limit)


def _grpo_ratio_is_one_by_construction(run: Run) -> bool:
    """TRL 1.12 GRPOTrainer sets old_per_token_logps = None when gradient_accumulation_steps is a multiple
    of steps_per_generation x num_iterations (without vLLM importance sampling): the ratio is then the
    training log-probs against themselves. RLOOTrainer always computes them."""
    extra = run.setting("grpo.extra_args", {}) or {}
    accum = int(run.setting("train.gradient_accumulation_steps", 1) or 1)
    every = int(extra.get("steps_per_generation") or accum) * int(extra.get("num_iterations") or 1)
    return accum % every == 0 and not extra.get("use_vllm")


# the set of invariants, in order: checks_invariants.invariant_checks
