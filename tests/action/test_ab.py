"""`baseline: ref:base`: the action measures the pull request's base beside its head, in the same job.

The workspace is a shallow clone (depth 1, as actions/checkout leaves it by default, and with no
credentials) of a real two-commit repository (tests/ab_repo.py) whose head commit adds extra forward
passes every step to the team's DPO trainer subclass (or, for the A/A, edits only the README); the base
commit is fetched from `origin` on demand. The event names the real base sha. `max-pairs: 4` keeps
both runs short: a clear regression still stops early, at the minimum of 3 pairs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ab_repo import git, make_repo
from canary_runner.compare.engine import validate

import pytest

from canary_runner.action import InputError, read_inputs

from .conftest import PR_NUMBER, pr_event


def shallow_checkout(tmp_path, workspace, same: bool = False, classes: tuple[str, ...] = ()):
    origin = tmp_path / "origin"
    base, head = make_repo(origin, same=same, classes=classes)
    shutil.rmtree(workspace)
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(workspace))
    assert git(workspace, "rev-parse", "--is-shallow-repository") == "true"
    return base, head


def event_with_base(repo: str, base: str) -> dict:
    event = pr_event(repo)
    event["pull_request"]["base"]["sha"] = base
    return event


def ab_line(comment: str) -> str:
    """The report's line that says which mode decided."""
    return next(line for line in comment.splitlines() if line.startswith("**A/B on this runner**: "))


def test_a_slower_head_fails_against_the_base_measured_in_the_same_job(run_action, fake, tmp_path):
    base, head = shallow_checkout(tmp_path, run_action.workspace)
    result = run_action(event_name="pull_request", event=event_with_base(fake.repo, base),
                        # each side installs its own tree into its own overlay (offline: no build isolation)
                        inputs={"config": "canary/dpo.yaml", "baseline": "ref:base", "max-pairs": "4",
                                "budget": "900", "install": "--no-build-isolation -e ."}, timeout=600)
    assert result.returncode == 1, result.log[-4000:]
    assert result.outputs["verdict"] == "fail"
    assert "perf.step_time" in result.outputs["failed-checks"].split(","), result.outputs
    comment = fake.comments[PR_NUMBER][0]["body"]
    line = ab_line(comment)
    assert line.startswith(f"**A/B on this runner**: 3 pairs run alternately, base {base[:12]} vs head {head[:12]}, "
                           "stopped early after 3 pair(s) (the minimum): clearly slower; "), line
    check = next(iter(fake.check_runs.values()))
    assert check["conclusion"] == "failure"
    doc = json.loads(result.path("comparison-path").read_text())
    assert not validate(doc)
    step = next(c for c in doc["checks"] if c["id"] == "perf.step_time")
    assert step["status"] == "fail" and step["reason"].startswith("A/B on this runner")
    info = doc["ab"]
    assert (info["base"]["sha"], info["head"]["sha"]) == (base, head)
    # a clear regression stops at the first look: the minimum of 3 pairs, short of max-pairs
    assert (info["max_pairs"], info["budget_s"]) == (4, 900)
    assert info["pairs"] == 3 and info["stopped_early"] is True, info["stopped"]
    assert info["stopped"] == "stopped early after 3 pair(s) (the minimum): clearly slower"
    assert [h["step_time"]["state"] for h in info["history"]] == ["continue", "continue", "fail"]
    ratios = info["decisions"]["step_time"]["ratios"]
    assert len(ratios) == 3 and min(ratios) > 3, ratios  # forty forwards more per step
    # the report shows each pair's ratios, step time and memory
    memory = info["decisions"]["memory"]["ratios"]
    assert f"step time head/base per pair: {' '.join(f'{r:.3f}' for r in ratios)}; " in line, line
    assert f"peak memory head/base per pair: {' '.join(f'{r:.3f}' for r in memory)}." in line, line
    # ABBA: each side ran once per pair, the base from its own worktree (removed afterwards)
    assert len(info["runs"]["base"]) == len(info["runs"]["head"]) == info["pairs"]
    assert "trees/base" not in git(run_action.workspace, "worktree", "list")
    # each side ran its own installed code
    versions = {side: {json.loads((Path(p) if p.endswith(".json") else Path(p) / "metrics.json").read_text())
                       ["env"]["packages"].get("acme-rlhf") for p in info["runs"][side]} for side in ("base", "head")}
    assert versions == {"base": {"0.1.0"}, "head": {"0.2.0"}}, versions
    # health and curves are still checked against the base runs
    assert doc["baseline"]["runs"] == doc["current"]["runs"] == info["pairs"]


def test_a_head_that_changes_no_code_passes_against_its_base(run_action, fake, tmp_path):
    # A/A: the head commit edits a README line only; no install, so this stays cheap. The canary lists an
    # equivalence class: it runs once, in the head's untimed warm-up, never in the timed pairs.
    base, head = shallow_checkout(tmp_path, run_action.workspace, same=True, classes=("attention",))
    result = run_action(event_name="pull_request", event=event_with_base(fake.repo, base),
                        inputs={"config": "canary/dpo.yaml", "baseline": "ref:base", "max-pairs": "4"}, timeout=600)
    assert result.returncode == 0, result.log[-4000:]
    assert result.outputs["verdict"] in ("pass", "warn"), result.outputs
    doc = json.loads(result.path("comparison-path").read_text())
    assert not validate(doc)
    status = {c["id"]: c["status"] for c in doc["checks"]}
    assert status["perf.step_time"] in ("pass", "warn"), status  # undecided after 4 pairs is a warning, never a fail
    assert status["memory.peak"] == "pass", status
    assert not [i for i, s in status.items() if s == "fail"], status
    assert status["equivalence.attention"] == "pass", status
    info = doc["ab"]
    assert (info["base"]["sha"], info["head"]["sha"], info["max_pairs"]) == (base, head, 4)
    with_classes = [side for side in ("base", "head") for p in info["runs"][side]
                    if "equivalence" in json.loads((Path(p) / "metrics.json").read_text())]
    assert with_classes == ["head"], with_classes  # the warm-up's results, recorded with the head's first run
    assert not list(Path(info["runs"]["head"][0]).glob("equivalence/*"))
    assert 3 <= info["pairs"] <= 4 and len(info["runs"]["base"]) == len(info["runs"]["head"]) == info["pairs"]
    assert info["stopped"] in ("stopped early after 3 pair(s) (the minimum): clearly within every limit",
                               "stopped after 4 pair(s): clearly within every limit",
                               "no clear answer after the maximum of 4 pairs"), info["stopped"]
    # the comment says which mode decided, how the loop stopped, and each pair's ratios
    line = ab_line(fake.comments[PR_NUMBER][0]["body"])
    ratios = " ".join(f"{r:.3f}" for r in info["decisions"]["step_time"]["ratios"])
    assert line == (f"**A/B on this runner**: {info['pairs']} pairs run alternately, base {base[:12]} vs head "
                    f"{head[:12]}, {info['stopped']}; step time head/base per pair: {ratios}; peak memory "
                    "head/base per pair: " + " ".join(f"{r:.3f}" for r in info["decisions"]["memory"]["ratios"])
                    + "."), line


BAD_AB_INPUTS = [
    ("max-pairs", "2", "max-pairs '2' is not a whole number of at least 3"),
    ("max-pairs", "ten", "max-pairs 'ten' is not a whole number of at least 3"),
    ("max-pairs", "4.5", "max-pairs '4.5' is not a whole number of at least 3"),
    ("max-pairs", "-4", "max-pairs '-4' is not a whole number of at least 3"),
    ("budget", "0", "budget '0' is not a positive number of seconds"),
    ("budget", "-60", "budget '-60' is not a positive number of seconds"),
    ("budget", "10m", "budget '10m' is not a positive number of seconds"),
    ("budget", "nan", "budget 'nan' is not a positive number of seconds"),
    ("budget", "inf", "budget 'inf' is not a positive number of seconds"),
]


@pytest.mark.parametrize("name, value, said", BAD_AB_INPUTS)
def test_bad_max_pairs_or_budget_is_named_with_what_to_give(name, value, said):
    env = {"INPUT_CONFIG": "dpo", "INPUT_BASELINE": "ref:base", f"INPUT_{name.upper()}": value}
    with pytest.raises(InputError) as exc:
        read_inputs(env)
    assert len(exc.value.problems) == 1 and exc.value.problems[0].startswith(said), exc.value.problems
    assert ("give e.g. 10" if name == "max-pairs" else "give e.g. 600") in exc.value.problems[0]


def test_good_max_pairs_and_budget_are_read():
    inp = read_inputs({"INPUT_CONFIG": "dpo", "INPUT_BASELINE": "ref:base", "INPUT_MAX-PAIRS": "3",
                       "INPUT_BUDGET": "90.5"})
    assert (inp.max_pairs, inp.budget) == (3, 90.5)
    inp = read_inputs({"INPUT_CONFIG": "dpo", "INPUT_BASELINE": "ref:base"})
    assert (inp.max_pairs, inp.budget) == (10, None)  # action.yml's defaults: 10 pairs, no time limit


def test_bad_max_pairs_and_budget_stop_the_action_before_training(run_action, fake):
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "dpo", "baseline": "ref:base", "max-pairs": "2", "budget": "0"})
    assert result.returncode == 2, result.log[-4000:]
    errors = result.commands("error")
    assert any(e.startswith("max-pairs '2' is not a whole number of at least 3") for e in errors), errors
    assert any(e.startswith("budget '0' is not a positive number of seconds") for e in errors), errors
    assert "Traceback" not in result.log
    assert result.outputs["verdict"] == "error"
    assert not list(run_action.workspace.rglob("metrics.json"))  # nothing trained
    assert not fake.comments.get(PR_NUMBER)


def test_max_pairs_and_budget_are_ignored_with_a_warning_without_ref(run_action, fake, seed_run):
    # One workflow may pick ref:base for pull requests and a stored baseline elsewhere: not an error.
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "none", "max-pairs": "6", "budget": "300"})
    assert result.returncode == 0, result.log[-4000:]
    assert "max-pairs and budget limit the A/B loop of baseline ref:...; with baseline none they are ignored" \
        in result.commands("warning"), result.commands("warning")


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
