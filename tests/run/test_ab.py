"""`canary ab`: base and head of a change run alternately on this machine and decided pair by pair.

Bad input here, and the sequential decision's error rates by simulation. A real A/B run end to end (a
two-commit repository, a shallow checkout, a slower head) is tests/action/test_ab.py.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ab_repo import make_repo
from canary_runner.compare.sequential import decide, per_look_alpha


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ab") / "repo"
    make_repo(root)
    return root


def ab(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "canary_runner.cli", "ab", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.parametrize("args, said", [
    (["--base", "no-such-branch"], "neither a directory nor a commit"),
    (["--base", "HEAD", "--min-pairs", "1"], "need 2 <= min-pairs <= pairs"),
    (["--base", "HEAD", "--set", "train.max_steps=-1"], "train.max_steps"),
    (["--base", "HEAD", "--budget", "0"], "--budget 0.0: give a positive number of seconds"),
    (["--base", "HEAD", "--budget", "nan"], "give a positive number of seconds"),
])
def test_bad_input_is_exit_2_before_anything_runs(repo, tmp_path, args, said):
    out = tmp_path / "ab"
    proc = ab("canary/dpo.yaml", *args, "-o", out, cwd=repo)
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not list(out.glob("*/pair-*"))


# -- the sequential decision, by simulation ----------------------------------------------------------------


def simulate(true_change: float, sd: float, sims: int = 3000, threshold: float = 0.05, alpha: float = 0.01,
             min_pairs: int = 3, max_pairs: int = 10, seed: int = 0, heavy: bool = False) -> dict:
    """Shares of fail/pass/unknown over `sims` sequential A/B runs with normal (or t3) pair noise."""
    rng = np.random.default_rng(seed)
    counts = {"fail": 0, "pass": 0, "unknown": 0}
    for _ in range(sims):
        ratios = []
        for _ in range(max_pairs):
            e = rng.standard_t(3) / math.sqrt(3) if heavy else rng.standard_normal()
            ratios.append(math.log1p(true_change) + sd * e)
            d = decide(ratios, threshold, alpha, min_pairs, max_pairs)
            if d.state != "continue":
                break
        counts[d.state] += 1
    return {k: v / sims for k, v in counts.items()}


@pytest.mark.parametrize("sd", [0.01, 0.05])
def test_looking_after_every_pair_keeps_the_nominal_false_fail_rate(sd):
    # On the threshold itself (the hardest null), the chance that ANY look fails stays at alpha = 1%,
    # where a fixed 98% interval checked after every pair would fail several times as often.
    rates = simulate(0.05, sd)
    assert rates["fail"] <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 3000), rates
    naive = 0
    rng = np.random.default_rng(1)
    from scipy import stats as sps

    for _ in range(3000):
        x = math.log1p(0.05) + sd * rng.standard_normal(10)
        for n in range(3, 11):
            m, s = x[:n].mean(), x[:n].std(ddof=1)
            if m - sps.t.ppf(0.99, n - 1) * s / math.sqrt(n) > math.log1p(0.05):
                naive += 1
                break
    assert naive / 3000 > 2 * rates["fail"] + 0.01


def test_heavy_tailed_pair_noise_stays_near_the_nominal_rate():
    assert simulate(0.05, 0.03, heavy=True)["fail"] <= 0.015


def test_clear_regressions_stop_early_and_an_unchanged_head_passes():
    assert simulate(0.15, 0.03)["fail"] >= 0.95  # +15% against a 5% limit, 3% pair noise
    assert simulate(0.10, 0.03)["fail"] + simulate(0.10, 0.03)["unknown"] >= 0.99  # +10% flagged
    aa = simulate(0.0, 0.03)
    assert aa["fail"] == 0 and aa["pass"] >= 0.8
    d = decide([math.log(1.5)] * 2 + [math.log(1.52)], 0.05, 0.01, 3, 10)
    assert d.state == "fail" and d.pairs == 3 and d.ci[0] > 0.4


def test_the_per_look_level_is_below_alpha_and_exact_with_one_look():
    assert per_look_alpha(0.01, 3, 3) == 0.01
    a = per_look_alpha(0.01, 3, 10)
    assert 0.01 / 8 < a < 0.01  # between Bonferroni over the 8 looks and no correction
