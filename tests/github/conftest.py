"""Fixtures: GitHub's OpenAPI description (loaded once), a fake GitHub on loopback, a client for it."""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer

from canary_runner.github.client import GitHubClient, RetryPolicy

from .fakegithub import FakeGitHub
from .openapi_validator import GitHubOpenAPI, spec_path

NOW = 1_750_000_000.0  # the injected clock: rate-limit resets are relative to it


@pytest.fixture(scope="session")
def openapi() -> GitHubOpenAPI:
    return GitHubOpenAPI(spec_path())


@pytest.fixture
def fake(httpserver: HTTPServer, openapi: GitHubOpenAPI):
    gh = FakeGitHub(httpserver, openapi)
    yield gh
    # Every request the code made must be one GitHub documents; tests that send bad ones on
    # purpose empty `invalid` themselves.
    assert not gh.invalid, f"requests GitHub's OpenAPI description rejects: {gh.invalid}"


@pytest.fixture
def blob_server():
    """A second loopback host standing in for artifact blob storage (127.0.0.1 vs localhost)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(fake: FakeGitHub, sleeps: list[float]) -> GitHubClient:
    policy = RetryPolicy(max_attempts=4, max_total_wait=120.0, backoff_base=0.5, sleep=sleeps.append,
                         clock=lambda: NOW)
    with GitHubClient(fake.token, api_url=fake.url, repo=fake.repo, retry=policy) as c:
        yield c
