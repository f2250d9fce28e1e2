"""Publishing a verdict: one sticky PR comment, a check run, or a commit status as fallback.

Permission problems never raise from here: fork PRs and read-only tokens are normal, and the canary's
report is already on disk and in the step summary. Each function returns a result saying what was
published and what fell back, and logs one clear line about it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import GitHubClient, GitHubError, PermissionDenied

log = logging.getLogger("canary_runner.github")

DEFAULT_BOT_LOGIN = "github-actions[bot]"
# GitHub's documented limits.
COMMENT_MAX_CHARS = 65_536
CHECK_TEXT_MAX_CHARS = 65_535
CHECK_TITLE_MAX_CHARS = 1_000  # not documented; long titles are clipped in the UI anyway
ANNOTATIONS_PER_REQUEST = 50
STATUS_DESCRIPTION_MAX_CHARS = 140
CONCLUSIONS = ("success", "failure", "neutral")
ANNOTATION_LEVELS = ("notice", "warning", "failure")
TRUNCATION_NOTE = "\n\n… (truncated: the full report is in the job summary and the run's artifacts)"


def sticky_marker(config_name: str) -> str:
    """The hidden marker that identifies the canary's comment for one config."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in config_name)
    return f"<!-- rlhf-canary:config={safe} -->"


def truncate(text: str, limit: int, note: str = TRUNCATION_NOTE) -> str:
    """`text` cut to at most `limit` characters, ending with `note` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(note))] + note[:limit]


# ------------------------------------------------------------------------------------------ results
@dataclass
class ChannelResult:
    """What happened on one channel (comment, check, status).

    outcome: created | updated | completed | in_progress | denied | failed | skipped
    """

    channel: str
    outcome: str
    id: int | None = None
    url: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("created", "updated", "completed", "in_progress")


@dataclass
class PublishResult:
    comment: ChannelResult | None = None
    check: ChannelResult | None = None
    status: ChannelResult | None = None
    check_run_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def published(self) -> list[str]:
        return [c.channel for c in (self.comment, self.check, self.status) if c and c.ok]

    @property
    def fell_back(self) -> list[str]:
        return [c.channel for c in (self.comment, self.check, self.status) if c and c.outcome in ("denied", "failed")]

    @property
    def summary_only(self) -> bool:
        """Nothing reached the PR: the job summary is the only place the verdict shows."""
        return not self.published


# ----------------------------------------------------------------------------------------- identity
def resolve_login(client: GitHubClient, configured: str | None = None) -> str:
    """The login that the token's comments are authored by.

    GITHUB_TOKEN and app installation tokens cannot call `GET /user` (403), so the login is
    configurable and defaults to `github-actions[bot]`; `/user` is asked only for user tokens.
    """
    if configured:
        return configured
    if client.token_kind in ("user", "unknown"):
        try:
            login = client.get_json("/user").get("login")
            if login:
                return str(login)
        except GitHubError as exc:
            log.debug("GET /user failed (%s); assuming %s", exc.status, DEFAULT_BOT_LOGIN)
    return DEFAULT_BOT_LOGIN


# ----------------------------------------------------------------------------------- sticky comment
def find_sticky_comment(client: GitHubClient, issue_number: int, marker: str, login: str) -> dict | None:
    """The first comment on the issue/PR that holds `marker` AND was written by `login`.
    Anyone can type the marker, so the author check is what makes the match safe."""
    matches = [
        c for c in client.paginate(client.repo_path(f"issues/{int(issue_number)}/comments"))
        if marker in (c.get("body") or "") and ((c.get("user") or {}).get("login") or "").lower() == login.lower()
    ]
    if len(matches) > 1:
        log.info("found %d canary comments with the same marker; updating the oldest", len(matches))
    return matches[0] if matches else None


def upsert_sticky_comment(client: GitHubClient, issue_number: int, body: str, marker: str, *,
                          login: str | None = None) -> ChannelResult:
    """Update the canary's comment in place, or create it: one comment per PR and marker."""
    if not marker:
        raise ValueError("a sticky comment needs a non-empty marker")
    if not body.startswith(marker):
        # Lead with the marker so that cutting the tail to GitHub's limit can never drop it.
        body = f"{marker}\n{body.replace(marker, '')}"
    body = truncate(body, COMMENT_MAX_CHARS)
    try:
        login = resolve_login(client, login)
        existing = find_sticky_comment(client, issue_number, marker, login)
        data = None
        if existing:
            try:
                data = client.patch_json(client.repo_path(f"issues/comments/{existing['id']}"), {"body": body})
                result = ChannelResult("comment", "updated", data.get("id"), data.get("html_url"))
            except PermissionDenied as exc:
                if exc.status != 404:
                    raise
                log.info("canary comment %s vanished while updating it; creating a new one", existing["id"])
        if data is None:
            data = client.post_json(client.repo_path(f"issues/{int(issue_number)}/comments"), {"body": body})
            result = ChannelResult("comment", "created", data.get("id"), data.get("html_url"))
    except PermissionDenied as exc:
        log.warning("PR comment not posted: the token may not comment on #%s (%s %s). "
                    "For fork PRs use the workflow_run pattern; the report is in the job summary.",
                    issue_number, exc.status, exc.message)
        return ChannelResult("comment", "denied", detail=exc.message)
    log.info("PR comment %s: %s", result.outcome, result.url or result.id)
    return result


# -------------------------------------------------------------------------------------- check runs
def _check_output(title: str, summary: str, text: str | None, annotations: Sequence[Mapping[str, Any]]) -> dict:
    out: dict[str, Any] = {"title": truncate(title, CHECK_TITLE_MAX_CHARS, "…"),
                           "summary": truncate(summary, CHECK_TEXT_MAX_CHARS)}
    if text:
        out["text"] = truncate(text, CHECK_TEXT_MAX_CHARS)
    if annotations:
        out["annotations"] = list(annotations)
    return out


def _normalize_annotations(annotations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for a in annotations:
        a = dict(a)
        missing = {"path", "start_line", "end_line", "annotation_level", "message"} - a.keys()
        if missing:
            raise ValueError(f"annotation is missing {sorted(missing)}: {a!r}")
        if a["annotation_level"] not in ANNOTATION_LEVELS:
            raise ValueError(f"annotation_level must be one of {ANNOTATION_LEVELS}, got {a['annotation_level']!r}")
        a["message"] = truncate(str(a["message"]), 64 * 1024, "…")
        out.append(a)
    return out


def start_check_run(client: GitHubClient, head_sha: str, name: str, *, title: str | None = None,
                    summary: str | None = None, details_url: str | None = None,
                    external_id: str | None = None) -> ChannelResult:
    """Open a check run `in_progress` on the head commit, so the PR shows the canary is running."""
    body: dict[str, Any] = {"name": name, "head_sha": head_sha, "status": "in_progress"}
    if details_url:
        body["details_url"] = details_url
    if external_id:
        body["external_id"] = external_id
    if title or summary:
        body["output"] = _check_output(title or name, summary or title or name, None, ())
    try:
        data = client.post_json(client.repo_path("check-runs"), body)
    except PermissionDenied as exc:
        log.warning("check run not created (%s %s): the token lacks `checks: write` or this is a fork PR",
                    exc.status, exc.message)
        return ChannelResult("check", "denied", detail=exc.message)
    log.info("check run %r in progress: %s", name, data.get("html_url") or data.get("id"))
    return ChannelResult("check", "in_progress", data.get("id"), data.get("html_url"))


def complete_check_run(client: GitHubClient, *, conclusion: str, title: str, summary: str,
                       text: str | None = None, annotations: Iterable[Mapping[str, Any]] = (),
                       check_run_id: int | None = None, head_sha: str | None = None,
                       name: str | None = None, details_url: str | None = None) -> ChannelResult:
    """Complete check run `check_run_id`, or create a completed one when there is none.

    The verdict goes in the first request, with the first 50 annotations; the rest follow in further
    PATCHes (GitHub appends annotations), so the conclusion lands even if a later batch fails.
    """
    if conclusion not in CONCLUSIONS:
        raise ValueError(f"conclusion must be one of {CONCLUSIONS}, got {conclusion!r}")
    notes = _normalize_annotations(annotations)
    batches = [notes[i:i + ANNOTATIONS_PER_REQUEST] for i in range(0, len(notes), ANNOTATIONS_PER_REQUEST)] or [[]]
    body: dict[str, Any] = {"status": "completed", "conclusion": conclusion,
                            "output": _check_output(title, summary, text, batches[0])}
    if details_url:
        body["details_url"] = details_url
    try:
        if check_run_id is None:
            if not (head_sha and name):
                raise ValueError("head_sha and name are needed to create a check run")
            data = client.post_json(client.repo_path("check-runs"), {"name": name, "head_sha": head_sha, **body})
        else:
            data = client.patch_json(client.repo_path(f"check-runs/{int(check_run_id)}"), body)
        run_id = data.get("id", check_run_id)
        for batch in batches[1:]:
            client.patch_json(client.repo_path(f"check-runs/{int(run_id)}"),
                              {"output": {"title": body["output"]["title"], "summary": body["output"]["summary"],
                                          "annotations": batch}})
    except PermissionDenied as exc:
        log.warning("check run not completed (%s %s): the token lacks `checks: write` or this is a fork PR",
                    exc.status, exc.message)
        return ChannelResult("check", "denied", check_run_id, detail=exc.message)
    log.info("check run completed: %s (%d annotations)", conclusion, len(notes))
    return ChannelResult("check", "completed", run_id, data.get("html_url"))


# -------------------------------------------------------------------------------------- statuses
_STATUS_STATE = {"success": "success", "failure": "failure", "neutral": "success", "pending": "pending",
                 "error": "error"}


def set_commit_status(client: GitHubClient, sha: str, state: str, description: str, *,
                      context: str, target_url: str | None = None) -> ChannelResult:
    """A commit status: the fallback when check runs are refused. `state` may also be a check
    conclusion (neutral maps to success, as statuses have no neutral)."""
    if state not in _STATUS_STATE:
        raise ValueError(f"state must be one of {sorted(_STATUS_STATE)}, got {state!r}")
    if state == "neutral" and not description.lower().startswith("neutral"):
        description = f"neutral: {description}"
    body: dict[str, Any] = {"state": _STATUS_STATE[state], "context": context,
                            "description": truncate(description, STATUS_DESCRIPTION_MAX_CHARS, "…")}
    if target_url:
        body["target_url"] = target_url
    try:
        data = client.post_json(client.repo_path(f"statuses/{sha}"), body)
    except PermissionDenied as exc:
        log.warning("commit status not set (%s %s): the token lacks `statuses: write`", exc.status, exc.message)
        return ChannelResult("status", "denied", detail=exc.message)
    log.info("commit status %s set to %s", context, body["state"])
    return ChannelResult("status", "created", data.get("id"), data.get("url"))


# --------------------------------------------------------------------------------- pull requests
def find_pull_request(client: GitHubClient, head_sha: str, head_owner: str | None, head_branch: str | None) -> int | None:
    """The open PR whose head is `head_sha`. For `workflow_run` events from forks GitHub leaves
    `pull_requests` empty; `GET /pulls?head=owner:branch` still finds them."""
    if not (head_owner and head_branch):
        return None
    try:
        for pr in client.paginate(client.repo_path("pulls"), params={"state": "open", "head": f"{head_owner}:{head_branch}"}):
            if (pr.get("head") or {}).get("sha") == head_sha:
                return int(pr["number"])
    except GitHubError as exc:
        log.warning("could not look up the pull request for %s (%s %s)", head_sha[:12], exc.status, exc.message)
    return None


# ------------------------------------------------------------------------------------- publisher
class Publisher:
    """The verdict's way to the PR, with its fallbacks: check run -> commit status -> summary only;
    comment -> summary only. `start()` at the beginning of a run, `finish()` at the end.

    Never raises `GitHubError`: every refusal or failure is in the returned `PublishResult`.
    """

    def __init__(self, client: GitHubClient, *, head_sha: str, check_name: str,
                 pr_number: int | None = None, marker: str | None = None, login: str | None = None,
                 details_url: str | None = None, status_context: str | None = None):
        self.client = client
        self.head_sha = head_sha
        self.check_name = check_name
        self.pr_number = pr_number
        self.marker = marker or sticky_marker(check_name)
        self.login = login
        self.details_url = details_url
        self.status_context = status_context or check_name
        self.check_run_id: int | None = None
        self._checks_denied = False

    def start(self, summary: str = "The canary is running.") -> PublishResult:
        result = PublishResult()
        try:
            check = start_check_run(self.client, self.head_sha, self.check_name, title="Running",
                                    summary=summary, details_url=self.details_url)
        except GitHubError as exc:
            check = ChannelResult("check", "failed", detail=str(exc))
            log.warning("check run not created: %s", exc)
        result.check = check
        if check.ok:
            self.check_run_id = result.check_run_id = check.id
        else:
            self._checks_denied = check.outcome == "denied"
            result.status = self._status("pending", "The canary is running.")
        self._note_summary_only(result)
        return result

    def finish(self, conclusion: str, title: str, summary: str, *, text: str | None = None,
               annotations: Iterable[Mapping[str, Any]] = (), comment_body: str | None = None) -> PublishResult:
        result = PublishResult(check_run_id=self.check_run_id)
        if comment_body is not None and self.pr_number is not None:
            try:
                result.comment = upsert_sticky_comment(self.client, self.pr_number, comment_body, self.marker,
                                                       login=self.login)
            except GitHubError as exc:
                log.warning("PR comment not posted: %s", exc)
                result.comment = ChannelResult("comment", "failed", detail=str(exc))
        elif comment_body is not None:
            result.comment = ChannelResult("comment", "skipped", detail="not a pull request")

        if not self._checks_denied:
            try:
                result.check = complete_check_run(
                    self.client, conclusion=conclusion, title=title, summary=summary, text=text,
                    annotations=annotations, check_run_id=self.check_run_id, head_sha=self.head_sha,
                    name=self.check_name, details_url=self.details_url)
            except GitHubError as exc:
                log.warning("check run not completed: %s", exc)
                result.check = ChannelResult("check", "failed", self.check_run_id, detail=str(exc))
            result.check_run_id = result.check.id
        else:
            result.check = ChannelResult("check", "denied", detail="refused at start")
        if not result.check.ok:
            result.status = self._status(conclusion, title)
        self._note_summary_only(result)
        return result

    def _status(self, state: str, description: str) -> ChannelResult:
        try:
            return set_commit_status(self.client, self.head_sha, state, description,
                                     context=self.status_context, target_url=self.details_url)
        except GitHubError as exc:
            log.warning("commit status not set: %s", exc)
            return ChannelResult("status", "failed", detail=str(exc))

    @staticmethod
    def _note_summary_only(result: PublishResult) -> None:
        if result.summary_only:
            line = ("GitHub refused every channel (check run, commit status, comment): "
                    "the verdict is in the job summary only")
            result.notes.append(line)
            log.warning(line)
        elif result.fell_back:
            result.notes.append(f"published via {', '.join(result.published)}; "
                                f"refused or failed: {', '.join(result.fell_back)}")
