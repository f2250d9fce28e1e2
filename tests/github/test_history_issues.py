"""`canary history notify` (one issue per change point) and `canary history accept` (/canary accept) through
the fake GitHub, which checks every request against GitHub's OpenAPI description."""

from __future__ import annotations

import json

import pytest

from canary_runner.cli import main
from canary_runner.history import index as ix
from canary_runner.history.issues import marker
from history.trend_data import HW, history, sha_of, write_store

BRANCH = "canary-baselines"
HEAD = "f" * 40  # the pull request's head commit


@pytest.fixture
def gh_env(fake, monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    monkeypatch.setenv("GITHUB_TOKEN", fake.token)
    monkeypatch.setenv("GITHUB_REPOSITORY", fake.repo)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    return fake


# -- notify --------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "store", history("dpo_smoke", 24, step_at=12))


def notify(store, *extra):
    return main(["history", "notify", "--baseline", f"path:{store}", "--config", "dpo_smoke", *extra])


def test_notify_opens_one_labelled_issue_per_change_point_and_updates_it_on_the_next_run(gh_env, store, capsys):
    fake = gh_env
    step = sha_of("dpo_smoke", 12)
    # GitHub lists pull requests among issues: one carrying the label and a marker is not taken for an issue.
    fake.pulls = [{"number": 1, "state": "open", "title": "a PR", "head": {"sha": HEAD},
                   "body": marker("dpo_smoke", "step_time_s", step), "labels": [{"name": "canary-regression"}]}]
    assert notify(store) == 0
    created = fake.issues
    # The detector finds the +10% step in step time (and the matching drop in tokens/s): one issue each.
    assert sorted(i["body"].splitlines()[0] for i in created) == sorted(
        [marker("dpo_smoke", "step_time_s", step), marker("dpo_smoke", "tokens_per_s", step)])
    assert all([lab["name"] for lab in i["labels"]] == ["canary-regression"] for i in created)
    assert any(i["title"].startswith("canary: step_time_s step of +") for i in created)
    assert f"https://github.com/{fake.repo}/commit/{step}" in created[0]["body"]
    # A second run finds its issues by marker: nothing new, nothing rewritten.
    assert notify(store) == 0
    assert len(fake.issues) == 2 and not fake.calls("PATCH", r"/issues/\d+$")
    assert "unchanged" in capsys.readouterr().out
    # A title edited by hand is put back (the body and marker still identify the issue).
    created[0]["title"] = "renamed"
    assert notify(store) == 0
    assert len(fake.issues) == 2 and len(fake.calls("PATCH", r"/issues/\d+$")) == 1


def test_an_acknowledged_change_point_closes_its_issue_with_a_comment(gh_env, store):
    fake = gh_env
    assert notify(store) == 0
    step = sha_of("dpo_smoke", 12)
    assert main(["history", "ack", step, "--reason", "bigger batch: slower steps", "--by", "octocat",
                 "--baseline", f"path:{store}", "--config", "dpo_smoke"]) == 0
    assert notify(store) == 0
    assert [i["state"] for i in fake.issues] == ["closed", "closed"]
    assert all(i["state_reason"] == "completed" for i in fake.issues)
    comments = [c["body"] for i in fake.issues for c in fake.comments.get(i["number"], [])]
    assert len(comments) == 2 and all("`bigger batch: slower steps`" in c and "`octocat`" in c for c in comments)
    # Closed stays closed, and no duplicate is opened for the acknowledged shift.
    assert notify(store) == 0
    assert len(fake.issues) == 2 and len(fake.calls("POST", r"/comments$")) == 2


def test_an_issue_closed_by_hand_is_not_reopened_or_duplicated(gh_env, store, capsys):
    fake = gh_env
    step = sha_of("dpo_smoke", 12)
    fake.add_issue("old", marker("dpo_smoke", "step_time_s", step), labels=("canary-regression",), state="closed")
    fake.add_issue("other", marker("other_config", "step_time_s", step), labels=("canary-regression",))
    assert notify(store) == 0
    assert [i["body"].splitlines()[0] for i in fake.issues[2:]] == [marker("dpo_smoke", "tokens_per_s", step)]
    assert "left-closed: step_time_s" in capsys.readouterr().out


def test_notify_when_github_refuses_exits_3(gh_env, store, capsys):
    gh_env.denied.add("issues")
    assert notify(store) == 3
    assert "cannot update the issues" in capsys.readouterr().err


# -- /canary accept ------------------------------------------------------------------------------------------


def comment_event(repo: str, body: str, association: str, *, login: str = "octocat", on_pr: bool = True,
                  action: str = "created", number: int = 7) -> dict:
    """An issue_comment payload as GitHub sends it (trimmed to the fields GitHub always includes)."""
    issue = {"number": number, "title": "Use a bigger batch", "state": "open", "user": {"login": "contributor"},
             "author_association": "CONTRIBUTOR"}
    if on_pr:
        issue["pull_request"] = {"url": f"https://api.github.com/repos/{repo}/pulls/{number}",
                                 "html_url": f"https://github.com/{repo}/pull/{number}"}
    return {"action": action, "issue": issue,
            "comment": {"id": 555, "body": body, "user": {"login": login, "type": "User"},
                        "author_association": association},
            "repository": {"full_name": repo, "default_branch": "main"}, "sender": {"login": login}}


@pytest.fixture
def branch_store(gh_env):
    fake = gh_env
    fake.refs[BRANCH] = "b" * 40
    fake.put_file(BRANCH, f"dpo_smoke/{HW}/index.json", history("dpo_smoke", 6).dumps())
    fake.pulls = [{"number": 7, "state": "open", "head": {"sha": HEAD, "ref": "feature", "user": {"login": "x"}}}]
    return fake


def accept(tmp_path, event: dict) -> int:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return main(["history", "accept", "--event", str(path), "--baseline", f"branch:{BRANCH}", "--config", "dpo_smoke"])


def stored_acks(fake) -> list[ix.Ack]:
    return ix.parse(fake.files[BRANCH][f"dpo_smoke/{HW}/index.json"], "branch").acks


@pytest.mark.parametrize("association", ["OWNER", "MEMBER", "COLLABORATOR"])
def test_a_trusted_accept_records_an_ack_for_the_pr_head(branch_store, tmp_path, association):
    fake = branch_store
    body = "/canary accept bigger batch: slower steps are intended\n\nmore words"
    assert accept(tmp_path, comment_event(fake.repo, body, association)) == 0
    [ack] = stored_acks(fake)
    assert (ack.sha, ack.reason, ack.by, ack.metric) == (HEAD, "bigger batch: slower steps are intended", "octocat", None)
    [reply] = fake.comments[7]
    assert HEAD[:12] in reply["body"] and "@octocat" in reply["body"]


def test_accept_takes_a_metric_and_bounds_the_reason(branch_store, tmp_path):
    fake = branch_store
    assert accept(tmp_path, comment_event(fake.repo, "/canary accept metric=peak_memory_mb " + "x" * 5000,
                                          "MEMBER")) == 0
    [ack] = stored_acks(fake)
    assert ack.metric == "peak_memory_mb" and len(ack.reason) == 300


@pytest.mark.parametrize("event_args, says", [
    (("/canary accept fine", "CONTRIBUTOR"), "is CONTRIBUTOR on this repository"),
    (("/canary accept fine", "NONE"), "is NONE on this repository"),
    (("/canary accept fine", "FIRST_TIME_CONTRIBUTOR"), "only OWNER, MEMBER, COLLABORATOR"),
    (("please /canary accept fine", "OWNER"), "does not start with `/canary accept`"),
    (("/canary acceptable", "OWNER"), "does not start with `/canary accept`"),
    (("/canary accept", "OWNER"), "no reason given"),
    (("/canary accept metric=loss why", "OWNER"), "unknown metric 'loss'"),
])
def test_accept_refuses_and_writes_nothing(branch_store, tmp_path, capsys, event_args, says):
    fake = branch_store
    assert accept(tmp_path, comment_event(fake.repo, *event_args)) == 1
    assert says in capsys.readouterr().err
    assert not fake.calls("PUT") and not fake.calls("POST") and stored_acks(fake) == []


@pytest.mark.parametrize("kwargs, says", [
    ({"on_pr": False}, "on an issue, not a pull request"),
    ({"action": "edited"}, "only new comments are commands"),
])
def test_accept_ignores_issues_and_edits(branch_store, tmp_path, capsys, kwargs, says):
    fake = branch_store
    assert accept(tmp_path, comment_event(fake.repo, "/canary accept fine", "OWNER", **kwargs)) == 1
    assert says in capsys.readouterr().err and not fake.calls("PUT")


def test_accept_for_a_config_without_history_is_bad_input(branch_store, tmp_path, capsys):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(comment_event(branch_store.repo, "/canary accept fine", "OWNER")))
    assert main(["history", "accept", "--event", str(path), "--baseline", f"branch:{BRANCH}",
                 "--config", "dpo_smoke", "--config", "nope"]) == 2  # all or nothing
    assert "no history for config 'nope'" in capsys.readouterr().err and not branch_store.calls("PUT")


def test_an_accept_on_a_pr_moves_to_its_merge_commit_and_settles_the_change_point(gh_env, tmp_path, capsys):
    """`/canary accept` names the PR's head; main's history has the commit the merge made. Once the PR is
    merged, notify moves the ack there: the detector restarts at it and no issue is opened."""
    fake = gh_env
    idx = history("dpo_smoke", 24, step_at=12)
    idx.acks.append(ix.Ack(sha=HEAD, reason="bigger batch", by="octocat", at="2026-01-01T00:00:00+00:00"))
    store = write_store(tmp_path / "store", idx)
    pr = {"number": 7, "state": "open", "head": {"sha": HEAD, "ref": "feature", "user": {"login": "x"}},
          "merged_at": None, "merge_commit_sha": "e" * 40}
    fake.pulls = [pr]
    assert notify(store) == 0  # not merged yet: the ack waits, the step is reported
    assert len(fake.issues) == 2 and stored(store)[0].sha == HEAD
    pr.update(state="closed", merged_at="2026-01-02T00:00:00Z", merge_commit_sha=sha_of("dpo_smoke", 12))
    assert notify(store) == 0
    assert [a.sha for a in stored(store)] == [sha_of("dpo_smoke", 12)]
    assert [i["state"] for i in fake.issues] == ["closed", "closed"]
    assert "moved to its merge commit" in capsys.readouterr().out


def stored(store) -> list[ix.Ack]:
    return ix.parse((store / "dpo_smoke" / HW / "index.json").read_bytes(), "store").acks


def test_a_drift_seen_again_from_another_commit_keeps_its_issue(gh_env, store, tmp_path):
    """A drift found again a commit earlier (more history, another fit) updates its issue, marker included."""
    fake = gh_env
    old = fake.add_issue("drift", marker("dpo_smoke", "final_loss", sha_of("dpo_smoke", 6)), labels=("canary-regression",))
    cps = tmp_path / "cps.json"
    cps.write_text(json.dumps({"config": "dpo_smoke", "change_points": [
        {"metric": "final_loss", "commit": sha_of("dpo_smoke", 5), "last_commit": sha_of("dpo_smoke", 9),
         "kind": "drift", "change": 0.05, "before": 2.0, "after": 2.1, "significance": 1e-4, "index": 5}]}))
    assert notify(store, "--change-points", str(cps)) == 0
    assert len(fake.issues) == 1 and old["body"].startswith(marker("dpo_smoke", "final_loss", sha_of("dpo_smoke", 5)))
    # A drift elsewhere is another issue.
    cps.write_text(cps.read_text().replace(sha_of("dpo_smoke", 5), sha_of("dpo_smoke", 15))
                   .replace(sha_of("dpo_smoke", 9), sha_of("dpo_smoke", 20)))
    assert notify(store, "--change-points", str(cps)) == 0
    assert len(fake.issues) == 2
