"""A real history, end to end: a scripted sequence of commits in a temporary git repository, a real
embedded canary run at each, each pushed to a path: store with `canary baseline push --keep-history N`.
Five consecutive commits each add 2% step time (a TrainerCallback in the repository that paces the steps
with a sleep, so the scripted part dominates the machine's noise). Every PR comparison of a commit with
its parent passes (perf.step_time stays within its 20% limit), and `canary history analyze` reports the
drift over those five commits all the same."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from canary_runner.cli import main as canary
from canary_runner.config import load_config
from canary_runner.plugins import WORKSPACE_ENV, use_workspace
from canary_runner.runner import run

# The repository's callback paces the steps at one per BASE_STEP_S: the embedded step's own compute
# (~0.05 s; up to ~0.15 s on this 2-core machine shared with other jobs) hides under the pad, so the
# scripted +2% per commit is not drowned by the machine's 5-15% run-to-run noise (measured with the
# pacing: 0.2-0.3% between runs at a load average of 4.5).
BASE_STEP_S = 0.2
STEPS = 6             # 2 warm-up steps left out of the timing, 4 timed
FLAT_BEFORE, DRIFTING, FLAT_AFTER = 3, 5, 3
DRIFT_PER_COMMIT = 0.02

CALLBACK = '''"""This project's training step, as the test scripts it: a step every STEP_S (padded by a sleep)."""
import time

from transformers import TrainerCallback

STEP_S = {step_s!r}


class StepCost(TrainerCallback):
    # A metronome, not a fixed sleep after each step: a step that ends late (on a loaded machine a
    # sleep can overrun by a 4 ms scheduler tick) makes the next one shorter, so the median is STEP_S.
    # A step whose own work overran is not caught up on (by more than 10 ms): it would shorten the rest.
    def on_train_begin(self, args, state, control, **kwargs):
        self.next = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        target, now = self.next + STEP_S, time.perf_counter()
        self.next = target if now <= target + 0.01 else now
        time.sleep(max(0.0, self.next - now))
'''

CONFIG = f"""name: dpo_history
training_type: dpo
tier: smoke
seed: 42
model:
  name: embedded:tiny-llama
dataset:
  name: embedded:preference
train:
  max_steps: {STEPS}
  warmup_steps: 2
  per_device_batch_size: 2
  max_length: 32
  cpu_threads: 1    # two OpenMP threads waiting on each other turn a neighbour's load into 10x step times
dpo: {{}}
trainer:
  callbacks: ["stepcost:StepCost"]
"""


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def canary_run(repo, out):
    """One canary run of the repository as it is checked out (the callback re-imported: it changed)."""
    sys.modules.pop("stepcost", None)
    cfg = load_config(repo / "canary.yaml")
    record, code = run(cfg, out, config_path=str(repo / "canary.yaml"))
    assert code == 0, record.get("error")
    return record["summary"]["step_time_s"]["median"]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """The repository, the store and each commit's run directory, oldest first."""
    root = tmp_path_factory.mktemp("real-history")
    repo, store = root / "repo", root / "store"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "dev")
    (repo / "canary.yaml").write_text(CONFIG)
    mp = pytest.MonkeyPatch()
    mp.chdir(repo)                              # the run records this repository's HEAD as its git_sha
    mp.setattr(sys, "dont_write_bytecode", True)  # the callback changes within one second: never a stale .pyc
    mp.setattr(sys, "path", list(sys.path))      # use_workspace puts the repository first; undone after
    mp.setenv(WORKSPACE_ENV, str(repo))
    use_workspace(repo)
    runs, shas, times = [], [], []
    t0 = time.perf_counter()
    try:
        for k in range(FLAT_BEFORE + DRIFTING + FLAT_AFTER):
            added = min(max(k - FLAT_BEFORE + 1, 0), DRIFTING)  # commits FLAT_BEFORE.. each add 2%
            step_s = BASE_STEP_S * (1 + added * DRIFT_PER_COMMIT)
            (repo / "stepcost.py").write_text(CALLBACK.format(step_s=round(step_s, 6)))
            (repo / "CHANGES").write_text(f"change {k}\n")
            git(repo, "add", ".")
            git(repo, "commit", "-q", "-m", f"change {k}" + (f": +{DRIFT_PER_COMMIT:.0%} step time" if 0 < added <= DRIFTING and k < FLAT_BEFORE + DRIFTING else ""))
            out = root / "runs" / f"{k:02d}"
            times.append(canary_run(repo, out))
            assert canary(["baseline", "push", f"path:{store}", str(out), "--keep-history", "20"]) == 0
            runs.append(out)
            shas.append(git(repo, "rev-parse", "HEAD"))
    finally:
        mp.undo()
        sys.modules.pop("stepcost", None)
    print(f"\n{len(runs)} commits in {time.perf_counter() - t0:.1f} s; step times {[round(t, 4) for t in times]}")
    return {"store": store, "runs": runs, "shas": shas, "times": times}


def test_every_pr_comparison_passes(history, tmp_path):
    """Commit k against commit k-1, as its PR would have been judged: every comparison passes."""
    runs = history["runs"]
    for k in range(1, len(runs)):
        out = tmp_path / f"cmp-{k}.json"
        code = canary(["compare", str(runs[k]), str(runs[k - 1]), "-o", str(out)])
        doc = json.loads(out.read_text())
        step = next(c for c in doc["checks"] if c["id"] == "perf.step_time")
        assert code == 0, (k, [c for c in doc["checks"] if c["status"] not in ("pass", "skip")])
        assert step["status"] == "pass", (k, step)


def test_the_drift_is_found_on_main(history, capsys):
    store, shas = history["store"], history["shas"]
    idx = json.loads(next(store.glob("dpo_history/*/index.json")).read_text())
    assert [e["sha"] for e in idx["entries"]] == shas
    capsys.readouterr()
    assert canary(["history", "analyze", "--baseline", f"path:{store}", "--config", "dpo_history", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    found = [cp for cp in doc["change_points"] if cp["metric"] == "step_time_s"]
    assert len(found) == 1, doc
    cp = found[0]
    # the drift starts at the first drifting commit (+-1: the first 2% is within the noise)
    assert cp["kind"] == "drift" and abs(cp["index"] - FLAT_BEFORE) <= 1, doc
    assert cp["commit"] == shas[cp["index"]]
    assert 0.06 <= cp["change"] <= 0.14 and cp["significance"] < 0.01, cp
    assert canary(["history", "analyze", "--baseline", f"path:{store}", "--config", "dpo_history",
                   "--metric", "step_time_s"]) == 0
    print(capsys.readouterr().out)
