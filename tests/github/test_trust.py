"""What the GitHub layer trusts and how it says what happened: artifact baselines only from the default
branch's own runs, the sticky comment matched by its exact first line and author (GitHub App tokens
included), PR entries of workflow_run events checked, creates that may have landed never repeated,
outages told apart from refusals, and no URL query string in any error."""

from __future__ import annotations

import io
import json
import logging
import zipfile

import pytest
from werkzeug import Response

from canary_runner.baselines import ArtifactSpec, BaselineError, load_baseline
from canary_runner.github.client import GitHubClient, RetryPolicy, ServerError, redact_urls
from canary_runner.github.context import load_context
from canary_runner.github.publish import (
    Publisher,
    start_check_run,
    sticky_marker,
    upsert_sticky_comment,
)

HEAD = "1" * 40
APP = "canary-app"


def metrics(step_time: float) -> bytes:
    return json.dumps({"schema_version": 1, "run": {"config_name": "sft-tiny", "git_sha": "c0ffee"},
                       "env": {"hardware_key": "h100"}, "summary": {"step_time_median_s": step_time}}).encode()


def zip_of(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metrics.json", data)
    return buf.getvalue()


def serve_blob(fake, blob_server, art) -> None:
    fake.blob_base = blob_server.url_for("").rstrip("/")
    blob_server.expect_request(f"/artifact-{art['id']}.zip").respond_with_handler(
        lambda request: Response(fake.artifact_zips[art["id"]], content_type="application/zip"))


# ------------------------------------------------------------------------------- 1: artifact trust
def test_artifact_baseline_comes_only_from_the_default_branchs_own_runs(fake, client, blob_server):
    trusted = fake.add_artifact("canary-baseline", zip_of(metrics(0.1)), head_branch="main",
                                created_at="2025-01-01T00:00:00Z", event="push")
    # Newer, same name, branch called main: a fork's PR run, a same-repository PR run (main -> release),
    # and a workflow_run run (which may act on a PR's upload). None may become the baseline.
    fake.add_artifact("canary-baseline", zip_of(metrics(99.0)), head_branch="main",
                      created_at="2025-01-05T00:00:00Z", event="pull_request", head_repo="mallory/canary-app")
    fake.add_artifact("canary-baseline", zip_of(metrics(98.0)), head_branch="main",
                      created_at="2025-01-04T00:00:00Z", event="pull_request")
    fake.add_artifact("canary-baseline", zip_of(metrics(97.0)), head_branch="main",
                      created_at="2025-01-03T00:00:00Z", event="workflow_run")
    serve_blob(fake, blob_server, trusted)
    lookup = load_baseline(ArtifactSpec("canary-baseline"), client=client, config_name="sft-tiny",
                           hardware_key="h100", default_branch="main")
    assert lookup.found and lookup.latest.raw == metrics(0.1)
    # The fork's artifact is refused from the list alone; the others cost one run lookup each.
    looked_up = {int(r.path.rsplit("/", 1)[1]) for r in fake.calls("GET", r"/actions/runs/\d+$")}
    assert len(looked_up) == 3 and trusted["workflow_run"]["id"] in looked_up


def test_no_trusted_artifact_means_no_baseline(fake, client):
    fake.add_artifact("canary-baseline", b"", head_branch="main", created_at="2025-01-05T00:00:00Z",
                      event="pull_request_target")
    fake.add_artifact("canary-baseline", b"", head_branch="main", created_at="2025-01-04T00:00:00Z",
                      event="push", head_repo="mallory/canary-app")
    lookup = load_baseline("artifact:canary-baseline", client=client, config_name="sft-tiny", hardware_key="h100",
                           default_branch="main")
    assert not lookup.found and "only push, schedule and workflow_dispatch runs of this repository" in lookup.message
    assert fake.calls("GET", r"/zip$") == []


# ------------------------------------------------------------------------------- 3: sticky marker
def test_a_marker_quoted_inside_another_comment_is_not_that_comment(fake, client):
    sft, dpo = sticky_marker("sft_embedded"), sticky_marker("dpo_embedded")
    # The sft report quotes a crashed run's traceback that holds the dpo marker.
    sft_comment = fake.add_comment(5, f"{sft}\n## crashed\n```\n{dpo}\n```", "github-actions[bot]")
    glued = fake.add_comment(5, f"{dpo} not on its own line", "github-actions[bot]")
    result = upsert_sticky_comment(client, 5, f"{dpo}\ndpo report", dpo)
    assert result.outcome == "created"
    assert sft_comment["body"].startswith(sft) and glued["body"].endswith("own line")
    assert fake.comments[5][-1]["body"] == f"{dpo}\ndpo report"
    # Next time the dpo comment itself is updated.
    assert upsert_sticky_comment(client, 5, f"{dpo}\nagain", dpo).id == result.id


# ---------------------------------------------------------------------- 8: GitHub App token identity
@pytest.fixture
def app_token(fake):
    """A token from actions/create-github-app-token: ghs_, comments as <slug>[bot]; GET /user and
    (on github.com) GET /app refuse it."""
    fake.login, fake.app_slug = f"{APP}[bot]", APP
    return fake


def test_app_token_updates_its_comment_found_by_its_own_check_runs_app(app_token, client):
    ours = app_token.add_comment(8, f"{sticky_marker('sft')}\nold", f"{APP}[bot]")
    pub = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=8, marker=sticky_marker("sft"))
    pub.start()
    result = pub.finish("success", "ok", "s", comment_body=f"{sticky_marker('sft')}\nnew")
    assert result.comment.outcome == "updated" and result.comment.id == ours["id"]
    assert len(app_token.comments[8]) == 1 and ours["body"].endswith("new")
    assert app_token.calls("GET", "^/app$") == [] and app_token.calls("GET", "^/user$") == []


def test_app_token_identity_from_get_app_when_check_runs_are_refused(app_token, client):
    app_token.denied.add("checks")
    app_token.app_endpoint_works = True
    ours = app_token.add_comment(8, f"{sticky_marker('sft')}\nold", f"{APP}[bot]")
    pub = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=8, marker=sticky_marker("sft"))
    pub.start()
    assert pub.finish("success", "ok", "s", comment_body="new").comment.id == ours["id"]
    assert len(app_token.comments[8]) == 1


def test_comment_author_input_when_nothing_else_tells(app_token, client, caplog):
    app_token.denied.add("checks")  # and GET /app needs a JWT
    ours = app_token.add_comment(8, f"{sticky_marker('sft')}\nold", f"{APP}[bot]")
    configured = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=8, marker=sticky_marker("sft"),
                           login=f"{APP}[bot]")
    assert configured.finish("success", "ok", "s", comment_body="new").comment.id == ours["id"]
    # Without the input the action cannot know; it says which input fixes it.
    caplog.set_level(logging.WARNING, logger="canary_runner.github")
    blind = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=9, marker=sticky_marker("sft"))
    assert blind.finish("success", "ok", "s", comment_body="first").comment.outcome == "created"
    assert f"set the comment-author input to {APP}[bot]" in caplog.text
    assert blind.recorded_login == f"{APP}[bot]"  # and the rest of this run knows it


# ----------------------------------------------------------------------- 9: workflow_run PR entries
def _workflow_run_env(tmp_path, pull_requests, repo_id=1):
    payload = {"workflow_run": {"id": 5, "event": "pull_request", "head_sha": HEAD, "head_branch": "main",
                                "head_repository": {"full_name": "mallory/canary-app"},
                                "repository": {"id": repo_id, "full_name": "octo-org/canary-app"},
                                "pull_requests": pull_requests},
               "repository": {"id": repo_id, "full_name": "octo-org/canary-app", "default_branch": "main"}}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    return {"GITHUB_EVENT_NAME": "workflow_run", "GITHUB_EVENT_PATH": str(path), "GITHUB_SHA": "c" * 40,
            "GITHUB_REPOSITORY": "octo-org/canary-app", "GITHUB_REF": "refs/heads/main"}


def _entry(number, sha, repo_id, name="canary-app", owner="octo-org"):
    repo = {"id": repo_id, "url": f"https://api.github.com/repos/{owner}/{name}", "name": name}
    return {"id": number, "number": number, "url": "u", "head": {"ref": "main", "sha": sha, "repo": repo},
            "base": {"ref": "main", "sha": "b" * 40, "repo": repo}}


def test_workflow_run_pull_request_entries_must_be_this_runs(tmp_path):
    # A PR of another repository whose head happens to be the same commit and branch name: not ours.
    other_repo = _entry(3, HEAD, 999, owner="someone-else")
    assert load_context(_workflow_run_env(tmp_path, [other_repo])).pr_number is None
    # A PR of this repository whose head has moved on since the run: not this run's PR.
    moved = _entry(4, "9" * 40, 1)
    assert load_context(_workflow_run_env(tmp_path, [moved])).pr_number is None
    # The run's own PR, listed after both.
    ctx = load_context(_workflow_run_env(tmp_path, [other_repo, moved, _entry(6, HEAD, 1)]))
    assert ctx.pr_number == 6


# ------------------------------------------------------------------ 11: creates that may have landed
def test_a_comment_post_answered_502_after_the_write_is_not_posted_again(fake, client):
    marker = sticky_marker("sft")
    fake.fault("POST", r"/issues/\d+/comments$", status=502, body={"message": "Bad Gateway"}, after_write=True)
    result = upsert_sticky_comment(client, 12, "report", marker)
    assert result.outcome == "created" and len(fake.comments[12]) == 1
    assert len(fake.calls("POST", r"/comments$")) == 1


def test_a_comment_post_that_failed_before_the_write_is_posted_again(fake, client):
    fake.fault("POST", r"/issues/\d+/comments$", status=502, body={"message": "Bad Gateway"})
    result = upsert_sticky_comment(client, 12, "report", sticky_marker("sft"))
    assert result.outcome == "created" and len(fake.comments[12]) == 1
    assert len(fake.calls("POST", r"/comments$")) == 2


def test_a_check_run_created_despite_a_502_is_found_and_completed_not_duplicated(fake, client):
    fake.fault("POST", r"/check-runs$", status=504, body={"message": "Gateway Timeout"}, after_write=True)
    pub = Publisher(client, head_sha=HEAD, check_name="canary")
    assert pub.start().check.outcome == "in_progress"
    pub.finish("success", "ok", "s")
    assert len(fake.check_runs) == 1 and next(iter(fake.check_runs.values()))["conclusion"] == "success"
    assert len(fake.calls("POST", r"/check-runs$")) == 1


def test_a_check_run_post_that_keeps_failing_gives_up_without_duplicates(fake, client):
    fake.fault("POST", r"/check-runs$", status=500, times=10)
    with pytest.raises(ServerError):
        start_check_run(client, HEAD, "canary")
    assert len(fake.calls("POST", r"/check-runs$")) == 3 and fake.check_runs == {}


# ------------------------------------------------------------------------ 12: outage, not refusal
def test_persistent_5xx_and_rate_limits_are_outages_not_refusals(fake, client):
    fake.fault("POST", r"/check-runs$", status=503, times=10)
    fake.fault("POST", r"/comments$", status=403, times=10,
               headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9999999999"},
               body={"message": "API rate limit exceeded for installation."})
    fake.fault("POST", r"/statuses/", status=502, times=10)
    pub = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=4)
    pub.start()
    result = pub.finish("failure", "t", "s", comment_body="body")
    assert result.summary_only and result.causes == {"outage"}
    assert {c.outcome for c in (result.comment, result.check, result.status)} == {"failed"}
    assert "outage" in result.notes[-1] and "fork" not in result.notes[-1]


def test_a_refusal_is_still_called_a_refusal(fake, client):
    fake.denied |= {"checks", "comments", "statuses"}
    pub = Publisher(client, head_sha=HEAD, check_name="canary", pr_number=4)
    pub.start()
    result = pub.finish("failure", "t", "s", comment_body="body")
    assert result.causes == {"permission"} and "refused the token" in result.notes[-1]


# -------------------------------------------------------------------------- 7: no URL query in errors
@pytest.mark.parametrize("text, redacted", [
    ("GET https://blob.example/a.zip?sig=SECRET&se=1 failed", "GET https://blob.example/a.zip?REDACTED failed"),
    ("Max retries exceeded with url: /artifact-1.zip?sig=SECRET (Caused by X)",
     "Max retries exceeded with url: /artifact-1.zip?REDACTED (Caused by X)"),
    ("see 'https://user:pw@host.example?token=SECRET'", "see 'https://host.example?REDACTED'"),
    ("fork PR or read-only token? no url here", "fork PR or read-only token? no url here"),
])
def test_redact_urls(text, redacted):
    assert redact_urls(text) == redacted


def test_presigned_artifact_urls_never_reach_an_error(fake, client, blob_server):
    art = fake.add_artifact("canary-baseline", zip_of(metrics(0.1)), head_branch="main",
                            created_at="2025-01-01T00:00:00Z")
    signed = f"/artifact-{art['id']}.zip?sig=short-lived"
    messages = []
    # Blob storage echoes the signed URL in its error body.
    fake.blob_base = blob_server.url_for("").rstrip("/")
    blob_server.expect_request(f"/artifact-{art['id']}.zip").respond_with_data(
        f"<Error>AuthenticationFailed for {blob_server.url_for(signed)}</Error>", status=403)
    for attempt in range(2):
        with pytest.raises(BaselineError) as err:
            load_baseline("artifact:canary-baseline", client=client, config_name="sft-tiny", hardware_key="h100",
                          default_branch="main")
        messages.append(str(err.value))
        # Then: blob storage unreachable (urllib3 names the path and query in its message).
        fake.blob_base = "http://127.0.0.1:9"
        client._bare.adapters["http://"].max_retries.total = 0
    # And a download over the size limit.
    fake.blob_base = blob_server.url_for("").rstrip("/")
    blob_server.clear()
    blob_server.expect_request(f"/artifact-{art['id']}.zip").respond_with_data(b"x" * 100)
    with pytest.raises(Exception) as err:
        client.download(client.repo_path(f"actions/artifacts/{art['id']}/zip"), max_bytes=10)
    messages.append(str(err.value))
    assert len(messages) == 3
    assert all("sig=" not in m and "short-lived" not in m for m in messages), messages
    assert "REDACTED" in messages[1]


def test_a_connection_failure_is_an_outage_that_may_have_written_only_once_sent():
    c = GitHubClient("ghs_x", api_url="http://127.0.0.1:9", repo="o/r", retry=RetryPolicy(sleep=lambda s: None))
    c.session.adapters["http://"].max_retries.total = 0
    with pytest.raises(ServerError) as err:
        c.post_json("/repos/o/r/issues/1/comments", {"body": "x"})
    assert err.value.status == 0 and not err.value.maybe_written  # refused: never sent


def test_the_reports_marker_is_the_one_publish_matches_and_one_per_name():
    from canary_runner.report import marker

    names = ("dpo_embedded", "a b", "a_b", "a/b", "a%20b", "x\n-->y")
    assert [marker(n) for n in names] == [sticky_marker(n) for n in names]
    assert len({marker(n) for n in names}) == len(names)
    assert all("\n" not in marker(n) and marker(n).count("-->") == 1 for n in names)
