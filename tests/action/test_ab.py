"""`baseline: ref:base`: the action measures the pull request's base beside its head, in the same job.

The workspace is a shallow clone (depth 1, as actions/checkout leaves it by default, and with no
credentials) of a real two-commit repository (tests/ab_repo.py) whose head commit adds extra forward
passes every step to the team's DPO trainer subclass; the base commit is fetched from `origin` on
demand. The event names the real base sha.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from ab_repo import git, make_repo
from canary_runner.compare.engine import validate

from .conftest import PR_NUMBER, pr_event


def shallow_checkout(tmp_path, workspace):
    origin = tmp_path / "origin"
    base, head = make_repo(origin)
    shutil.rmtree(workspace)
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(workspace))
    assert git(workspace, "rev-parse", "--is-shallow-repository") == "true"
    return base, head


def event_with_base(repo: str, base: str) -> dict:
    event = pr_event(repo)
    event["pull_request"]["base"]["sha"] = base
    return event


def test_a_slower_head_fails_against_the_base_measured_in_the_same_job(run_action, fake, tmp_path):
    base, head = shallow_checkout(tmp_path, run_action.workspace)
    result = run_action(event_name="pull_request", event=event_with_base(fake.repo, base),
                        # each side installs its own tree into its own overlay (offline: no build isolation)
                        inputs={"config": "canary/dpo.yaml", "baseline": "ref:base",
                                "install": "--no-build-isolation -e ."}, timeout=600)
    assert result.returncode == 1, result.log[-4000:]
    assert result.outputs["verdict"] == "fail"
    assert "perf.step_time" in result.outputs["failed-checks"].split(","), result.outputs
    comment = fake.comments[PR_NUMBER][0]["body"]
    assert "**A/B on this runner**: " in comment and f"run alternately, base {base[:7]} vs head {head[:7]}" in comment
    check = next(iter(fake.check_runs.values()))
    assert check["conclusion"] == "failure"
    doc = json.loads(result.path("comparison-path").read_text())
    assert not validate(doc)
    step = next(c for c in doc["checks"] if c["id"] == "perf.step_time")
    assert step["status"] == "fail" and step["reason"].startswith("A/B on this runner")
    info = doc["ab"]
    assert (info["base"]["sha"], info["head"]["sha"]) == (base, head)
    assert info["stopped"].startswith("decided after") and info["pairs"] >= 3
    ratios = info["decisions"]["step_time"]["ratios"]
    assert len(ratios) == info["pairs"] and statistics.median(ratios) > 1.5, ratios  # three forwards more per step
    # ABBA: each side ran once per pair, the base from its own worktree (removed afterwards)
    assert len(info["runs"]["base"]) == len(info["runs"]["head"]) == info["pairs"]
    assert "trees/base" not in git(run_action.workspace, "worktree", "list")
    # each side ran its own installed code
    versions = {side: {json.loads((Path(p) if p.endswith(".json") else Path(p) / "metrics.json").read_text())
                       ["env"]["packages"].get("acme-rlhf") for p in info["runs"][side]} for side in ("base", "head")}
    assert versions == {"base": {"0.1.0"}, "head": {"0.2.0"}}, versions
    # health and curves are still checked against the base runs
    assert doc["baseline"]["runs"] == doc["current"]["runs"] == info["pairs"]


def test_a_config_the_base_lacks_is_reported_as_a_new_canary(run_action, fake, tmp_path):
    base, _head = shallow_checkout(tmp_path, run_action.workspace)
    new = run_action.workspace / "canary" / "dpo_new.yaml"
    new.write_text((run_action.workspace / "canary" / "dpo.yaml").read_text().replace("acme_dpo", "acme_dpo_new"))
    result = run_action(event_name="pull_request", event=event_with_base(fake.repo, base),
                        inputs={"config": "canary/dpo_new.yaml", "baseline": "ref:base"})
    assert result.returncode == 0, result.log[-4000:]
    assert result.outputs["verdict"] == "no-baseline"
    assert "does not exist in the base: a new canary, no verdict" in fake.comments[PR_NUMBER][0]["body"]


def test_ref_baselines_need_mode_pr_and_a_config(run_action, fake):
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "dpo", "baseline": "ref:base", "mode": "update-baseline"})
    assert result.returncode == 2
    assert any("measures the base in this job" in e for e in result.commands("error")), result.log
