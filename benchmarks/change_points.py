"""Change-point libraries compared on histories shaped like ours: which one `canary history analyze` uses.

Synthetic histories of N commits (default 40), one value per commit, as the index keeps them: the median
step time of a run, whose run-to-run noise on this machine is 5-15% (docs/history.md); memory nearly
noiseless; final loss exact. Scenarios, each over many seeds (default 100):
  noise   pure noise                              -> false-positive rate (any change point at all)
  step    +15% at commit 25                       -> detected (a change point within +-2), location error
  drift   +3% at each of commits 20..24 (+15.9%)   -> detected (a change point within 19..26); for ours,
                                                     how often it is called drift
  exact   noise-free, +2% at commit 25            -> the loss / memory case
Methods:
  canary   canary_runner.history.detect (ruptures Binseg, l2, calibrated penalty; step vs drift; p < 0.01)
  pelt     ruptures PELT on the same scaled series and penalty (no gates): the same detector, slower
  edm      MongoDB signal-processing-algorithms e_divisive (E-divisive means, permutation test, p 0.01)
  otava    Apache Otava compute_change_points (Hunter: E-divisive split + t-test merge, p 0.001)

signal-processing-algorithms (numpy<2, gevent, setuptools<71) and apache-otava (numpy==2.2.*,
scipy<1.17, BigQuery, Postgres and Slack clients) cannot be installed beside our pinned numpy 2.4 and
scipy 1.17; `--install` puts them, without their dependencies, into .cache/change-point-libs (their
detection code runs on our numpy as is); without it a method whose library is missing is skipped.

    python benchmarks/change_points.py [--seeds 100] [--n 40] [--install] [--methods canary pelt edm otava]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SIDE = REPO / ".cache" / "change-point-libs"
SIDE_PACKAGES = ["signal-processing-algorithms==2.1.6", "apache-otava==0.8.0", "structlog", "more-itertools"]
NOISE = (0.02, 0.05, 0.10, 0.15)


def scenario(kind: str, rng, n: int, sigma: float) -> np.ndarray:
    t = np.arange(n)
    shape = {"noise": np.ones(n), "step": np.where(t >= 25, 1.15, 1.0),
             "drift": 1.03 ** np.clip(t - 19, 0, 5), "exact": np.where(t >= 25, 1.02, 1.0)}[kind]
    return shape if kind == "exact" else shape * (1 + rng.normal(0, sigma, n))


# -- methods: each returns [(start index, kind)] ----------------------------------------------------------
def m_canary(x):
    from canary_runner.history.detect import detect_series

    return [(f["start"], f["kind"]) for f in detect_series(x)]


def m_pelt(x):
    import ruptures

    from canary_runner.history.detect import MIN_SIZE, NOISE_FLOOR, PENALTY_PER_LOG_N, noise_scale

    z = (x - np.median(x)) / noise_scale(x, NOISE_FLOOR)
    cuts = ruptures.Pelt(model="l2", min_size=MIN_SIZE, jump=1).fit(z.reshape(-1, 1)).predict(
        pen=PENALTY_PER_LOG_N * math.log(len(x)))
    return [(c, "step") for c in cuts if c < len(x)]


def m_edm(x):
    from signal_processing_algorithms.energy_statistics import energy_statistics

    return [(int(c), "step") for c in energy_statistics.e_divisive(x, pvalue=0.01, permutations=100)]


def m_otava(x):
    from otava.analysis import compute_change_points

    cps, _ = compute_change_points(list(map(float, x)), window_len=50, max_pvalue=0.001)
    return [(int(c.index), "step") for c in cps]


METHODS = {"canary": (m_canary, "ruptures"), "pelt": (m_pelt, "ruptures"),
           "edm": (m_edm, "signal_processing_algorithms"), "otava": (m_otava, "otava")}


def available(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def install_side() -> None:
    SIDE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(SIDE),
                    *SIDE_PACKAGES], check=True)


def evaluate(method, kind: str, sigma: float, seeds: int, n: int) -> dict:
    hits, loc_err, extra, drift_named, elapsed = 0, [], 0, 0, 0.0
    for seed in range(seeds):
        x = scenario(kind, np.random.default_rng(seed), n, sigma)
        t0 = time.perf_counter()
        found = method(x)
        elapsed += time.perf_counter() - t0
        if kind == "noise":
            hits += bool(found)
            continue
        lo, hi = (23, 27) if kind in ("step", "exact") else (19, 26)
        near = [(s, k) for s, k in found if lo <= s <= hi]
        hits += bool(near)
        extra += len(found) - min(len(near), 1)
        if near:
            loc_err.append(min(abs(s - (25 if kind != "drift" else 20)) for s, _ in near))
            drift_named += any(k == "drift" for _, k in near)
    return {"rate": hits / seeds, "loc": float(np.mean(loc_err)) if loc_err else math.nan,
            "extra": extra / seeds, "drift_named": drift_named / max(hits, 1), "ms": 1000 * elapsed / seeds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--n", type=int, default=40, help="commits per history")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--install", action="store_true",
                        help=f"pip install {' '.join(SIDE_PACKAGES)} --no-deps into {SIDE.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if args.install:
        install_side()
    if SIDE.is_dir():
        sys.path.append(str(SIDE))
    methods = []
    for name in args.methods:
        fn, module = METHODS[name]
        if available(module):
            methods.append((name, fn))
        else:
            print(f"skip {name}: {module} is not installed (run with --install to put it in {SIDE})")
    print(f"{args.seeds} seeds, {args.n} commits per history; noise = relative sd of each commit's value\n")
    header = (f"{'method':8} {'noise':>5} | {'FP rate':>7} | {'step found':>10} {'loc err':>7} {'extra':>5} | "
              f"{'drift found':>11} {'as drift':>8} {'extra':>5} | {'exact 2%':>8} | {'ms/series':>9}")
    print(header)
    print("-" * len(header))
    for name, fn in methods:
        for sigma in NOISE:
            r = {k: evaluate(fn, k, sigma, args.seeds, args.n) for k in ("noise", "step", "drift")}
            ex = evaluate(fn, "exact", 0.0, 1, args.n)
            ms = np.mean([v["ms"] for v in r.values()])
            named = f"{r['drift']['drift_named']:8.0%}" if name == "canary" else f"{'-':>8}"
            print(f"{name:8} {sigma:5.0%} | {r['noise']['rate']:7.1%} | {r['step']['rate']:10.0%} "
                  f"{r['step']['loc']:7.2f} {r['step']['extra']:5.2f} | {r['drift']['rate']:11.0%} {named} "
                  f"{r['drift']['extra']:5.2f} | {'found' if ex['rate'] else 'missed':>8} | {ms:9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
