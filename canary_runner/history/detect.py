"""Change points on main: per metric, where a history index's series (oldest first) shifted, and how.

    for cp in detect(index):          # -> [ChangePoint(metric, commit, index, before, after, change, ...)]
        print(cp.describe())

How (docs/history.md, "Change points", has the measurements behind each number):
1. Acknowledged commits (Index.acked) split a metric's series into epochs: an acked commit starts a new
   reference, detection restarts there, and the acknowledged shift itself is not reported.
2. Within an epoch the series is scaled by its noise, estimated robustly from consecutive differences
   (MAD of first differences / sqrt 2, so one step or a slow drift barely moves it), floored at
   NOISE_FLOOR of the level (memory and loss are nearly or exactly deterministic).
3. ruptures' binary segmentation (cost "l2", a change in mean) finds the segment boundaries, with a
   penalty PENALTY_PER_LOG_N * log(n) per boundary, calibrated on pure noise to a false-positive rate.
4. Consecutive boundaries in one direction are one transition. Over the window around it two shapes are
   fitted by least squares: the steps at the boundaries found, and one ramp (flat, a straight line over
   >= MIN_RAMP commits, flat); the ramp wins by BIC (known unit variance: SSE + parameters * log m). A ramp is
   *drift* (reported from its first to its last moved commit), otherwise each boundary is a *step*.
5. A change is reported when its p-value is below `alpha` and its size at least `min_change` of the level.
   significance is a two-sided p-value: steps, Welch's t-test of the segment before against the segment
   after (standard deviations floored at the noise); drift, the t-test of the ramp's height in its
   least-squares fit (residual sd floored at the noise; the ramp's ends taken as fitted, so optimistic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import ruptures
from scipy import stats

from .index import METRICS, Index

# Calibrated in benchmarks/change_points.py: on pure Gaussian noise (n = 20..200) binary segmentation
# with this penalty and the p-value gate reports a change point in <= 1% of series (docs/history.md).
PENALTY_PER_LOG_N = 4.0
NOISE_FLOOR = 0.002      # relative: below 0.2% of the level, differences are treated as noise-free
MIN_SIZE = 2             # a segment has >= 2 commits: one outlier run is not a change point
MIN_RAMP = 3             # drift moves >= 3 commits: a ramp over 2 is a step with one noisy point
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_CHANGE = 0.01

# Which way is worse: True when an increase is a regression.
WORSE_WHEN_UP = {"step_time_s": True, "tokens_per_s": False, "peak_memory_mb": True, "final_loss": True}
LABELS = {"step_time_s": "step time", "tokens_per_s": "tokens/s", "peak_memory_mb": "peak memory",
          "final_loss": "final loss"}


@dataclass
class Settings:
    alpha: float = DEFAULT_ALPHA            # the largest p-value reported
    min_change: float = DEFAULT_MIN_CHANGE  # the smallest relative shift reported
    penalty_per_log_n: float = PENALTY_PER_LOG_N
    noise_floor: float = NOISE_FLOOR


@dataclass
class ChangePoint:
    metric: str
    commit: str          # the first commit after the change (drift: the first commit of the ramp)
    index: int           # that commit's position in Index.entries (oldest first)
    before: float        # mean of the segment before the change
    after: float         # mean of the segment after
    change: float | None  # (after - before) / |before|; None when before is 0
    significance: float  # two-sided p-value (steps: Welch's t-test; drift: t-test of the ramp's height)
    kind: str            # "step" | "drift"
    last_commit: str = ""  # drift: the last commit of the ramp (a step: == commit)
    last_index: int = -1

    def to_json(self) -> dict:
        return {"metric": self.metric, "commit": self.commit, "index": self.index, "before": self.before,
                "after": self.after, "change": self.change, "significance": self.significance, "kind": self.kind}

    @property
    def worse(self) -> bool | None:
        """True when the shift is a regression for this metric, False an improvement, None unknown."""
        up = WORSE_WHEN_UP.get(self.metric)
        return None if up is None or self.after == self.before else (self.after > self.before) == up

    def describe(self) -> str:
        label = LABELS.get(self.metric, self.metric)
        verdict = {True: "worse", False: "better", None: "changed"}[self.worse]
        size = f"{self.change:+.1%}" if self.change is not None else f"{self.after - self.before:+.4g}"
        where = (f"commits {self.commit[:12]}..{self.last_commit[:12]} (#{self.index}..#{self.last_index})"
                 if self.kind == "drift" else f"commit {self.commit[:12]} (#{self.index})")
        return (f"{label} {verdict} by {size} ({self.before:.4g} -> {self.after:.4g}), {self.kind} at {where}, "
                f"p = {self.significance:.2g}")


def noise_scale(x: np.ndarray, floor: float) -> float:
    """Robust run-to-run noise of `x`: MAD of first differences / sqrt 2 (a normal's sigma), floored."""
    level = float(np.median(np.abs(x))) if len(x) else 0.0
    sigma = 0.0
    if len(x) >= 3:
        d = np.diff(x)
        sigma = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
    return max(sigma, floor * level, 1e-12)


def boundaries(z: np.ndarray, penalty_per_log_n: float) -> list[int]:
    """Interior segment boundaries of a unit-noise series (each the index of the first point after)."""
    n = len(z)
    if n < 2 * MIN_SIZE:
        return []
    algo = ruptures.Binseg(model="l2", min_size=MIN_SIZE, jump=1).fit(z.reshape(-1, 1))
    return [b for b in algo.predict(pen=penalty_per_log_n * math.log(n)) if b < n]


def _sse_steps(z: np.ndarray, cuts: list[int]) -> float:
    edges = [0, *cuts, len(z)]
    return float(sum(((z[a:b] - z[a:b].mean()) ** 2).sum() for a, b in zip(edges, edges[1:]) if b > a))


def best_ramp(z: np.ndarray) -> tuple[float, int, int]:
    """The flat-ramp-flat shape fitted best (least squares, level and height free): (SSE, t1, t2), where
    t1 is the last point at the old level and t2 the first at the new one, t2 - t1 >= MIN_RAMP."""
    m = len(z)
    t = np.arange(m, dtype=float)
    best = (math.inf, 0, m - 1)
    zc = z - z.mean()
    total = float((zc ** 2).sum())
    stride = max(1, m // 60)  # long windows: a coarser grid keeps this O(3600) fits
    for t1 in range(0, m - MIN_RAMP, stride):
        for t2 in range(t1 + MIN_RAMP, m, stride):
            g = np.clip((t - t1) / (t2 - t1), 0.0, 1.0)
            gc = g - g.mean()
            sgg = float((gc ** 2).sum())
            sse = total - float((gc @ zc) ** 2) / sgg if sgg > 0 else total
            if sse < best[0]:
                best = (sse, t1, t2)
    return best


def _welch_p(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    sa, sb = max(float(a.std(ddof=1)) if len(a) > 1 else 0.0, sigma), max(float(b.std(ddof=1)) if len(b) > 1 else 0.0, sigma)
    res = stats.ttest_ind_from_stats(float(a.mean()), sa, len(a), float(b.mean()), sb, len(b), equal_var=False)
    p = float(res.pvalue)
    return p if math.isfinite(p) else 1.0


def _ramp_p(x: np.ndarray, t1: int, t2: int, sigma: float) -> float:
    """Two-sided p-value of the ramp's height (t-test of the slope of x on the ramp shape, least squares;
    residual sd floored at the noise). Given t1 and t2 as fitted, so somewhat optimistic."""
    m = len(x)
    g = np.clip((np.arange(m) - t1) / (t2 - t1), 0.0, 1.0)
    gc = g - g.mean()
    sgg = float((gc ** 2).sum())
    if m < 4 or sgg <= 0:
        return 1.0
    height = float(gc @ (x - x.mean())) / sgg
    resid = x - x.mean() - height * gc
    s2 = max(float((resid ** 2).sum()) / (m - 2), sigma ** 2)
    p = float(2 * stats.t.sf(abs(height) / math.sqrt(s2 / sgg), m - 2))
    return p if math.isfinite(p) else 1.0


def _rel(before: float, after: float) -> float | None:
    return (after - before) / abs(before) if before else None


def detect_series(x: np.ndarray, settings: Settings | None = None) -> list[dict]:
    """Change points of one epoch of one metric, positions relative to `x`:
    [{"kind", "start", "end", "before", "after", "significance"}] with start..end the moved points."""
    s = settings or Settings()
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2 * MIN_SIZE:
        return []
    sigma = noise_scale(x, s.noise_floor)
    z = (x - np.median(x)) / sigma
    cuts = boundaries(z, s.penalty_per_log_n)
    # Group consecutive boundaries shifting the same way: one transition, a step or a ramp.
    edges = [0, *cuts, n]
    means = [float(z[a:b].mean()) for a, b in zip(edges, edges[1:])]
    groups: list[list[int]] = []
    for i, c in enumerate(cuts):
        up = means[i + 1] > means[i]
        if groups and (means[i] > means[i - 1]) == up:
            groups[-1].append(c)
        else:
            groups.append([c])
    found = []
    for g in groups:
        gi = cuts.index(g[0])
        lo, hi = edges[gi], edges[gi + len(g) + 1]
        w = z[lo:hi]
        m = len(w)
        bic_steps = _sse_steps(w, [c - lo for c in g]) + (2 * len(g) + 1) * math.log(m)
        sse_r, t1, t2 = best_ramp(w) if m > MIN_RAMP else (math.inf, 0, 0)
        if sse_r + 4 * math.log(m) < bic_steps:
            before, after = x[lo:lo + t1 + 1], x[lo + t2:hi]
            found.append({"kind": "drift", "start": lo + t1 + 1, "end": lo + t2, "before": float(before.mean()),
                          "after": float(after.mean()), "significance": _ramp_p(x[lo:hi], t1, t2, sigma)})
            continue
        seg = [lo, *g, hi]
        for a, c, b in zip(seg, seg[1:], seg[2:]):
            found.append({"kind": "step", "start": c, "end": c, "before": float(x[a:c].mean()),
                          "after": float(x[c:b].mean()), "significance": _welch_p(x[a:c], x[c:b], sigma)})
    return [f for f in found if f["significance"] < s.alpha
            and abs(_rel(f["before"], f["after"]) if f["before"] else math.inf) >= s.min_change]


def detect(index: Index, metrics: tuple[str, ...] | list[str] = METRICS, settings: Settings | None = None) -> list[ChangePoint]:
    """Change points of each metric over `index`, oldest first per metric; acked commits reset the reference."""
    positions = {id(e): i for i, e in enumerate(index.entries)}
    out: list[ChangePoint] = []
    for metric in metrics:
        series = index.series(metric)
        starts = [0] + [i for i, (e, _) in enumerate(series) if i > 0 and index.acked(e.sha, metric)]
        for a, b in zip(starts, [*starts[1:], len(series)]):
            epoch = series[a:b]
            for f in detect_series(np.array([v for _, v in epoch]), settings):
                first, last = epoch[f["start"]][0], epoch[f["end"]][0]
                out.append(ChangePoint(metric=metric, commit=first.sha, index=positions[id(first)],
                                       before=f["before"], after=f["after"], change=_rel(f["before"], f["after"]),
                                       significance=f["significance"], kind=f["kind"], last_commit=last.sha,
                                       last_index=positions[id(last)]))
    return out
