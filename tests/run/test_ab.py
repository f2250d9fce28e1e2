"""`canary ab`: base and head of a change run alternately on this machine and decided pair by pair.

A real two-commit git repository made from the example user repository: the head commit slows the
team's trainer (a callback that waits 50 ms a step, as a synchronous metrics upload would). Both sides
run through `canary run` in fresh processes, as in CI. Short runs (6 steps) keep the test affordable.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from canary_runner.compare.engine import validate
from canary_runner.compare.sequential import decide, per_look_alpha

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "user-repo"
SHORT = ["--set", "train.max_steps=6", "--set", "train.warmup_steps=2"]
SLOW_HOOK = '''
        import time

        time.sleep(0.05)  # uploads the step's metrics synchronously
'''


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args], cwd=repo,
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """base commit: the example as shipped; head commit: the slower callback."""
    root = tmp_path_factory.mktemp("ab") / "repo"
    shutil.copytree(EXAMPLE, root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "base")
    hooks = root / "acme_rlhf" / "hooks.py"
    text = hooks.read_text()
    anchor = "        if logs is not None:\n"
    assert anchor in text, "the example's hooks.py changed: update SLOW_HOOK's anchor"
    hooks.write_text(text.replace(anchor, SLOW_HOOK.lstrip("\n") + anchor))
    git(root, "commit", "-q", "-am", "upload metrics every step")
    return root


def ab(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "canary_runner.cli", "ab", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def test_a_slower_head_commit_fails_on_pairs_measured_on_this_machine(repo, tmp_path):
    out = tmp_path / "ab"
    proc = ab("canary/dpo.yaml", "--base", "HEAD~1", "--head", "HEAD", "-o", out, "--pairs", 3, "--min-pairs", 3,
              *SHORT, cwd=repo)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    doc = json.loads((out / "comparison.json").read_text())
    assert not validate(doc)
    step = next(c for c in doc["checks"] if c["id"] == "perf.step_time")
    assert step["status"] == "fail" and step["reason"].startswith("A/B on this runner, 3 pair(s)")
    info = doc["ab"]
    base_sha, head_sha = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    assert (info["base"]["sha"], info["head"]["sha"]) == (base_sha, head_sha)
    assert info["pairs"] == 3 and info["stopped"] == "decided after 3 pair(s) (the minimum)"
    ratios = info["decisions"]["step_time"]["ratios"]
    assert len(ratios) == 3 and min(ratios) > 1.5, ratios
    # ABBA: each side ran once per pair, the base side from its own tree (the worktree is gone afterwards)
    assert [Path(p).name for p in info["runs"]["base"]] == ["pair-01", "pair-02", "pair-03"]
    assert not (out / "trees" / "base").exists()
    assert "worktree" not in git(repo, "worktree", "list").split("\n", 1)[-1]
    # health and curves are still checked against the base runs
    assert doc["baseline"]["runs"] == 3 and doc["current"]["runs"] == 3


def test_a_config_only_in_the_head_is_a_new_canary_without_a_verdict(repo, tmp_path):
    (repo / "canary" / "dpo_copy.yaml").write_text((repo / "canary" / "dpo.yaml").read_text()
                                                    .replace("name: acme_dpo", "name: acme_dpo_copy"))
    try:
        out = tmp_path / "ab"
        proc = ab("canary/dpo_copy.yaml", "--base", "HEAD", "--head", ".", "-o", out, *SHORT, cwd=repo)
        assert proc.returncode == 0, proc.stderr[-3000:]
        doc = json.loads((out / "comparison.json").read_text())
        assert doc["verdict"] == "no-baseline" and doc["ab"]["new_canary"] is True
        assert "new canary" in doc["ab"]["stopped"] and "new canary" in proc.stderr
    finally:
        (repo / "canary" / "dpo_copy.yaml").unlink()


@pytest.mark.parametrize("args, said", [
    (["--base", "no-such-branch"], "neither a directory nor a commit"),
    (["--base", "HEAD", "--min-pairs", "1"], "need 2 <= min-pairs <= pairs"),
    (["--base", "HEAD", "--set", "train.max_steps=-1"], "train.max_steps"),
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
