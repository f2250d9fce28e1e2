from __future__ import annotations

import logging

import pytest

from canary_runner.github.client import GitHubClient, RetryPolicy
from canary_runner.github.publish import (
    CHECK_TEXT_MAX_CHARS,
    Publisher,
    complete_check_run,
    find_pull_request,
    resolve_login,
    set_commit_status,
    start_check_run,
    sticky_marker,
    upsert_sticky_comment,
)

HEAD = "1111111111111111111111111111111111111111"
MARKER = sticky_marker("sft-tiny")


def _annotations(n):
    return [{"path": f"configs/c{i}.yaml", "start_line": i + 1, "end_line": i + 1,
             "annotation_level": "warning", "message": f"regression {i}"} for i in range(n)]


def test_marker_is_hidden_safe_and_one_per_name():
    assert sticky_marker("sft tiny-->x").startswith("<!-- rlhf-canary:config=sft_tiny--_x.x")
    assert sticky_marker("dpo_embedded") == "<!-- rlhf-canary:config=dpo_embedded -->"
    # Names that used to collapse onto one marker get one each.
    assert len({sticky_marker(n) for n in ("a b", "a_b", "a/b", "a%20b")}) == 4


def test_sticky_comment_created_then_updated_never_duplicated(fake, client):
    # Someone pasted the marker into their own comment: it must be left alone.
    impostor = fake.add_comment(42, f"{MARKER}\nlooks like the bot", "mallory")
    first = upsert_sticky_comment(client, 42, "## Canary\nrun 1", MARKER)
    assert first.outcome == "created"
    second = upsert_sticky_comment(client, 42, "## Canary\nrun 2", MARKER)
    assert second.outcome == "updated" and second.id == first.id
    ours = [c for c in fake.comments[42] if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and ours[0]["body"].startswith(MARKER) and ours[0]["body"].endswith("run 2")
    assert impostor["body"] == f"{MARKER}\nlooks like the bot"
    assert len(fake.calls("POST", "/comments")) == 1 and len(fake.calls("PATCH", "/comments/")) == 1
    assert fake.calls("GET", "^/user$") == []  # installation token: /user is not even tried


def test_sticky_comment_found_on_a_later_page(fake, client):
    for i in range(230):
        fake.add_comment(9, f"chatter {i}", "reviewer")
    ours = fake.add_comment(9, f"{MARKER}\nold report", "github-actions[bot]")
    fake.add_comment(9, "after", "reviewer")
    result = upsert_sticky_comment(client, 9, "new report", MARKER)
    assert result.outcome == "updated" and result.id == ours["id"]
    assert ours["body"] == f"{MARKER}\nnew report"
    assert len(fake.calls("GET", "/issues/9/comments")) == 3


def test_comment_body_is_truncated_keeping_the_marker(fake, client):
    result = upsert_sticky_comment(client, 5, "x" * 70_000, MARKER)
    body = fake.comments[5][0]["body"]
    assert result.outcome == "created" and len(body) == 65_536 and body.startswith(MARKER)
    assert "truncated" in body[-200:]


def test_login_from_get_user_for_user_tokens(fake, sleeps):
    fake.token = "ghp_personalAccessToken0000"
    fake.user_endpoint_works = True
    fake.login = "canary-bot"
    with GitHubClient(fake.token, api_url=fake.url, repo=fake.repo,
                      retry=RetryPolicy(sleep=sleeps.append)) as c:
        assert resolve_login(c) == "canary-bot"
        assert resolve_login(c, "configured[bot]") == "configured[bot]"
        fake.add_comment(3, f"{MARKER}\nby a PAT", "canary-bot")
        assert upsert_sticky_comment(c, 3, "again", MARKER).outcome == "updated"


def test_check_run_in_progress_then_completed_with_many_annotations(fake, client):
    started = start_check_run(client, HEAD, "rlhf-canary / sft-tiny", details_url="https://example.test/run/1")
    assert started.outcome == "in_progress"
    assert fake.check_runs[started.id]["status"] == "in_progress"
    done = complete_check_run(client, check_run_id=started.id, conclusion="failure", title="2 regressions",
                              summary="s" * 70_000, text="details", annotations=_annotations(120))
    run = fake.check_runs[started.id]
    assert done.outcome == "completed" and run["status"] == "completed" and run["conclusion"] == "failure"
    assert len(run["annotations"]) == 120
    assert [r.json["output"]["annotations"][-1]["start_line"] for r in fake.calls("PATCH", "/check-runs/")] == \
        [50, 100, 120]
    assert len(run["output"]["summary"]) == CHECK_TEXT_MAX_CHARS
    assert run["head_sha"] == HEAD


def test_check_run_input_is_checked_before_sending(client):
    with pytest.raises(ValueError, match="conclusion"):
        complete_check_run(client, check_run_id=1, conclusion="passed", title="t", summary="s")
    with pytest.raises(ValueError, match="annotation_level"):
        complete_check_run(client, check_run_id=1, conclusion="success", title="t", summary="s",
                           annotations=[{**_annotations(1)[0], "annotation_level": "error"}])


def test_status_description_is_cut_to_140_chars(fake, client):
    result = set_commit_status(client, HEAD, "neutral", "no baseline for hardware A100 " * 10, context="canary")
    assert result.outcome == "created"
    status = fake.statuses[0]
    assert status["state"] == "success" and len(status["description"]) == 140
    assert status["description"].startswith("neutral:")


def test_publisher_happy_path(fake, client):
    pub = Publisher(client, head_sha=HEAD, check_name="rlhf-canary / sft-tiny", pr_number=42,
                    details_url="https://github.com/octo-org/canary-app/actions/runs/1")
    assert pub.start().check.outcome == "in_progress"
    result = pub.finish("success", "No regressions", "all good", comment_body="## Canary: pass")
    assert result.published == ["comment", "check"] and result.fell_back == [] and not result.summary_only
    assert result.status is None and fake.statuses == []
    assert fake.comments[42][0]["body"].startswith(sticky_marker("rlhf-canary / sft-tiny"))


def test_fork_pr_read_only_token_falls_back_to_a_commit_status(fake, client, caplog):
    fake.denied |= {"checks", "comments"}
    caplog.set_level(logging.WARNING, logger="canary_runner.github")
    pub = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=42, marker=MARKER)
    start = pub.start()
    assert start.check.outcome == "denied" and start.status.outcome == "created"
    result = pub.finish("failure", "KL exploded at step 40", "details", comment_body="## Canary: fail",
                        annotations=_annotations(3))
    assert result.comment.outcome == "denied" and result.check.outcome == "denied"
    assert result.status.outcome == "created" and result.published == ["status"]
    assert not result.summary_only
    assert [s["state"] for s in fake.statuses] == ["pending", "failure"]
    assert all(s["sha"] == HEAD for s in fake.statuses)
    assert len(fake.calls("POST", "/check-runs")) == 1  # not asked again after the refusal at start
    assert "fork PR" in caplog.text


def test_everything_refused_means_summary_only_without_raising(fake, client, caplog):
    fake.denied |= {"checks", "comments", "statuses"}
    pub = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=42, marker=MARKER)
    pub.start()
    result = pub.finish("failure", "t", "s", comment_body="body")
    assert result.summary_only and result.published == []
    assert set(result.fell_back) == {"comment", "check", "status"}
    assert "job summary only" in result.notes[-1] and "job summary only" in caplog.text


def test_server_failure_is_reported_not_raised(fake, client):
    fake.fault("POST", r"/check-runs$", status=500, times=20)
    pub = Publisher(client, head_sha=HEAD, check_name="canary")
    result = pub.finish("neutral", "no baseline", "s")
    assert result.check.outcome == "failed" and result.status.outcome == "created"
    assert fake.statuses[0]["state"] == "success"


def test_find_pull_request_for_a_fork_workflow_run(fake, client):
    fake.pulls = [{"number": 77, "head": {"sha": HEAD, "ref": "feature", "user": {"login": "mallory"}}}]
    assert find_pull_request(client, HEAD, "mallory", "feature") == 77
    assert find_pull_request(client, "f" * 40, "mallory", "feature") is None
    # Without the head branch, the PR is found by its head commit.
    assert find_pull_request(client, HEAD, None, None) == 77 and fake.calls("GET", rf"/commits/{HEAD}/pulls$")


def test_comment_deleted_between_list_and_update_is_recreated(fake, client):
    ours = fake.add_comment(11, f"{MARKER}\nold", "github-actions[bot]")
    fake.fault("PATCH", rf"/issues/comments/{ours['id']}$", status=404, body={"message": "Not Found"})
    result = upsert_sticky_comment(client, 11, "new", MARKER)
    assert result.outcome == "created" and result.id != ours["id"]
