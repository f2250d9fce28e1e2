"""The validator behind the fake server must reject what GitHub would reject, or it proves nothing."""

from __future__ import annotations

import json

import pytest

from canary_runner.github.client import GitHubError

from .openapi_validator import RequestInvalid

SHA = "0123456789abcdef0123456789abcdef01234567"


def _json(obj):
    return {"body": json.dumps(obj).encode(), "content_type": "application/json"}


def test_accepts_a_documented_request(openapi):
    openapi.validate("POST", "/repos/o/r/check-runs",
                     **_json({"name": "canary", "head_sha": SHA, "status": "in_progress"}))


def test_rejects_a_check_run_with_a_bad_conclusion(openapi):
    with pytest.raises(RequestInvalid) as err:
        openapi.validate("POST", "/repos/o/r/check-runs",
                         **_json({"name": "canary", "head_sha": SHA, "conclusion": "passed"}))
    assert err.value.kind == "request" and "passed" in err.value.detail


def test_rejects_more_than_50_annotations_in_one_request(openapi):
    ann = [{"path": "a.py", "start_line": 1, "end_line": 1, "annotation_level": "warning", "message": "m"}] * 51
    with pytest.raises(RequestInvalid):
        openapi.validate("PATCH", "/repos/o/r/check-runs/5",
                         **_json({"output": {"title": "t", "summary": "s", "annotations": ann}}))


def test_rejects_a_wrong_path_and_a_wrong_method(openapi):
    with pytest.raises(RequestInvalid) as err:
        openapi.validate("GET", "/repos/o/r/isues/1/comments")
    assert err.value.kind == "path"
    with pytest.raises(RequestInvalid) as err:
        openapi.validate("PUT", "/repos/o/r/issues/1/comments", **_json({"body": "x"}))
    assert err.value.kind == "path"


def test_multi_segment_parameters_accept_slashes(openapi):
    openapi.validate("GET", "/repos/o/r/contents/sft-tiny/h100/metrics.json", query={"ref": "canary-baselines"})
    openapi.validate("GET", "/repos/o/r/git/ref/heads/team/baselines")


def test_a_malformed_request_through_the_fake_server_is_caught(fake, client):
    with pytest.raises(GitHubError) as err:
        client.post_json(client.repo_path("check-runs"), {"name": "canary", "head_sha": SHA, "conclusion": "bogus"})
    assert err.value.status == 422
    with pytest.raises(GitHubError) as err:
        client.get_json(client.repo_path("isues/1/comments"))
    assert err.value.status == 404
    assert [e.kind for e in fake.invalid] == ["request", "path"]
    fake.invalid.clear()  # expected: keep the fixture's own check from failing the test
