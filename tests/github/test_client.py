from __future__ import annotations

import logging

import pytest

from canary_runner.github.client import (
    GitHubClient,
    GitHubError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    strip_credentials,
)

from .conftest import NOW
from .fakegithub import FORBIDDEN


def test_502_then_success(fake, client, sleeps):
    fake.fault("GET", r"/repos/.+/canary-app$", status=502, body={"message": "Server Error"})
    assert client.get_json(client.repo_path())["default_branch"] == "main"
    assert len(fake.calls("GET")) == 2
    assert sleeps == [0.5]


def test_server_errors_give_up_after_the_attempt_limit(fake, client, sleeps):
    fake.fault("GET", r"/canary-app$", status=503, times=10)
    with pytest.raises(GitHubError) as err:
        client.get_json(client.repo_path())
    assert err.value.status == 503 and "gave up after 4 attempts" in str(err.value)
    assert sleeps == [0.5, 1.0, 2.0]


def test_403_rate_limit_honours_retry_after(fake, client, sleeps):
    fake.fault("GET", r"/canary-app$", status=403, headers={"retry-after": "7"},
               body={"message": "You have exceeded a secondary rate limit."})
    assert client.get_json(client.repo_path())["full_name"] == fake.repo
    assert sleeps == [7.0]


def test_429_waits_until_ratelimit_reset(fake, client, sleeps):
    fake.fault("GET", r"/canary-app$", status=429,
               headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 20)},
               body={"message": "API rate limit exceeded"})
    assert client.get_json(client.repo_path())["full_name"] == fake.repo
    assert sleeps == [21.0]  # until the reset, plus the one-second margin


def test_rate_limit_beyond_the_wait_budget_fails_fast(fake, client, sleeps):
    fake.fault("GET", r"/canary-app$", status=403,
               headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 3600)},
               body={"message": "API rate limit exceeded for installation."})
    with pytest.raises(RateLimited) as err:
        client.get_json(client.repo_path())
    assert sleeps == [] and "resets at epoch" in err.value.message


def test_403_without_rate_limit_is_permission_denied_and_not_retried(fake, client, sleeps):
    fake.denied.add("checks")
    with pytest.raises(PermissionDenied) as err:
        client.post_json(client.repo_path("check-runs"), {"name": "c", "head_sha": "a" * 40})
    assert err.value.status == 403 and err.value.message == FORBIDDEN["message"]
    assert sleeps == [] and len(fake.calls("POST")) == 1


def test_404_on_read_is_not_found_and_on_write_is_permission_denied(fake, client):
    with pytest.raises(NotFound):
        client.get_json(client.repo_path("git/ref/heads/nope"))
    with pytest.raises(PermissionDenied) as err:
        client.patch_json(client.repo_path("issues/comments/999999"), {"body": "x"})
    assert err.value.status == 404


def test_pagination_follows_link_headers(fake, client):
    for i in range(205):
        fake.add_comment(7, f"comment {i}", "someone")
    bodies = [c["body"] for c in client.paginate(client.repo_path("issues/7/comments"), per_page=100)]
    assert bodies == [f"comment {i}" for i in range(205)]
    assert [r.query.get("page") for r in fake.calls("GET", "/comments")] == [None, "2", "3"]


def test_pagination_refuses_a_link_to_another_origin(fake, client, httpserver):
    fake.fault("GET", r"/comments$", status=200, body=[{"id": 1}],
               headers={"Link": '<https://evil.example/repos/x/y/issues/7/comments?page=2>; rel="next"'})
    with pytest.raises(GitHubError, match="another origin"):
        list(client.paginate(client.repo_path("issues/7/comments")))


def test_the_token_never_leaks(fake, caplog):
    token = "ghp_SuperSecretValue0123456789"
    fake.token = token
    fake.fault("GET", r"/canary-app$", status=500, times=5, body={"message": f"echo {token}"})
    c = GitHubClient(token, api_url=fake.url, repo=fake.repo,
                     retry=RetryPolicy(max_attempts=2, backoff_base=0.0, sleep=lambda s: None))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GitHubError) as err:
        c.get_json(c.repo_path())
    texts = [repr(c), str(err.value), repr(err.value), err.value.url, caplog.text, repr(c.session.auth)]
    assert all(token not in t for t in texts)
    assert "***" in err.value.message
    assert fake.requests[0].headers["Authorization"] == f"Bearer {token}"  # it was still sent


def test_connection_errors_become_github_errors_without_the_token():
    c = GitHubClient("ghp_secret", api_url="http://127.0.0.1:9", repo="o/r",
                     retry=RetryPolicy(sleep=lambda s: None))
    c.session.adapters["http://"].max_retries.total = 0
    with pytest.raises(GitHubError) as err:
        c.get_json("/user")
    assert err.value.status == 0 and "ghp_secret" not in str(err.value)


def test_credentials_in_urls_are_stripped_and_refused():
    assert strip_credentials("https://x:tok@api.example/repos?access_token=abc&page=2") == \
        "https://api.example/repos?page=2"
    with pytest.raises(ValueError, match="credentials"):
        GitHubClient("t", api_url="https://x-access-token:tok@api.github.com", repo="o/r")
    with pytest.raises(ValueError, match="owner/name"):
        GitHubClient("t", repo="not-a-repo")


def test_api_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", "https://ghe.example.com/api/v3/")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    c = GitHubClient("t")
    assert c.api_url == "https://ghe.example.com/api/v3" and c.repo == "acme/models"
    assert c.url(c.repo_path("check-runs")) == "https://ghe.example.com/api/v3/repos/acme/models/check-runs"
    with pytest.raises(ValueError, match="another origin"):
        c.request("GET", "https://elsewhere.example/x")


def test_503_with_retry_after_and_secondary_limit_without_hints(fake, client, sleeps):
    fake.fault("GET", r"/canary-app$", status=503, headers={"retry-after": "3"})
    fake.fault("GET", r"/canary-app$", status=403, body={"message": "You have exceeded a secondary rate limit"})
    assert client.get_json(client.repo_path())["default_branch"] == "main"
    assert sleeps == [3.0, 60.0]  # GitHub asks for at least a minute when it gives no hint
