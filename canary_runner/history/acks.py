"""Acknowledgements: a maintainer marks a commit's shift as intended.

Two ways in: `canary history ack SHA --reason ...` (someone with write access to the store), and a
`/canary accept <reason>` comment on a pull request, which `accept_from_event` turns into an ack only
when GitHub says the commenter is the repository's OWNER, MEMBER or COLLABORATOR. The workflow's `if:`
checks the same; this code checks it again because a workflow file is easy to loosen by mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from .index import METRICS, SHA, Ack, Index

MAX_REASON = 300
MAX_LOGIN = 100
COMMAND = "/canary accept"
TRUSTED_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class AckError(ValueError):
    """Bad input for an acknowledgement (the message says what and how to fix it)."""


class Refused(Exception):
    """An accept command this code will not act on (the message says why)."""


def clean_reason(text: str) -> str:
    """One line of at most MAX_REASON characters, control characters dropped."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text or "").strip()
    text = re.sub(r"\s+", " ", text)
    return text[:MAX_REASON - 1] + "…" if len(text) > MAX_REASON else text


def add_ack(index: Index, sha: str, reason: str, *, by: str = "", metric: str | None = None,
            now: datetime | None = None) -> Ack:
    """Record an ack in `index` (replacing one for the same commit and metric); raise AckError on bad input."""
    sha = (sha or "").strip().lower()
    if not SHA.match(sha) or len(sha) > 40:
        raise AckError(f"{sha!r} is not a commit sha; give the commit's hex sha (7 to 40 characters)")
    reason = clean_reason(reason)
    if not reason:
        raise AckError("the reason is empty; say why the shift is intended, e.g. --reason 'bigger batch, slower steps'")
    if metric is not None and metric not in METRICS:
        raise AckError(f"unknown metric {metric!r}; one of {', '.join(METRICS)} (or none: every metric)")
    at = (now or datetime.now(timezone.utc)).replace(microsecond=0).isoformat()
    ack = Ack(sha=sha, reason=reason, by=clean_reason(by)[:MAX_LOGIN], at=at, metric=metric)
    index.acks = [a for a in index.acks if not (a.sha == sha and a.metric == metric)] + [ack]
    return ack


@dataclass
class AcceptRequest:
    """What a trusted `/canary accept` comment asks for."""
    pr_number: int
    login: str
    reason: str
    metric: str | None
    comment_id: int | None


def parse_accept_event(event: dict) -> AcceptRequest:
    """An `issue_comment` payload -> AcceptRequest, or Refused saying why it is not acted on."""
    if not isinstance(event, dict):
        raise Refused("the event payload is not a JSON object")
    comment, issue = event.get("comment"), event.get("issue")
    if not isinstance(comment, dict) or not isinstance(issue, dict):
        raise Refused("not an issue_comment event (no comment or issue in the payload)")
    if event.get("action") != "created":
        raise Refused(f"comment {event.get('action') or 'event'}, not created: only new comments are commands")
    if not issue.get("pull_request"):
        raise Refused("the comment is on an issue, not a pull request")
    body = str(comment.get("body") or "")
    first, _, rest = body.strip().partition("\n")
    if not first.startswith(COMMAND) or first[len(COMMAND):][:1] not in ("", " ", "\t"):
        raise Refused(f"the comment does not start with `{COMMAND}`")
    user = comment.get("user") or {}
    login = str(user.get("login") or "") if isinstance(user, dict) else ""
    association = str(comment.get("author_association") or "NONE")
    if association not in TRUSTED_ASSOCIATIONS:
        raise Refused(f"@{login or '?'} is {association} on this repository; only "
                      f"{', '.join(TRUSTED_ASSOCIATIONS)} may accept a shift")
    words = first[len(COMMAND):].split()
    metric = None
    if words and words[0].startswith("metric="):
        metric = words.pop(0).split("=", 1)[1]
        if metric not in METRICS:
            raise Refused(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    reason = clean_reason(" ".join(words) or rest)
    if not reason:
        raise Refused(f"no reason given: write `{COMMAND} <why the shift is intended>`")
    number = issue.get("number")
    if not isinstance(number, int) or number <= 0:
        raise Refused("the payload has no pull request number")
    cid = comment.get("id")
    return AcceptRequest(pr_number=number, login=login, reason=reason, metric=metric,
                         comment_id=cid if isinstance(cid, int) else None)


def pending(index: Index) -> list[Ack]:
    """Acks for commits the index has no entry for: a `/canary accept` on a pull request names the PR's
    head commit, and main gets another commit when the PR is squashed, rebased or merged."""
    shas = [e.sha for e in index.entries]
    return [a for a in index.acks if FULL_SHA.match(a.sha)
            and not any(s.startswith(a.sha) or a.sha.startswith(s) for s in shas)]


def merged_commits(client, acks: list[Ack]) -> dict[str, str]:
    """{PR head sha: the commit its merge made on the default branch} for the acks whose pull request
    has been merged (GitHub's `merge_commit_sha`: the squash, rebase or merge commit)."""
    out: dict[str, str] = {}
    for ack in acks:
        for pr in client.paginate(client.repo_path(f"commits/{ack.sha}/pulls")):
            merge = (pr or {}).get("merge_commit_sha") if isinstance(pr, dict) else None
            if pr.get("merged_at") and isinstance(merge, str) and FULL_SHA.match(merge):
                out[ack.sha] = merge
                break
    return out


def move_acks(index: Index, moves: dict[str, str]) -> int:
    """Re-point acks from PR head commits to their merge commits on main; returns how many moved."""
    moved = 0
    for ack in index.acks:
        if ack.sha in moves:
            ack.sha = moves[ack.sha]
            moved += 1
    return moved
