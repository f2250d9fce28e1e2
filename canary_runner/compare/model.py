"""A check's record, the comparison context every check reads, and the rules that turn numbers into a status."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .loading import Run
from .settings import Limit, Settings
from .stats import Change

STATUS_RANK = {"skip": -1, "pass": 0, "warn": 1, "fail": 2}


@dataclass
class Check:
    id: str
    category: str
    title: str
    metric: str
    direction: str = "none"
    unit: str | None = None
    status: str = "pass"
    reason: str = ""
    baseline: float | None = None
    current: float | None = None
    change: float | None = None
    change_kind: str | None = None
    ci: tuple[float, float] | None = None
    confidence: float | None = None
    p_value: float | None = None
    n_baseline: int | None = None
    n_current: int | None = None
    threshold: float | None = None
    threshold_kind: str = "none"
    step: int | None = None
    details: dict = field(default_factory=dict)

    def set(self, status: str, reason: str) -> "Check":
        self.status, self.reason = status, reason
        return self

    def skip(self, reason: str) -> "Check":
        return self.set("skip", reason)

    def to_json(self) -> dict:
        out = {
            "id": self.id, "category": self.category, "title": self.title, "metric": self.metric,
            "unit": self.unit, "direction": self.direction,
            "baseline": _num(self.baseline), "current": _num(self.current), "change": _num(self.change),
            "ci": [_num(self.ci[0]), _num(self.ci[1])] if self.ci is not None else None,
            "confidence": self.confidence, "p_value": _num(self.p_value),
            "n_baseline": self.n_baseline, "n_current": self.n_current,
            "threshold": _num(self.threshold), "threshold_kind": self.threshold_kind,
            "step": self.step, "status": self.status, "reason": self.reason,
        }
        if self.change_kind is not None:
            out["change_kind"] = self.change_kind
        if self.details:
            out["details"] = self.details
        return out


def _num(v):
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    return float(v)


@dataclass
class Context:
    current: list[Run]
    baseline: list[Run]  # empty: no baseline
    settings: Settings
    training_type: str
    same_hardware: bool = True
    env_changes: list[dict] = field(default_factory=list)
    config_diff: list[dict] = field(default_factory=list)

    @property
    def has_baseline(self) -> bool:
        return bool(self.baseline)

    def limit(self, check_id: str) -> Limit:
        return self.settings.limit(check_id)

    @property
    def confidence(self) -> float:
        return self.settings.confidence

    @property
    def cur0(self) -> Run:
        return self.current[0]

    @property
    def stopped(self) -> str | None:
        """Why the two sides cannot be compared window for window: a run (either side) that recorded
        fewer steps than it planned (crash, timeout, interrupt). Its late window is not the other's."""
        for runs, who in ((self.current, "run"), (self.baseline, "baseline")):
            short = next((r for r in runs if r.info["steps_completed"] < r.info["steps_planned"]), None)
            if short is not None:
                return f"{who} stopped at step {short.info['steps_completed']}/{short.info['steps_planned']}"
        return None

    @property
    def last_common_step(self) -> float:
        """The last step that every run of both sides recorded (inf without a baseline): comparisons
        with the baseline read only steps up to it."""
        if not self.baseline:
            return math.inf
        return min((r.steps[-1] if r.steps else 0) for r in self.current + self.baseline)


# -- judging ---------------------------------------------------------------------------------------


def beyond(x: float, thr: float, direction: str) -> bool:
    if direction == "higher_is_better":
        return x < -thr
    if direction == "band":
        return abs(x) > thr
    return x > thr


def ci_beyond(ci: tuple[float, float], thr: float, direction: str) -> bool:
    lo, hi = ci
    if direction == "higher_is_better":
        return hi < -thr
    if direction == "band":
        return lo > thr or hi < -thr
    return lo > thr


def pct(x: float | None, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def fmt(x: float | None, unit: str | None = None) -> str:
    if x is None:
        return "n/a"
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a == 0:
        text = "0"
    elif a >= 1000:
        text = f"{x:,.0f}"
    elif a >= 10:
        text = f"{x:.1f}"
    elif a >= 0.01:
        text = f"{x:.3g}" if a < 1 else f"{x:.3f}".rstrip("0").rstrip(".")
    else:
        text = f"{x:.2e}"
    if unit == "s" and a < 1:
        text = f"{x * 1000:.3g} ms" if a >= 1e-4 else f"{x * 1e6:.3g} us"
        return text
    return f"{text} {unit}" if unit and unit not in ("ratio",) else text


def signed(x: float, unit: str | None = None) -> str:
    return ("+" if x >= 0 else "") + fmt(x, unit)


def judge_change(chk: Check, ch: Change, limit: Limit, what: str, prefer: str = "relative") -> Check:
    """Status from a baseline comparison: fail when the interval is past every set threshold, warn
    when only the point estimate is. With both `relative` and `absolute` set, both must be exceeded."""
    d = chk.direction
    chk.baseline, chk.current = ch.baseline, ch.current
    chk.n_baseline, chk.n_current, chk.p_value = ch.n_baseline, ch.n_current, ch.p_value
    chk.confidence = None
    kinds = []
    if limit.relative is not None:
        kinds.append("relative")
    if limit.absolute is not None:
        kinds.append("absolute")
    if prefer == "absolute" and limit.absolute is not None:
        primary = "absolute"
    elif (limit.relative is not None or limit.absolute is None) and ch.relative is not None:
        primary = "relative"
    else:
        primary = "absolute"
    chk.change_kind = primary
    chk.change = ch.relative if primary == "relative" else ch.absolute
    ci = ch.relative_ci if primary == "relative" else ch.absolute_ci
    chk.ci = ci
    if ci is not None:
        chk.confidence = None  # filled by the caller with the settings' level
    delta = _describe_change(chk, ch, primary, ci)
    if not kinds:
        chk.threshold, chk.threshold_kind = None, "none"
        return chk.set("pass", f"{what} {delta}; no threshold set (informational)")
    chk.threshold = limit.relative if primary == "relative" else limit.absolute
    chk.threshold_kind = primary
    point_bad, ci_bad = True, True
    for kind in kinds:
        thr = limit.relative if kind == "relative" else limit.absolute
        if kind == "relative" and ch.relative is None:
            # baseline ~0: any change in the bad direction is an unbounded relative change
            p, c = ch.absolute, ch.absolute_ci
            point_bad &= beyond(p, 0.0, d)
            ci_bad &= ci_beyond(c, 0.0, d)
            continue
        p = ch.relative if kind == "relative" else ch.absolute
        c = (ch.relative_ci if kind == "relative" else ch.absolute_ci) or (p, p)
        point_bad &= beyond(p, thr, d)
        ci_bad &= ci_beyond(c, thr, d)
    limit_text = " and ".join(
        (f"{'+-' if d == 'band' else ('-' if d == 'higher_is_better' else '+')}{limit.relative * 100:g}%"
         if k == "relative" else
         f"{'+-' if d == 'band' else ('-' if d == 'higher_is_better' else '+')}{fmt(limit.absolute, chk.unit)}")
        for k in kinds)
    if ci_bad:
        return chk.set("fail", f"{what} {delta}: the whole interval is past the limit {limit_text}")
    if point_bad:
        return chk.set("warn", f"{what} {delta}: past the limit {limit_text}, but the interval reaches "
                               "back inside it (not conclusive; rerun or add repeats)")
    return chk.set("pass", f"{what} {delta}, within {limit_text}")


def _describe_change(chk: Check, ch: Change, kind: str, ci) -> str:
    if kind == "relative":
        text = f"{pct(ch.relative)} ({fmt(ch.baseline, chk.unit)} -> {fmt(ch.current, chk.unit)})"
        if ci is not None:
            text += f", CI {pct(ci[0])}..{pct(ci[1])}"
    else:
        text = f"{signed(ch.absolute, chk.unit)} ({fmt(ch.baseline, chk.unit)} -> {fmt(ch.current, chk.unit)})"
        if ci is not None:
            text += f", CI {signed(ci[0], chk.unit)}..{signed(ci[1], chk.unit)}"
    return text


def judge_level(chk: Check, value: float, limit: Limit, what: str) -> tuple[str, str] | None:
    """(status, reason) against the limits max/min on the current value alone; None when neither is set.
    On a failure the check's threshold fields name the limit that was crossed."""
    if limit.max is None and limit.min is None:
        return None
    if limit.max is not None and value > limit.max:
        chk.threshold, chk.threshold_kind = limit.max, "absolute"
        return "fail", f"{what} {fmt(value, chk.unit)} is above the limit {fmt(limit.max, chk.unit)}"
    if limit.min is not None and value < limit.min:
        chk.threshold, chk.threshold_kind = limit.min, "absolute"
        return "fail", f"{what} {fmt(value, chk.unit)} is below the limit {fmt(limit.min, chk.unit)}"
    bounds = []
    if limit.min is not None:
        bounds.append(f">= {fmt(limit.min, chk.unit)}")
    if limit.max is not None:
        bounds.append(f"<= {fmt(limit.max, chk.unit)}")
    return "pass", f"{what} {fmt(value, chk.unit)} is within {' and '.join(bounds)}"


def cap_severity(chk: Check, limit: Limit) -> Check:
    if limit.severity == "warn" and chk.status == "fail":
        chk.status = "warn"
        chk.reason += " (severity: warn)"
    elif limit.severity == "info" and chk.status in ("fail", "warn"):
        chk.status = "pass"
        chk.reason += " (severity: info)"
    return chk


def conclude(chk: Check, limit: Limit, status: str, reasons: list[str], level: tuple[str, str] | None,
             nothing: str) -> Check:
    """Fold a level judgment (judge_level's result, or None) into the status and reasons a check
    gathered, then set the check, or skip it with `nothing` when no criterion applied."""
    if level is not None:
        if level[0] == "fail":
            status, reasons = "fail", [level[1]] + reasons
        else:
            reasons = reasons + [level[1]]
    if not reasons:
        return chk.skip(nothing)
    chk.set(status, "; ".join(reasons))
    return cap_severity(chk, limit)
