from __future__ import annotations

import json

import pytest

from canary_runner.github.context import ContextError, in_actions, load_context

HEAD = "1111111111111111111111111111111111111111"
MERGE = "2222222222222222222222222222222222222222"
# A pull-request-minimal's base.repo: id, url and name (no full_name).
BASE_REPO = {"id": 1, "url": "https://api.github.com/repos/octo-org/canary-app", "name": "canary-app"}


def _env(tmp_path, event_name, payload, **extra):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": event_name, "GITHUB_EVENT_PATH": str(path),
           "GITHUB_REPOSITORY": "octo-org/canary-app", "GITHUB_SHA": MERGE, "GITHUB_REF": "refs/pull/42/merge",
           "GITHUB_RUN_ID": "987654", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_API_URL": "https://api.github.com", "GITHUB_ACTOR": "alice"}
    env.update(extra)
    return env


def _pr(head_repo="octo-org/canary-app"):
    return {"number": 42, "pull_request": {
        "number": 42,
        "head": {"sha": HEAD, "ref": "feature", "repo": {"full_name": head_repo} if head_repo else None},
        "base": {"sha": "b" * 40, "ref": "main", "repo": {"full_name": "octo-org/canary-app", "default_branch": "main"}}},
        "repository": {"full_name": "octo-org/canary-app", "default_branch": "main"}}


def test_pull_request_uses_the_head_sha_not_the_merge_commit(tmp_path):
    ctx = load_context(_env(tmp_path, "pull_request", _pr()))
    assert ctx.sha == HEAD and ctx.sha != MERGE
    assert ctx.pr_number == 42 and not ctx.is_fork
    assert ctx.head_ref == "feature" and ctx.base_ref == "main" and ctx.default_branch == "main"
    assert ctx.run_url == "https://github.com/octo-org/canary-app/actions/runs/987654"
    assert ctx.pr_url == "https://github.com/octo-org/canary-app/pull/42"
    assert in_actions(_env(tmp_path, "pull_request", _pr()))


def test_fork_pull_request_target_is_a_fork(tmp_path):
    ctx = load_context(_env(tmp_path, "pull_request_target", _pr("mallory/canary-app")))
    assert ctx.is_fork and ctx.sha == HEAD and ctx.head_repository == "mallory/canary-app"


def test_deleted_fork_counts_as_a_fork(tmp_path):
    assert load_context(_env(tmp_path, "pull_request", _pr(head_repo=None))).is_fork


def test_workflow_run_uses_its_head_sha_and_pull_requests(tmp_path):
    payload = {"workflow_run": {
        "id": 5, "event": "pull_request", "head_sha": HEAD, "head_branch": "feature",
        "head_repository": {"full_name": "octo-org/canary-app"}, "repository": {"full_name": "octo-org/canary-app"},
        "pull_requests": [{"number": 7, "head": {"sha": "9" * 40}, "base": {"ref": "main", "repo": BASE_REPO}},
                          {"number": 42, "head": {"sha": HEAD, "ref": "feature"},
                           "base": {"ref": "release", "repo": BASE_REPO}}]},
        "repository": {"default_branch": "main"}}
    ctx = load_context(_env(tmp_path, "workflow_run", payload, GITHUB_SHA="c" * 40, GITHUB_REF="refs/heads/main"))
    assert ctx.sha == HEAD and ctx.pr_number == 42 and ctx.base_ref == "release"
    assert ctx.triggering_event == "pull_request" and not ctx.is_fork


def test_workflow_run_from_a_fork_has_no_pull_request_in_the_payload(tmp_path):
    payload = {"workflow_run": {
        "id": 5, "event": "pull_request", "head_sha": HEAD, "head_branch": "feature", "pull_requests": [],
        "head_repository": {"full_name": "mallory/canary-app"}, "repository": {"full_name": "octo-org/canary-app"}},
        "repository": {"default_branch": "main"}}
    ctx = load_context(_env(tmp_path, "workflow_run", payload))
    assert ctx.is_fork and ctx.pr_number is None and ctx.sha == HEAD


def test_push_to_the_default_branch(tmp_path):
    payload = {"after": MERGE, "repository": {"default_branch": "main"}}
    ctx = load_context(_env(tmp_path, "push", payload, GITHUB_REF="refs/heads/main", GITHUB_RUN_ATTEMPT="2"))
    assert ctx.sha == MERGE and ctx.pr_number is None and ctx.on_default_branch and not ctx.is_fork
    assert ctx.run_url.endswith("/actions/runs/987654/attempts/2")


def test_schedule_without_a_payload_file(tmp_path):
    env = _env(tmp_path, "schedule", {})
    env.pop("GITHUB_EVENT_PATH")
    ctx = load_context(env)
    assert ctx.sha == MERGE and ctx.default_branch is None and ctx.event == {}


def test_missing_or_broken_environment_is_a_clear_error(tmp_path):
    with pytest.raises(ContextError, match="GITHUB_REPOSITORY"):
        load_context({})
    env = _env(tmp_path, "pull_request", {"number": 3})
    with pytest.raises(ContextError, match="no pull_request object"):
        load_context(env)
    broken = _env(tmp_path, "push", {})
    (tmp_path / "event.json").write_text("{not json")
    with pytest.raises(ContextError, match="cannot read"):
        load_context(broken)
    with pytest.raises(ContextError, match="does not exist"):
        load_context({**env, "GITHUB_EVENT_PATH": str(tmp_path / "missing.json")})
