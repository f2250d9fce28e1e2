"""The statistics behind the verdicts: bootstrap intervals of a change, a rank test, robust trends.

Changes between baseline and current are estimated from per-step samples (or per-step values of a
late window), with a percentile bootstrap interval. With repeats the bootstrap is hierarchical:
each resample draws runs with replacement, then steps with replacement within every drawn run, so
the interval carries run-to-run noise as well as step-to-step noise (with one run per side it is the
ordinary two-sample bootstrap). Resampling uses a fixed seed: the same inputs give the same verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_BLOCK = 256  # resamples per vectorised block (bounds memory on long runs)


def finite_array(values) -> np.ndarray:
    out = np.asarray([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)], dtype=float)
    return out[np.isfinite(out)]


def _stat(x: np.ndarray, stat: str, axis=None):
    return np.nanmedian(x, axis=axis) if stat == "median" else np.nanmean(x, axis=axis)


def _resample(runs: list[np.ndarray], n: int, rng: np.random.Generator, stat: str) -> np.ndarray:
    """`n` bootstrap replicates of `stat` over the pooled samples of `runs` (hierarchical when several)."""
    lens = np.array([len(r) for r in runs])
    nmax = int(lens.max())
    padded = np.full((len(runs), nmax), np.nan)
    for i, r in enumerate(runs):
        padded[i, : len(r)] = r
    out = np.empty(n)
    for start in range(0, n, _BLOCK):
        b = min(_BLOCK, n - start)
        if len(runs) > 1:
            pick = rng.integers(0, len(runs), size=(b, len(runs)))
        else:
            pick = np.zeros((b, 1), dtype=int)
        length = lens[pick]  # (b, R)
        pos = np.floor(rng.random((b, pick.shape[1], nmax)) * length[..., None]).astype(int)
        vals = padded[pick[..., None], pos]
        vals[np.arange(nmax)[None, None, :] >= length[..., None]] = np.nan
        out[start:start + b] = _stat(vals.reshape(b, -1), stat, axis=1)
    return out


@dataclass
class Change:
    """A change of `stat` from baseline to current, with percentile intervals."""

    baseline: float
    current: float
    relative: float | None  # current / |baseline| - 1 (sign-aware), None when the baseline is ~0
    relative_ci: tuple[float, float] | None
    absolute: float
    absolute_ci: tuple[float, float] | None
    n_baseline: int
    n_current: int
    p_value: float | None = None


def relative_change(base: float, cur: float) -> float | None:
    if not (math.isfinite(base) and math.isfinite(cur)) or abs(base) < 1e-12:
        return None
    return (cur - base) / abs(base)


def bootstrap_change(base_runs, cur_runs, stat: str = "median", confidence: float = 0.95,
                     resamples: int = 2000, seed: int = 0, rank_test: bool = False) -> Change | None:
    """Point estimate and bootstrap interval of the change of `stat` (median or mean) of the pooled
    samples. `base_runs`/`cur_runs`: one sequence of samples per run. None when a side is empty."""
    base = [finite_array(r) for r in base_runs]
    cur = [finite_array(r) for r in cur_runs]
    base = [r for r in base if len(r)]
    cur = [r for r in cur if len(r)]
    if not base or not cur:
        return None
    b_all, c_all = np.concatenate(base), np.concatenate(cur)
    b, c = float(_stat(b_all, stat)), float(_stat(c_all, stat))
    rng = np.random.default_rng(seed)
    bb = _resample(base, resamples, rng, stat)
    cc = _resample(cur, resamples, rng, stat)
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    absolute_ci = tuple(float(v) for v in np.percentile(cc - bb, q))
    rel = relative_change(b, c)
    relative_ci = None
    if rel is not None and np.all(np.abs(bb) > 1e-12):
        relative_ci = tuple(float(v) for v in np.percentile((cc - bb) / np.abs(bb), q))
    p = None
    if rank_test and len(b_all) >= 2 and len(c_all) >= 2:
        from scipy.stats import mannwhitneyu

        if np.ptp(np.concatenate([b_all, c_all])) > 0:
            p = float(mannwhitneyu(c_all, b_all, alternative="two-sided").pvalue)
        else:
            p = 1.0
    return Change(b, c, rel, relative_ci, c - b, absolute_ci, len(b_all), len(c_all), p)


@dataclass
class Trend:
    slope: float
    intercept: float
    slope_ci: tuple[float, float]
    start: float  # fitted value at the first step
    end: float  # fitted value at the last step
    span: float  # last step - first step

    @property
    def rise(self) -> float:
        return self.end - self.start

    @property
    def rise_ci(self) -> tuple[float, float]:
        return self.slope_ci[0] * self.span, self.slope_ci[1] * self.span


def trend(steps, values, confidence: float = 0.95) -> Trend | None:
    """Theil-Sen line through (step, value) with the slope's confidence interval: robust to spikes
    and usable on a 5-step run, where a first-third vs last-third comparison has nothing to compare."""
    pts = [(float(s), float(v)) for s, v in zip(steps, values)
           if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(pts) < 5:
        return None
    from scipy.stats import theilslopes

    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    if np.ptp(x) == 0:
        return None
    res = theilslopes(y, x, alpha=confidence)
    slope, intercept, lo, hi = float(res[0]), float(res[1]), float(res[2]), float(res[3])
    return Trend(slope, intercept, (lo, hi), intercept + slope * x[0], intercept + slope * x[-1], float(x[-1] - x[0]))


def window_size(n: int, fraction: float, minimum: int = 3) -> int:
    return min(n, max(minimum, math.ceil(fraction * n)))


def robust_scale(x: np.ndarray) -> float:
    """1.4826 x MAD: the standard deviation for normal data, unmoved by a few outliers."""
    if len(x) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))
