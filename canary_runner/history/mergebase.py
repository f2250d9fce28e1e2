"""The right baseline for a pull request: the record of its merge-base commit, or of the newest
ancestor of the merge base that has one; never a record from a commit that is not an ancestor.

Main moves on while a PR is open: the newest record on the baseline branch may measure commits the PR
does not contain, so comparing with it blames the PR for (or credits it with) main's later changes.
Ancestry comes from local git when the checkout has the history (`fetch-depth: 0`), else from
GitHub's compare API (`GET /repos/{owner}/{repo}/compare/{base}...{head}`), a bounded number of calls.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .index import Entry

log = logging.getLogger("canary_runner.history")

HEX = re.compile(r"^[0-9a-f]{7,64}$")
MAX_API_LOOKUPS = 10  # compare calls spent on candidate entries (the merge base's own call not counted)
MAX_GIT_LOOKUPS = 500  # local `git merge-base --is-ancestor` calls: cheap, but bounded all the same
# A container action's workspace belongs to the runner's user: git refuses it unless marked safe.
GIT_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*",
           "GIT_TERMINAL_PROMPT": "0"}


@dataclass
class Selection:
    """Which record is the PR's baseline, and why, for the report."""

    entry: Entry | None  # None: no usable record (compare without a baseline)
    merge_base: str | None
    distance: int | None  # commits from the entry's commit to the merge base (0: the merge base itself)
    via: str  # "git", "compare-api", or "newest" (no index: today's pick, the newest record)
    text: str  # one line for the report

    def to_json(self) -> dict:
        return {"method": "newest" if self.via == "newest" else "merge-base", "via": self.via,
                "commit": self.entry.sha if self.entry else None, "merge_base": self.merge_base,
                "distance": self.distance, "text": self.text}


def describe(entry: Entry, merge_base: str, distance: int | None) -> str:
    if distance == 0 or entry.sha == merge_base:
        return f"baseline: {entry.sha[:12]}, the merge base"
    far = "an unknown number of commits" if distance is None else f"{distance} commit{'s' if distance != 1 else ''}"
    return f"baseline: {entry.sha[:12]}, {far} before the merge base {merge_base[:12]}"


# -------------------------------------------------------------------------------------- local git
def _git(args: list[str], repo: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60,
                              env=os.environ | GIT_ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(["git", *args], 128, "", str(exc))


def local_merge_base(repo: Path, base: str, head: str) -> str | None:
    """The merge base from the checkout, or None when it lacks the history (not a repository, a
    shallow clone, either commit missing): then the compare API answers instead."""
    if not (HEX.match(base) and HEX.match(head)):
        return None
    shallow = _git(["rev-parse", "--is-shallow-repository"], repo)
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        return None
    for sha in (base, head):
        if _git(["cat-file", "-e", f"{sha}^{{commit}}"], repo).returncode != 0:
            return None
    mb = _git(["merge-base", base, head], repo)
    out = mb.stdout.strip()
    return out if mb.returncode == 0 and HEX.match(out) else None


def _select_git(repo: Path, merge_base: str, candidates: list[Entry]) -> tuple[Entry, int | None] | None:
    for e in candidates[:MAX_GIT_LOOKUPS]:
        if e.sha == merge_base or _git(["merge-base", "--is-ancestor", e.sha, merge_base], repo).returncode == 0:
            count = _git(["rev-list", "--count", f"{e.sha}..{merge_base}"], repo)
            return e, int(count.stdout.strip()) if count.returncode == 0 and count.stdout.strip().isdigit() else None
    return None


# ------------------------------------------------------------------------------------ compare API
def compare(client, base: str, head: str) -> dict:
    """GET compare/{base}...{head}: what matters of it (status, ahead_by, behind_by, merge base, commits)."""
    data = client.get_json(client.repo_path(f"compare/{base}...{head}"), params={"per_page": 100})
    if not isinstance(data, dict) or data.get("status") not in ("ahead", "behind", "identical", "diverged"):
        raise ValueError("the compare API answered something that is not a comparison")
    return data


def api_merge_base(client, base: str, head: str) -> str | None:
    mb = ((compare(client, base, head).get("merge_base_commit") or {}).get("sha"))
    return mb if isinstance(mb, str) and HEX.match(mb) else None


def _compare_or_none(client, base: str, head: str) -> dict | None:
    """compare, or None when GitHub knows no such commit (a record from a history rewritten since)."""
    from ..github.client import NotFound

    try:
        return compare(client, base, head)
    except NotFound:
        return None


def _select_api(client, merge_base: str, candidates: list[Entry]) -> tuple[Entry, int | None] | None:
    exact = next((e for e in candidates if e.sha == merge_base), None)
    if exact:
        return exact, 0
    # One call names the commits of the newest record's history that the merge base lacks (they are
    # not its ancestors): those entries are skipped without a call of their own.
    skip: set[str] = set()
    newest = candidates[0] if candidates else None
    if newest is not None:
        c = _compare_or_none(client, merge_base, newest.sha)
        if c is not None and c["status"] in ("behind", "identical"):  # the newest record is itself an ancestor
            return newest, int(c.get("behind_by") or 0)
        skip = {str(x.get("sha")) for x in (c or {}).get("commits") or [] if isinstance(x, dict)}
        skip.add(newest.sha)
    lookups = 0
    for e in candidates:
        if e.sha in skip:
            continue
        if lookups >= MAX_API_LOOKUPS:
            log.warning("stopped after %d compare lookups for an ancestor record of %s", lookups, merge_base[:12])
            break
        lookups += 1
        c = _compare_or_none(client, e.sha, merge_base)
        if c is not None and c["status"] in ("ahead", "identical"):  # the merge base contains e: e is an ancestor
            return e, int(c.get("ahead_by") or 0)
    return None


# ------------------------------------------------------------------------------------------ pick
def select_for_pull_request(entries: Iterable[Entry], *, base: str, head: str, repo: Path | None = None,
                            client=None, has_record: Callable[[Entry], bool] = lambda e: True) -> Selection:
    """The record for a PR whose base branch is at `base` and head at `head`. Local git when `repo`
    has the history, else the compare API through `client`. Raises ValueError or the client's
    GitHubError when neither can tell (the caller says so and compares without a baseline)."""
    entries = list(entries)
    via, merge_base = "git", (local_merge_base(repo, base, head) if repo is not None else None)
    if merge_base is None:
        if client is None:
            raise ValueError("the checkout lacks the history (check out with fetch-depth: 0) and there is no "
                             "GitHub client for the compare API")
        via, merge_base = "compare-api", api_merge_base(client, base, head)
        if merge_base is None:
            raise ValueError(f"the compare API named no merge base for {base[:12]}...{head[:12]}")
    # Newest first; entries whose full record was trimmed cannot be compared with.
    candidates = [e for e in reversed(entries) if has_record(e)]
    found = _select_git(repo, merge_base, candidates) if via == "git" else _select_api(client, merge_base, candidates)
    if found is None:
        return Selection(None, merge_base, None, via,
                         f"no baseline: none of the {len(candidates)} recorded commits checked is the merge base "
                         f"{merge_base[:12]} or an ancestor of it")
    entry, distance = found
    text = describe(entry, merge_base, distance)
    bare = next((e for e in entries if e.sha == merge_base and not has_record(e)), None)
    if bare is not None and entry.sha != merge_base:
        text += " (the merge base's own full record was trimmed from the history)"
    return Selection(entry, merge_base, distance, via, text)


def head_commit(repo: Path) -> str | None:
    """HEAD of the checkout at `repo`, or None outside a repository."""
    proc = _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], repo)
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and HEX.match(out) else None


def parent_of(sha: str, repo: Path) -> str | None:
    """The first parent of `sha` when the checkout has it (a shallow clone may not), else None."""
    if not HEX.match(sha or ""):
        return None
    proc = _git(["rev-parse", "--verify", "--quiet", f"{sha}^1^{{commit}}"], repo)
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and HEX.match(out) else None
