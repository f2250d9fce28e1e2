"""Sequential A/B decision: after each base/head pair, decide on the pairs so far or ask for another.

The unit of replication is the pair: each pair gives one log ratio, log(head statistic / base
statistic), of per-run statistics (a run's median step time, its peak memory). The change is
exp(mean log ratio) - 1, with a t interval over the pairs.

Looking after every pair and stopping at the first clear answer inflates the error rates of a fixed
interval (each look is another chance of a wrong call). The looks therefore share the error budget
with a Pocock-type boundary: one nominal level per look, chosen so that the chance that ANY look
from `min_pairs` to `max_pairs` crosses is `alpha`. The t statistic's law under the null does not
depend on the noise level, so the nominal level is found exactly (up to Monte Carlo error) by
simulating normal pairs once per design. The tests check the rate by simulation.

Decisions, for a change where higher is worse (step time, memory) and a threshold t > 0:
    fail     the whole interval is above +t           (clearly worse than allowed)
    pass     the whole interval is below +t           (not worse than allowed)
    continue otherwise; at the last pair, or out of time, it is `unknown` (a warning, with the interval)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as sps

SIMULATIONS = 40_000


@dataclass(frozen=True)
class Decision:
    state: str  # "fail" | "pass" | "continue" | "unknown"
    pairs: int
    change: float | None  # relative, exp(mean log ratio) - 1
    ci: tuple[float, float] | None  # relative, at the per-look level
    level: float  # confidence of the per-look interval (two-sided)

    def to_json(self) -> dict:
        return {"state": self.state, "pairs": self.pairs, "change": self.change,
                "ci": list(self.ci) if self.ci else None, "level": self.level}


@lru_cache(maxsize=64)
def per_look_alpha(alpha: float, min_pairs: int, max_pairs: int) -> float:
    """The one-sided nominal level of each look such that P(any look from min_pairs to max_pairs
    crosses) = alpha when the true change sits exactly on the threshold (Pocock-type, by simulation)."""
    if min_pairs < 2 or max_pairs < min_pairs:
        raise ValueError(f"need 2 <= min_pairs <= max_pairs, got {min_pairs}, {max_pairs}")
    if min_pairs == max_pairs:
        return alpha
    rng = np.random.default_rng(12345)
    x = rng.standard_normal((SIMULATIONS, max_pairs))
    n = np.arange(1, max_pairs + 1)
    csum, csq = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    mean = csum / n
    looks = slice(min_pairs - 1, max_pairs)
    var = (csq[:, looks] - n[looks] * mean[:, looks] ** 2) / (n[looks] - 1)
    t = mean[:, looks] / np.sqrt(np.maximum(var, 1e-300) / n[looks])
    # One-sided p-value at each look; the design crosses when the smallest one is below the level.
    p = sps.t.sf(t, df=n[looks] - 1)
    return float(np.quantile(p.min(axis=1), alpha))


def decide(log_ratios: list[float], threshold: float, alpha: float, min_pairs: int, max_pairs: int,
           final: bool = False) -> Decision:
    """The decision after len(log_ratios) pairs. `final`: no further pair will run (budget spent)."""
    n = len(log_ratios)
    a = per_look_alpha(alpha, min_pairs, max_pairs)
    level = 1 - 2 * a
    if n < min_pairs:
        return Decision("unknown" if final else "continue", n, _point(log_ratios), None, level)
    x = np.asarray(log_ratios, dtype=float)
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(sps.t.ppf(1 - a, df=n - 1)) * sd / math.sqrt(n)
    lo, hi = math.expm1(mean - half), math.expm1(mean + half)
    if lo > threshold:
        state = "fail"
    elif hi < threshold:
        state = "pass"
    else:
        state = "unknown" if (final or n >= max_pairs) else "continue"
    return Decision(state, n, math.expm1(mean), (lo, hi), level)


def _point(log_ratios: list[float]) -> float | None:
    return math.expm1(sum(log_ratios) / len(log_ratios)) if log_ratios else None
