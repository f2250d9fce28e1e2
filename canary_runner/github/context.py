"""The GitHub Actions run context: environment variables plus the event payload, as one dataclass.

The payload matters because the environment alone points at the wrong commit: on `pull_request`
`GITHUB_SHA` is the temporary merge commit, and on `workflow_run` and `issue_comment` it is the default
branch's head. Checks and statuses must go on the PR's head commit to show up on the PR. An
`issue_comment` payload names the PR but not its head: `head_sha_pending` says the caller must ask
the pulls API (`with_pull_request`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

PR_EVENTS = frozenset({"pull_request", "pull_request_target"})


class ContextError(ValueError):
    """The Actions environment is missing or inconsistent (bad input: exit code 2)."""


@dataclass(frozen=True)
class ActionsContext:
    event_name: str
    repository: str  # "owner/name" of the repository the workflow runs in
    sha: str  # the commit the canary is about: the PR head for PR events, else GITHUB_SHA
    ref: str | None = None
    run_id: str | None = None
    run_attempt: str | None = None
    server_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    pr_number: int | None = None
    head_ref: str | None = None  # the PR's (or workflow_run's) head branch
    base_ref: str | None = None
    head_repository: str | None = None  # "owner/name" the head commit lives in (a fork for fork PRs)
    is_fork: bool = False
    default_branch: str | None = None
    actor: str | None = None
    triggering_event: str | None = None  # for workflow_run: the event of the run that triggered it
    head_sha_pending: bool = False  # `sha` is GITHUB_SHA, not the PR's head: look the PR up first
    event: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def with_pull_request(self, pr: Mapping[str, Any]) -> ActionsContext:
        """This context pointed at `pr`'s head (a pulls API object): its commit, branches and fork-ness."""
        head, base = pr.get("head") or {}, pr.get("base") or {}
        head_repo = _full_name(head.get("repo"))
        return replace(self, sha=str(head.get("sha") or self.sha), head_ref=head.get("ref") or self.head_ref,
                       base_ref=base.get("ref") or self.base_ref, head_repository=head_repo,
                       is_fork=head_repo is None or head_repo.lower() != self.repository.lower(),
                       pr_number=int(pr.get("number") or self.pr_number or 0) or None, head_sha_pending=False)

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def repo_name(self) -> str:
        return self.repository.split("/", 1)[1]

    @property
    def is_pull_request(self) -> bool:
        return self.pr_number is not None

    @property
    def run_url(self) -> str | None:
        if not self.run_id:
            return None
        url = f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        if self.run_attempt and self.run_attempt != "1":
            url += f"/attempts/{self.run_attempt}"
        return url

    @property
    def pr_url(self) -> str | None:
        return f"{self.server_url}/{self.repository}/pull/{self.pr_number}" if self.pr_number else None

    @property
    def on_default_branch(self) -> bool:
        """A push/dispatch/schedule on the default branch: the runs that may update baselines."""
        return (not self.is_pull_request and self.default_branch is not None
                and self.ref == f"refs/heads/{self.default_branch}")


def in_actions(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("GITHUB_ACTIONS") == "true"


def load_event(path: str | None) -> dict[str, Any]:
    """The event payload at `GITHUB_EVENT_PATH`; {} when there is none."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ContextError(f"GITHUB_EVENT_PATH points to {path}, which does not exist") from None
    except (OSError, ValueError) as exc:
        raise ContextError(f"cannot read the event payload at {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ContextError(f"the event payload at {path} is not a JSON object")
    return data


def _full_name(repo: Any) -> str | None:
    return repo.get("full_name") if isinstance(repo, dict) else None


def _is_repository(repo: Any, full_name: str, repo_id: Any) -> bool:
    """Does `repo` (a pull-request-minimal's `base.repo`: id, url, name) name this repository?"""
    if not isinstance(repo, dict):
        return False
    if repo_id is not None and repo.get("id") is not None:
        return repo.get("id") == repo_id
    url = str(repo.get("url") or "")
    return url.lower().endswith(f"/repos/{full_name.lower()}")


def _run_pull_request(wr: Mapping[str, Any], repository: str, repo_id: Any) -> Mapping[str, Any] | None:
    """The `workflow_run.pull_requests` entry that is this run's PR, or None.

    GitHub lists every open PR whose head sha or branch matches the run, including PRs of other
    repositories that share a branch name and PRs whose head has moved on. Only an entry whose head is
    the run's commit and whose base is this repository is the run's PR; without one, the caller looks
    the PR up by head commit and branch."""
    sha = wr.get("head_sha")
    for pr in wr.get("pull_requests") or []:
        if not isinstance(pr, dict):
            continue
        if (pr.get("head") or {}).get("sha") == sha and _is_repository((pr.get("base") or {}).get("repo"),
                                                                       repository, repo_id):
            return pr
    return None


def load_context(env: Mapping[str, str] | None = None, event: Mapping[str, Any] | None = None) -> ActionsContext:
    """Build the context from `env` (default: os.environ) and the payload (default: read from
    `GITHUB_EVENT_PATH`). Raises `ContextError` when required variables are missing."""
    env = os.environ if env is None else env
    repository = env.get("GITHUB_REPOSITORY", "")
    if "/" not in repository:
        raise ContextError("GITHUB_REPOSITORY is not set (expected 'owner/name'); is this running in GitHub Actions?")
    event_name = env.get("GITHUB_EVENT_NAME", "")
    payload = dict(event) if event is not None else load_event(env.get("GITHUB_EVENT_PATH"))

    sha = env.get("GITHUB_SHA", "")
    pr_number: int | None = None
    head_ref = env.get("GITHUB_HEAD_REF") or None
    base_ref = env.get("GITHUB_BASE_REF") or None
    head_repo: str | None = repository
    triggering: str | None = None
    repo_obj = payload.get("repository") if isinstance(payload.get("repository"), dict) else {}
    default_branch = repo_obj.get("default_branch")

    if event_name in PR_EVENTS:
        pr = payload.get("pull_request")
        if not isinstance(pr, dict):
            raise ContextError(f"{event_name} event payload has no pull_request object")
        pr_number = pr.get("number") or payload.get("number")
        head, base = pr.get("head") or {}, pr.get("base") or {}
        sha = head.get("sha") or sha
        head_ref = head.get("ref") or head_ref
        base_ref = base.get("ref") or base_ref
        # head.repo is null when the fork was deleted: still a fork for permission purposes.
        head_repo = _full_name(head.get("repo"))
        base_repo = _full_name(base.get("repo")) or repository
        default_branch = default_branch or (base.get("repo") or {}).get("default_branch")
    elif event_name == "workflow_run":
        wr = payload.get("workflow_run")
        if not isinstance(wr, dict):
            raise ContextError("workflow_run event payload has no workflow_run object")
        sha = wr.get("head_sha") or sha
        head_ref = wr.get("head_branch") or head_ref
        triggering = wr.get("event")
        head_repo = _full_name(wr.get("head_repository"))
        base_repo = _full_name(wr.get("repository")) or repository
        # For fork PRs the list is empty, and it may hold PRs that are not this run's: see
        # _run_pull_request. Without a match the caller finds the PR (publish.find_pull_request).
        repo_id = repo_obj.get("id") if repo_obj.get("id") is not None else (wr.get("repository") or {}).get("id")
        pr = _run_pull_request(wr, repository, repo_id)
        if pr is not None:
            pr_number = pr.get("number")
            base_ref = (pr.get("base") or {}).get("ref") or base_ref
    else:
        base_repo = repository
        if event_name == "issue_comment" and isinstance(payload.get("issue"), dict):
            if payload["issue"].get("pull_request"):
                pr_number = payload["issue"].get("number")
                # GITHUB_SHA is the default branch's head here; the PR's head comes from the API.
                head_ref = head_repo = None

    if pr_number is not None:
        try:
            pr_number = int(pr_number)
        except (TypeError, ValueError):
            raise ContextError(f"pull request number {pr_number!r} in the event payload is not a number") from None
    if not sha:
        raise ContextError("no commit SHA: GITHUB_SHA is not set and the event payload names none")
    is_fork = head_repo is None or head_repo.lower() != base_repo.lower()

    return ActionsContext(
        event_name=event_name,
        repository=repository,
        sha=sha,
        ref=env.get("GITHUB_REF") or None,
        run_id=env.get("GITHUB_RUN_ID") or None,
        run_attempt=env.get("GITHUB_RUN_ATTEMPT") or None,
        server_url=(env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"),
        api_url=(env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
        pr_number=pr_number,
        head_ref=head_ref,
        base_ref=base_ref,
        head_repository=head_repo,
        is_fork=is_fork,
        default_branch=default_branch,
        actor=env.get("GITHUB_ACTOR") or None,
        triggering_event=triggering,
        head_sha_pending=event_name == "issue_comment" and pr_number is not None,
        event=payload,
    )
