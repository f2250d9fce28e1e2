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

_BLOCK = 256  # resamples per vectorised block
_BLOCK_ELEMENTS = 1 << 20  # at most this many samples per block: ~8 MB per array however long the run
# Theil-Sen takes the median of the slopes of all n(n-1)/2 pairs: exact up to this many pairs (about
# 1,400 points, far beyond a smoke or perf run), then a fixed-seed random sample of this many pairs,
# so a trend costs O(n log n) time and bounded memory on a run of any length.
_EXACT_PAIRS = 1_000_000
_SAMPLED_PAIRS = 1_000_000


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
    # Fewer resamples per block on long runs keeps memory bounded; short runs keep the block (and so
    # the exact random stream, and the verdicts) they always had.
    block = max(1, min(_BLOCK, _BLOCK_ELEMENTS // (len(runs) * nmax)))
    # With runs of equal length nothing is padded, so the faster non-NaN statistic gives the same value.
    padded_any = bool((lens < nmax).any())
    for start in range(0, n, block):
        b = min(block, n - start)
        if len(runs) > 1:
            pick = rng.integers(0, len(runs), size=(b, len(runs)))
        else:
            pick = np.zeros((b, 1), dtype=int)
        length = lens[pick]  # (b, R)
        pos = np.floor(rng.random((b, pick.shape[1], nmax)) * length[..., None]).astype(int)
        vals = padded[pick[..., None], pos]
        if padded_any:
            vals[np.arange(nmax)[None, None, :] >= length[..., None]] = np.nan
            out[start:start + b] = _stat(vals.reshape(b, -1), stat, axis=1)
        else:
            flat = vals.reshape(b, -1)
            out[start:start + b] = np.median(flat, axis=1) if stat == "median" else np.mean(flat, axis=1)
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
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    if np.ptp(x) == 0:
        return None
    if len(x) * (len(x) - 1) // 2 <= _EXACT_PAIRS:
        from scipy.stats import theilslopes

        res = theilslopes(y, x, alpha=confidence)
        slope, intercept, lo, hi = float(res[0]), float(res[1]), float(res[2]), float(res[3])
    else:
        slope, intercept, lo, hi = _sampled_theil_sen(x, y, confidence)
    return Trend(slope, intercept, (lo, hi), intercept + slope * x[0], intercept + slope * x[-1], float(x[-1] - x[0]))


def _repeat_term(a: np.ndarray) -> float:
    """sum k(k-1)(2k+5) over the sizes k of the groups of tied values (Sen 1968, eq. 2.6)."""
    k = np.unique(a, return_counts=True)[1].astype(float)
    return float(np.sum(k * (k - 1) * (2 * k + 5)))


def _sampled_theil_sen(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """Theil-Sen as scipy computes it, over a fixed-seed uniform sample of the pairs instead of all
    of them: the slope is the sample's median, the interval the sample's quantiles at the fractions
    where scipy takes its order statistics (Sen's normal approximation to Kendall's tau), and the
    intercept median(y) - slope * median(x). The sample's quantiles are within ~0.001 (in rank
    fraction) of the full set's, well inside the interval's own width."""
    from scipy.stats import norm

    n = len(x)
    rng = np.random.default_rng(0)
    i = rng.integers(0, n, _SAMPLED_PAIRS)
    j = rng.integers(0, n, _SAMPLED_PAIRS)
    keep = x[i] != x[j]  # scipy leaves out pairs with equal x too
    i, j = i[keep], j[keep]
    slopes = np.sort((y[j] - y[i]) / (x[j] - x[i]))
    if len(slopes) == 0:
        return math.nan, math.nan, math.nan, math.nan
    slope = float(np.median(slopes))
    intercept = float(np.median(y) - slope * np.median(x))
    # The number of pairs with distinct x, and sigma of Kendall's S, as scipy.stats.theilslopes.
    _, counts = np.unique(x, return_counts=True)
    total = n * (n - 1) / 2 - float(np.sum(counts * (counts - 1) / 2))
    sigma = math.sqrt((n * (n - 1) * (2 * n + 5) - _repeat_term(x) - _repeat_term(y)) / 18.0)
    z = abs(float(norm.ppf((1 - confidence) / 2 if confidence > 0.5 else confidence / 2)))
    # scipy's order statistics (0-based) into the sorted slopes, as fractions of the last index.
    lo_frac = min(max((round((total - z * sigma) / 2) - 1) / (total - 1), 0.0), 1.0)
    hi_frac = min(max(round((total + z * sigma) / 2) / (total - 1), 0.0), 1.0)
    lo, hi = np.quantile(slopes, [lo_frac, hi_frac])
    return slope, intercept, float(lo), float(hi)


def window_size(n: int, fraction: float, minimum: int = 3) -> int:
    return min(n, max(minimum, math.ceil(fraction * n)))


def robust_scale(x: np.ndarray) -> float:
    """1.4826 x MAD: the standard deviation for normal data, unmoved by a few outliers."""
    if len(x) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))
