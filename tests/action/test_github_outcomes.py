"""The entrypoint against the fake GitHub: which commit and PR it reports on, who its comment is by, and
exit code, `verdict` output and check conclusion agreeing when something other than the verdict failed.
Finished runs come from the shared `seed_run` (no training here), except the model-hub case, which
stops before training."""

from __future__ import annotations

import re

import pytest

from canary_runner import action
from canary_runner.action import Workflow

from .conftest import HEAD_SHA, MAIN_SHA, PR_NUMBER, REPO, push_event
from .test_entrypoint import CONFIG, copy_run, only_check_run, our_comments


def issue_comment_event(repo: str) -> dict:
    return {"action": "created", "comment": {"id": 1, "body": "/canary", "user": {"login": "octocat"}},
            "issue": {"number": PR_NUMBER, "pull_request": {"url": f"https://api.github.com/repos/{repo}/pulls/7"}},
            "repository": {"full_name": repo, "default_branch": "main"}}


def test_issue_comment_reports_on_the_pr_head_from_the_pulls_api(run_action, fake, seed_run, tmp_path):
    fake.pulls = [{"number": PR_NUMBER, "state": "open",
                   "head": {"sha": HEAD_SHA, "ref": "feature", "user": {"login": "octo-org"},
                            "repo": {"full_name": fake.repo}},
                   "base": {"ref": "main", "repo": {"full_name": fake.repo}}}]
    copy_run(seed_run, run_action.workspace / "twin")
    result = run_action(event_name="issue_comment", event=issue_comment_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "path:twin"},
                        env={"GITHUB_SHA": MAIN_SHA, "GITHUB_REF": "refs/heads/main"})
    assert result.returncode == 0, result.log
    assert only_check_run(fake)["head_sha"] == HEAD_SHA  # never GITHUB_SHA, the default branch's head
    assert fake.calls("GET", rf"/pulls/{PR_NUMBER}$") and len(our_comments(fake)) == 1


def test_app_token_with_comment_author_updates_its_comment(run_action, fake, seed_run, tmp_path):
    fake.login, fake.app_slug = "canary-app[bot]", None  # a token whose app GitHub does not tell
    fake.denied.add("checks")
    ours = fake.add_comment(PR_NUMBER, f"{action_marker()}\nprevious run", "canary-app[bot]")
    from .conftest import pr_event

    copy_run(seed_run, run_action.workspace / "twin")
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "path:twin",
                                "comment-author": "canary-app[bot]"})
    assert result.returncode == 0, result.log
    assert len(fake.comments[PR_NUMBER]) == 1 and ours["body"] != f"{action_marker()}\nprevious run"


def action_marker() -> str:
    from canary_runner.report import marker

    return marker(CONFIG)


def test_a_refused_baseline_write_is_bad_usage_and_says_so_everywhere(run_action, fake, seed_run):
    fake.denied.add("contents")
    result = run_action(event_name="push", event=push_event(fake.repo),
                        inputs={"metrics": str(seed_run), "mode": "update-baseline",
                                "baseline": "branch:canary-baselines"})
    assert result.returncode == 2, result.log
    assert result.outputs["verdict"] == "error"
    check = only_check_run(fake)
    assert check["conclusion"] == "failure" and check["output"]["title"].startswith("Baseline not stored")
    assert any("the write was refused" in e for e in result.commands("error"))
    assert "crash" not in result.summary.lower() and "Traceback" not in result.log


def test_an_outage_while_storing_the_baseline_is_exit_3_not_a_refusal(run_action, fake, seed_run):
    # GitHub keeps failing the writes (retry-after 0 keeps the test fast).
    for method, path in (("PUT", r"/contents/"), ("POST", r"/git/refs$")):
        fake.fault(method, path, status=502, times=50, body={"message": "Bad Gateway"}, headers={"retry-after": "0"})
    result = run_action(event_name="push", event=push_event(fake.repo),
                        inputs={"metrics": str(seed_run), "mode": "update-baseline",
                                "baseline": "branch:canary-baselines"})
    assert result.returncode == 3, result.log
    assert result.outputs["verdict"] == "error"
    assert only_check_run(fake)["conclusion"] == "failure"
    assert any("an outage" in e for e in result.commands("error")), result.stdout


def test_an_unreachable_model_hub_is_a_network_failure_not_bad_input(run_action, fake):
    (run_action.workspace / "hub.yaml").write_text("name: hub_model\ntraining_type: sft\n"
                                                   "model: {name: EleutherAI/pythia-70m}\n"
                                                   "sft: {}\ntrain: {max_steps: 4, warmup_steps: 1}\n")
    result = run_action(event_name="push", event=push_event(fake.repo), inputs={"config": "hub.yaml"},
                        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(run_action.root / "hf-empty")})
    assert result.returncode == 3, result.log
    assert result.outputs["verdict"] == "error"
    assert any("network failure" in e for e in result.commands("error")), result.stdout
    assert not any("bad input" in line for line in result.stdout.splitlines() if line.startswith("::error"))


# --------------------------------------------------------------- the documented table is the code's
def _documented_outcomes() -> list[list[str]]:
    text = (REPO / "docs" / "action.md").read_text()
    section = text.split("### Exit code, verdict and check", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    return [[c.strip().strip("`") for c in row.strip("|").split("|")] for row in rows]


@pytest.mark.parametrize("row", _documented_outcomes(), ids=lambda r: r[0])
def test_docs_table_of_outcomes_is_what_the_action_does(row):
    what, fail_on, verdict, conclusion, code = row
    act = action.Action({}, Workflow({}, __import__("io").StringIO()))
    act.inputs = action.Inputs(config="dpo", fail_on=fail_on)
    o = act.outcome = action.Outcome(verdict=verdict, run_status="completed")
    if what.startswith("run crashed"):
        o.run_status = "crashed"
    elif what.startswith("bad input"):
        o.bad_input = True
    elif what.startswith("action failed"):
        o.error = "boom"
    elif what.startswith("baseline write refused"):
        o.store_failure = "refused"
    elif what.startswith("baseline write outage"):
        o.store_failure = "outage"
    assert (act.conclusion(), str(act.exit_code())) == (conclusion, code), row
    assert re.fullmatch(r"[a-z-]+", verdict)
