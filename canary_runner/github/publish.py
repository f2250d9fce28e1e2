"""Publishing a verdict: one sticky PR comment, a check run, or a commit status as fallback.

Permission problems never raise from here: fork PRs and read-only tokens are normal, and the canary's
report is already on disk and in the step summary. Each function returns a result saying what was
published and what fell back, and logs one clear line about it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import GitHubClient, GitHubError, PermissionDenied, ServerError, is_outage

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
POST_ATTEMPTS = 3  # a create that may have landed is looked for, then posted again, at most this often


def sticky_marker(config_name: str) -> str:
    """The hidden marker that identifies the canary's comment for one config (report.marker's rule):
    one line, nothing that could close the HTML comment, and one per name: a name whose characters
    had to be replaced also carries a digest of itself."""
    name = str(config_name)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    if safe != name:
        safe += ".x" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"<!-- rlhf-canary:config={safe} -->"


def first_line(body: str | None) -> str:
    return (body or "").split("\n", 1)[0].rstrip("\r")


def holds_marker(body: str | None, marker: str) -> bool:
    """The comment is the one `marker` names: the marker is its whole first line. A marker anywhere
    else (quoted in a traceback, typed by someone) does not count."""
    return first_line(body) == marker


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
    cause (denied/failed only): permission (GitHub refused: fork PR, read-only token, missing
    `permissions:`), outage (5xx, no response, rate limited) or error (anything else)
    author: the login GitHub recorded as the writer (a comment's user, a check run's app + "[bot]")
    """

    channel: str
    outcome: str
    id: int | None = None
    url: str | None = None
    detail: str = ""
    cause: str = ""
    author: str | None = None

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

    @property
    def causes(self) -> set[str]:
        """Why channels fell back: a subset of {permission, outage, error}."""
        return {c.cause or "error" for c in (self.comment, self.check, self.status)
                if c and c.outcome in ("denied", "failed")}


def failure_cause(exc: BaseException) -> str:
    if isinstance(exc, PermissionDenied):
        return "permission"
    return "outage" if is_outage(exc) else "error"


def failed(channel: str, exc: GitHubError, id: int | None = None) -> ChannelResult:
    """A channel that GitHub refused (`denied`) or failed (`failed`), with why."""
    cause = failure_cause(exc)
    return ChannelResult(channel, "denied" if cause == "permission" else "failed", id, detail=str(exc), cause=cause)


# ----------------------------------------------------------------------------------------- identity
def app_login(slug: str) -> str:
    """The login a GitHub App's installation token writes comments as."""
    return f"{slug}[bot]"


def resolve_login(client: GitHubClient, configured: str | None = None) -> str:
    """The login that the token's comments are authored by; comments by anyone else are never ours.

    In order: `configured` (the `comment-author` input, or the author GitHub recorded on this run's
    own check run or comment: see `Publisher`); `GET /user` for user tokens (PATs, OAuth);
    `GET /app` for installation tokens (`ghs_`: GITHUB_TOKEN and GitHub App tokens such as
    actions/create-github-app-token's), whose slug + "[bot]" is the login; else `github-actions[bot]`,
    the GITHUB_TOKEN's login. `GET /user` never works for installation tokens, and `GET /app`
    needs a JWT on github.com, so the recorded author is what usually decides.
    """
    if configured:
        return configured
    kind = client.token_kind
    if kind in ("user", "unknown"):
        try:
            login = (client.get_json("/user") or {}).get("login")
            if login:
                return str(login)
        except GitHubError as exc:
            log.debug("GET /user failed (%s)", exc.status)
    if kind in ("installation", "unknown"):
        try:
            slug = (client.get_json("/app") or {}).get("slug")
            if slug:
                return app_login(str(slug))
        except GitHubError as exc:
            log.debug("GET /app failed (%s)", exc.status)
    log.info("could not tell which account the token comments as; assuming %s (set the comment-author "
             "input if the token belongs to a GitHub App or a user)", DEFAULT_BOT_LOGIN)
    return DEFAULT_BOT_LOGIN


# ------------------------------------------------------------------------- creates that may have landed
def post_once(client: GitHubClient, path: str, body: Mapping[str, Any], what: str,
              find: Callable[[], dict | None]) -> dict:
    """POST `body` to create one thing (a comment, a check run) without ever creating it twice.

    A 5xx or a lost response may come after GitHub wrote it, so before posting again `find()` looks
    for what the failed attempt may have created; at most `POST_ATTEMPTS` posts, with backoff."""
    for attempt in range(1, POST_ATTEMPTS + 1):
        try:
            return client.post_json(path, dict(body))
        except ServerError as exc:
            if attempt == POST_ATTEMPTS:
                raise
            client.retry.sleep(client.retry.backoff(attempt))
            if exc.maybe_written:
                log.warning("creating the %s got %s, which may come after the write: looking for it before "
                            "posting again", what, exc.status or "no response")
                found = find()
                if found is not None:
                    log.info("the %s had been created (id %s); not posting it again", what, found.get("id"))
                    return found
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------- sticky comment
def _author(comment: Mapping[str, Any]) -> str:
    return str((comment.get("user") or {}).get("login") or "")


def find_sticky_comment(client: GitHubClient, issue_number: int, marker: str, login: str) -> dict | None:
    """The first comment on the issue/PR whose first line is `marker` AND that `login` wrote.
    Anyone can type the marker, so the author check is what makes the match safe; a marker quoted
    further down (another config's, inside a traceback) never matches."""
    matches = [
        c for c in client.paginate(client.repo_path(f"issues/{int(issue_number)}/comments"))
        if holds_marker(c.get("body"), marker) and _author(c).lower() == login.lower()
    ]
    if len(matches) > 1:
        log.info("found %d canary comments with the same marker; updating the oldest", len(matches))
    return matches[0] if matches else None


def upsert_sticky_comment(client: GitHubClient, issue_number: int, body: str, marker: str, *,
                          login: str | None = None) -> ChannelResult:
    """Update the canary's comment in place, or create it: one comment per PR and marker."""
    if not marker or "\n" in marker:
        raise ValueError("a sticky comment needs a non-empty, one-line marker")
    if first_line(body) != marker:
        # Lead with the marker line so that cutting the tail to GitHub's limit can never drop it.
        body = f"{marker}\n{body}"
    body = truncate(body, COMMENT_MAX_CHARS)
    issue = int(issue_number)
    try:
        login = resolve_login(client, login)
        existing = find_sticky_comment(client, issue, marker, login)
        data = None
        if existing:
            try:
                data = client.patch_json(client.repo_path(f"issues/comments/{existing['id']}"), {"body": body})
                result = ChannelResult("comment", "updated", data.get("id"), data.get("html_url"),
                                       author=_author(data) or login)
            except PermissionDenied as exc:
                if exc.status != 404:
                    raise
                log.info("canary comment %s vanished while updating it; creating a new one", existing["id"])
        if data is None:
            data = post_once(client, client.repo_path(f"issues/{issue}/comments"), {"body": body}, "PR comment",
                             lambda: _find_posted_comment(client, issue, marker, body, login))
            result = ChannelResult("comment", "created", data.get("id"), data.get("html_url"),
                                   author=_author(data) or None)
            if result.author and result.author.lower() != login.lower():
                log.warning("the PR comment was written by %s, but comments by %s were searched for the previous "
                            "one: set the comment-author input to %s so that the next run updates this comment "
                            "instead of adding another", result.author, login, result.author)
    except PermissionDenied as exc:
        log.warning("PR comment not posted: GitHub refused the token on #%s (%s %s): a fork PR, or a token "
                    "without pull-requests: write. For fork PRs use the workflow_run pattern; the report is "
                    "in the job summary.", issue, exc.status, exc.message)
        return ChannelResult("comment", "denied", detail=exc.message, cause="permission")
    log.info("PR comment %s: %s", result.outcome, result.url or result.id)
    return result


def _find_posted_comment(client: GitHubClient, issue: int, marker: str, body: str, login: str) -> dict | None:
    """The comment a failed POST may have created: our marker line and exactly our body, written by
    `login` or by some app (only apps are `Bot`s, and no person can write as one)."""
    def norm(text: str | None) -> str:
        return (text or "").replace("\r\n", "\n").strip()

    for c in client.paginate(client.repo_path(f"issues/{issue}/comments")):
        by_us = _author(c).lower() == login.lower() or (c.get("user") or {}).get("type") == "Bot"
        if holds_marker(c.get("body"), marker) and norm(c.get("body")) == norm(body) and by_us:
            return c
    return None


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


def _check_author(data: Mapping[str, Any]) -> str | None:
    """The login the token writes as, from a check run it created: only GitHub Apps create check
    runs, and an app comments as `<slug>[bot]` (GITHUB_TOKEN: github-actions[bot])."""
    slug = (data.get("app") or {}).get("slug")
    return app_login(str(slug)) if slug else None


def _find_check_run(client: GitHubClient, head_sha: str, name: str, external_id: str) -> dict | None:
    """The check run a failed POST may have created: same commit, name and our `external_id`."""
    for run in client.paginate(client.repo_path(f"commits/{head_sha}/check-runs"),
                               params={"check_name": name, "filter": "all"}, items_key="check_runs"):
        if run.get("external_id") == external_id:
            return run
    return None


def _create_check_run(client: GitHubClient, body: dict[str, Any]) -> dict:
    external_id = body.setdefault("external_id", f"rlhf-canary-{uuid.uuid4()}")
    return post_once(client, client.repo_path("check-runs"), body, "check run",
                     lambda: _find_check_run(client, body["head_sha"], body["name"], external_id))


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
        data = _create_check_run(client, body)
    except PermissionDenied as exc:
        log.warning("check run not created (%s %s): GitHub refused the token: it lacks `checks: write`, or this "
                    "is a fork PR", exc.status, exc.message)
        return ChannelResult("check", "denied", detail=exc.message, cause="permission")
    log.info("check run %r in progress: %s", name, data.get("html_url") or data.get("id"))
    return ChannelResult("check", "in_progress", data.get("id"), data.get("html_url"), author=_check_author(data))


def complete_check_run(client: GitHubClient, *, conclusion: str, title: str, summary: str,
                       text: str | None = None, annotations: Iterable[Mapping[str, Any]] = (),
                       check_run_id: int | None = None, head_sha: str | None = None,
                       name: str | None = None, details_url: str | None = None,
                       external_id: str | None = None) -> ChannelResult:
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
            created = {"name": name, "head_sha": head_sha, **body}
            if external_id:
                created["external_id"] = external_id
            data = _create_check_run(client, created)
        else:
            data = client.patch_json(client.repo_path(f"check-runs/{int(check_run_id)}"), body)
        run_id = data.get("id", check_run_id)
        for batch in batches[1:]:
            client.patch_json(client.repo_path(f"check-runs/{int(run_id)}"),
                              {"output": {"title": body["output"]["title"], "summary": body["output"]["summary"],
                                          "annotations": batch}})
    except PermissionDenied as exc:
        log.warning("check run not completed (%s %s): GitHub refused the token: it lacks `checks: write`, or "
                    "this is a fork PR", exc.status, exc.message)
        return ChannelResult("check", "denied", check_run_id, detail=exc.message, cause="permission")
    log.info("check run completed: %s (%d annotations)", conclusion, len(notes))
    return ChannelResult("check", "completed", run_id, data.get("html_url"), author=_check_author(data))


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
        # Repeating a status is harmless (the latest per context wins), so a 5xx is retried.
        data = client.post_json(client.repo_path(f"statuses/{sha}"), body, retry_server_errors=True)
    except PermissionDenied as exc:
        log.warning("commit status not set (%s %s): GitHub refused the token: it lacks `statuses: write`",
                    exc.status, exc.message)
        return ChannelResult("status", "denied", detail=exc.message, cause="permission")
    log.info("commit status %s set to %s", context, body["state"])
    return ChannelResult("status", "created", data.get("id"), data.get("url"))


# --------------------------------------------------------------------------------- pull requests
def _into_this_repo(client: GitHubClient, pr: Mapping[str, Any]) -> bool:
    base = ((pr.get("base") or {}).get("repo") or {}).get("full_name")
    return base is None or str(base).lower() == client.repo.lower()


def find_pull_request(client: GitHubClient, head_sha: str, head_owner: str | None, head_branch: str | None) -> int | None:
    """The open PR into this repository whose head is exactly `head_sha`. For `workflow_run` events
    from forks GitHub leaves `pull_requests` empty (and lists unrelated PRs that merely share a branch
    name): `GET /pulls?head=owner:branch` finds it, or `GET /commits/{sha}/pulls` without a branch."""
    if head_owner and head_branch:
        path, params = client.repo_path("pulls"), {"state": "open", "head": f"{head_owner}:{head_branch}"}
    else:
        path, params = client.repo_path(f"commits/{head_sha}/pulls"), {}
    try:
        for pr in client.paginate(path, params=params):
            if (pr.get("head") or {}).get("sha") == head_sha and pr.get("state", "open") == "open" \
                    and _into_this_repo(client, pr):
                return int(pr["number"])
    except GitHubError as exc:
        log.warning("could not look up the pull request for %s (%s %s)", head_sha[:12], exc.status, exc.message)
    return None


def get_pull_request(client: GitHubClient, number: int) -> dict:
    """The pull request `number` of this repository (raises GitHubError). Events that name a PR
    without its head commit (`issue_comment`) get the head from here: `GITHUB_SHA` is the default
    branch's head there, and a check posted on it would never show on the PR."""
    pr = client.get_json(client.repo_path(f"pulls/{int(number)}"))
    if not isinstance(pr, dict) or not (pr.get("head") or {}).get("sha"):
        raise GitHubError(200, f"pull request #{int(number)} has no head commit in the API's answer",
                          client.repo_path(f"pulls/{int(number)}"), method="GET")
    return pr


# ------------------------------------------------------------------------------------- publisher
class Publisher:
    """The verdict's way to the PR, with its fallbacks: check run -> commit status -> summary only;
    comment -> summary only. `start()` at the beginning of a run, `finish()` at the end.

    Never raises `GitHubError`: every refusal or failure is in the returned `PublishResult`, with
    its cause (a refusal, an outage).

    `login` is who the sticky comment must be written by (the `comment-author` input). Without it,
    the author GitHub records on this run's own check run (its app's slug + "[bot]") is used, which
    is right for GITHUB_TOKEN and GitHub App tokens alike; then `resolve_login`.
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
        self.recorded_login: str | None = None  # learned from what this run created
        self.details_url = details_url
        self.status_context = status_context or check_name
        self.check_run_id: int | None = None
        self.external_id = f"rlhf-canary-{uuid.uuid4()}"  # finds our check run after an uncertain create
        self._checks_denied = False
        self._start_uncertain = False

    def _record(self, channel: ChannelResult | None) -> None:
        if channel is not None and channel.ok and channel.author and not self.recorded_login:
            self.recorded_login = channel.author

    def start(self, summary: str = "The canary is running.") -> PublishResult:
        result = PublishResult()
        try:
            check = start_check_run(self.client, self.head_sha, self.check_name, title="Running",
                                    summary=summary, details_url=self.details_url, external_id=self.external_id)
        except GitHubError as exc:
            check = failed("check", exc)
            self._start_uncertain = isinstance(exc, ServerError) and exc.maybe_written
            log.warning("check run not created: %s", exc)
        result.check = check
        self._record(check)
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
                                                       login=self.login or self.recorded_login)
                self._record(result.comment)
            except GitHubError as exc:
                log.warning("PR comment not posted: %s", exc)
                result.comment = failed("comment", exc)
        elif comment_body is not None:
            result.comment = ChannelResult("comment", "skipped", detail="not a pull request")

        if not self._checks_denied:
            try:
                if self.check_run_id is None and self._start_uncertain:
                    # The opening POST failed in a way that may have created it: complete that one.
                    found = _find_check_run(self.client, self.head_sha, self.check_name, self.external_id)
                    self.check_run_id = found.get("id") if found else None
                result.check = complete_check_run(
                    self.client, conclusion=conclusion, title=title, summary=summary, text=text,
                    annotations=annotations, check_run_id=self.check_run_id, head_sha=self.head_sha,
                    name=self.check_name, details_url=self.details_url, external_id=self.external_id)
            except GitHubError as exc:
                log.warning("check run not completed: %s", exc)
                result.check = failed("check", exc, self.check_run_id)
            result.check_run_id = result.check.id
        else:
            result.check = ChannelResult("check", "denied", detail="refused at start", cause="permission")
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
            return failed("status", exc)

    @staticmethod
    def _note_summary_only(result: PublishResult) -> None:
        if result.summary_only:
            line = (f"nothing reached the PR ({describe_causes(result.causes)}): "
                    "the verdict is in the job summary only")
            result.notes.append(line)
            log.warning(line)
        elif result.fell_back:
            result.notes.append(f"published via {', '.join(result.published)}; "
                                f"{describe_causes(result.causes)}: {', '.join(result.fell_back)}")


def describe_causes(causes: Iterable[str]) -> str:
    """Say what happened to the channels that fell back, in words a reader can act on."""
    words = {
        "permission": "GitHub refused the token (a fork PR, or a token without the `permissions:` this needs)",
        "outage": "GitHub failed or rate-limited the requests (an outage: rerun the job later)",
        "error": "GitHub answered with an unexpected error (see the log)",
    }
    return "; ".join(words[c] for c in ("permission", "outage", "error") if c in set(causes)) or "nothing failed"
