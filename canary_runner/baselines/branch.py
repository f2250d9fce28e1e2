"""`branch:<name>`: baselines kept on a git branch, read and written through the contents API.

Layout on the branch:
    <config>/<hardware-key>/metrics.json                         the current baseline
    <config>/<hardware-key>/history/<timestamp>-<sha>.json       the N most recent (default 10)

The history is bounded so the branch does not bloat the repository (the first complaint about
gh-pages-style benchmark storage). Writes use the contents API's `sha` precondition; a 409 means
another job wrote first, so the file is re-read and the write retried, a bounded number of times.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

from ..github.client import Conflict, GitHubClient, GitHubError, NotFound, PermissionDenied
from ..results import MAX_METRICS_BYTES, size_text
from .model import (
    HISTORY_DIR,
    METRICS_FILE,
    BaselineError,
    BaselineLookup,
    BaselineRun,
    baseline_dir,
    not_found,
    parse_run,
    path_segment,
    select,
)

log = logging.getLogger("canary_runner.baselines")
RAW = {"Accept": "application/vnd.github.raw+json"}  # raw bytes: works past the 1 MB JSON content limit


def _contents(client: GitHubClient, path: str) -> str:
    return client.repo_path("contents/" + quote(path, safe="/"))


def _ref(branch: str) -> str:
    return quote(f"heads/{branch}", safe="/")


def branch_exists(client: GitHubClient, branch: str) -> bool:
    try:
        client.get_json(client.repo_path(f"git/ref/{_ref(branch)}"))
        return True
    except NotFound:
        return False


def _list_dir(client: GitHubClient, path: str, branch: str) -> list[dict]:
    """The entries of a directory on the branch; anything that is not a well-formed entry is left out."""
    try:
        entries = client.get_json(_contents(client, path), params={"ref": branch})
    except NotFound:
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)
            and isinstance(e.get("path"), str)]


def _read_raw(client: GitHubClient, path: str, branch: str, *, limit: int | None = None,
              what: str = "a metrics.json") -> bytes:
    """A file's bytes, at most `limit` (default MAX_METRICS_BYTES) of them whatever the server sends."""
    limit = MAX_METRICS_BYTES if limit is None else limit
    resp = client.request("GET", _contents(client, path), params={"ref": branch}, headers=RAW, stream=True)
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in resp.iter_content(chunk_size=1 << 16):
            total += len(chunk)
            if total > limit:
                raise BaselineError(f"{path} on the baseline branch is larger than {size_text(limit)}, "
                                    f"the most {what} may be")
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise BaselineError(f"reading {path} from the baseline branch broke off: {type(exc).__name__}") from None
    finally:
        resp.close()
    return _file_bytes(b"".join(chunks), path)


def _file_bytes(body: bytes, path: str) -> bytes:
    """The file from the contents API's answer. Asked for the raw media type it sends the bytes; a
    server (or proxy) that ignores that sends the JSON entry instead: a file's base64 content is
    used, any other entry (a directory, a symlink, a submodule, a file too large to inline) is said."""
    # A metrics.json names its schema_version first; an inlined entry is at most ~1.4 MB (GitHub
    # inlines files up to 1 MB): anything else is taken as the file's bytes.
    if (not body.lstrip().startswith((b"{", b"[")) or b'"schema_version"' in body[:4096]
            or len(body) > 2 << 20):
        return body
    try:
        entry = json.loads(body)
    except ValueError:
        return body  # not JSON: parse_run says so
    if isinstance(entry, list):
        raise BaselineError(f"{path} on the baseline branch is a directory, not a metrics.json")
    if not (isinstance(entry, dict) and "schema_version" not in entry and isinstance(entry.get("type"), str)
            and "sha" in entry):
        return body
    if entry["type"] == "file" and entry.get("encoding") == "base64" and isinstance(entry.get("content"), str):
        try:
            data = base64.b64decode(entry["content"], validate=False)
        except (binascii.Error, ValueError):
            raise BaselineError(f"{path} on the baseline branch: the contents API sent undecodable base64") from None
        return data
    raise BaselineError(f"{path} on the baseline branch: the contents API answered a {entry['type'][:40]!r} entry "
                        f"(encoding {str(entry.get('encoding'))[:40]!r}), not the file's bytes")


def read_branch_baseline(client: GitHubClient, branch: str, *, config_name: str, hardware_key: str,
                         history: int = 0) -> BaselineLookup:
    """The current baseline for (config, hardware) on `branch`, plus up to `history` older runs."""
    source = f"branch:{branch}"
    folder = baseline_dir(config_name, hardware_key)
    try:
        try:
            raw = _read_raw(client, f"{folder}/{METRICS_FILE}", branch)
        except NotFound:
            if not branch_exists(client, branch):
                return not_found(source, config_name, hardware_key,
                                 f"no baseline: branch {branch!r} does not exist in {client.repo} "
                                 f"(it is created by the first baseline write from the default branch)")
            found = [e["name"] for e in _list_dir(client, path_segment(config_name), branch) if e.get("type") == "dir"]
            if found:
                msg = f"no baseline for hardware {hardware_key} (found: {', '.join(sorted(found))}) " \
                      f"for config {config_name!r} on branch {branch!r}"
            else:
                msg = f"no baseline for config {config_name!r} on branch {branch!r} (found no {folder}/{METRICS_FILE})"
            return not_found(source, config_name, hardware_key, msg, found)
        runs: list[BaselineRun] = [parse_run(raw, f"{source}/{folder}/{METRICS_FILE}")]
        if history > 0:
            entries = [e for e in _list_dir(client, f"{folder}/{HISTORY_DIR}", branch)
                       if e.get("type") == "file" and e.get("name", "").endswith(".json")]
            for e in sorted(entries, key=lambda e: e["name"], reverse=True)[:history]:
                runs.append(parse_run(_read_raw(client, e["path"], branch), f"{source}/{e['path']}"))
    except PermissionDenied as exc:
        raise BaselineError(f"cannot read baselines from branch {branch!r}: the token may not read "
                            f"repository contents ({exc.status} {exc.message}); grant `contents: read`") from None
    except GitHubError as exc:
        raise BaselineError(f"cannot read baselines from branch {branch!r}: {exc}") from None
    except ValueError as exc:  # an answer that is not the JSON GitHub documents
        raise BaselineError(f"cannot read baselines from branch {branch!r}: unexpected answer from the "
                            f"contents API ({type(exc).__name__})") from None
    return select(runs, source=source, config_name=config_name, hardware_key=hardware_key,
                  searched=f"branch {branch!r}")


# ------------------------------------------------------------------------------------------- write
@dataclass
class BranchWriteResult:
    branch: str
    path: str
    history_path: str
    commit_sha: str | None = None
    created_branch: bool = False
    trimmed: list[str] = field(default_factory=list)
    conflicts: int = 0  # 409s retried
    notes: list[str] = field(default_factory=list)


def _file_sha(client: GitHubClient, path: str, branch: str) -> str | None:
    try:
        data = client.get_json(_contents(client, path), params={"ref": branch})
    except NotFound:
        return None
    return data.get("sha") if isinstance(data, dict) else None


def _put_file(client: GitHubClient, path: str, content: bytes, branch: str, message: str, *,
              attempts: int, result: BranchWriteResult) -> str | None:
    """Create or replace one file, conditional on the blob sha we last saw; retry on 409."""
    for attempt in range(1, attempts + 1):
        sha = _file_sha(client, path, branch)
        body = {"message": message, "content": base64.b64encode(content).decode("ascii"), "branch": branch}
        if sha:
            body["sha"] = sha
        try:
            data = client.put_json(_contents(client, path), body)
            return ((data or {}).get("commit") or {}).get("sha")
        except Conflict as exc:
            # Someone else committed to the branch (another config's baseline, a concurrent job).
            result.conflicts += 1
            log.info("baseline write to %s hit a conflict (%s); re-reading (attempt %d of %d)",
                     path, exc.message, attempt, attempts)
        except GitHubError as exc:
            # 422 "sha wasn't supplied": the file appeared between our read and write.
            if exc.status == 422 and "sha" in exc.message.lower() and attempt < attempts:
                result.conflicts += 1
                continue
            raise
    raise BaselineError(f"baseline write to {path} on {branch!r} kept conflicting after {attempts} attempts")


def _ensure_branch(client: GitHubClient, branch: str, default_branch: str | None, create: bool) -> bool:
    """True when the branch had to be created (from the default branch's head)."""
    if branch_exists(client, branch):
        return False
    if not create:
        raise BaselineError(f"baseline branch {branch!r} does not exist in {client.repo}; create it or allow creation")
    default_branch = default_branch or client.get_json(client.repo_path())["default_branch"]
    head = client.get_json(client.repo_path(f"git/ref/{_ref(default_branch)}"))["object"]["sha"]
    try:
        # Safe to repeat after a 5xx: a create that did land answers 422 "already exists" the second time.
        client.post_json(client.repo_path("git/refs"), {"ref": f"refs/heads/{branch}", "sha": head},
                         retry_server_errors=True)
    except GitHubError as exc:
        if exc.status == 422 and "already exists" in exc.message.lower():
            return False  # another job created it first
        raise
    log.info("created baseline branch %r from %s@%s", branch, default_branch, head[:12])
    return True


def trim_history(client: GitHubClient, branch: str, folder: str, keep: int, result: BranchWriteResult) -> None:
    entries = sorted((e for e in _list_dir(client, f"{folder}/{HISTORY_DIR}", branch)
                      if e.get("type") == "file" and e.get("name", "").endswith(".json")), key=lambda e: e["name"])
    for e in entries[: max(0, len(entries) - keep)]:
        body = {"message": f"canary baseline: trim history {e['path']} [skip ci]", "sha": e["sha"], "branch": branch}
        try:
            client.delete(_contents(client, e["path"]), body)
            result.trimmed.append(e["path"])
        except (Conflict, NotFound):
            result.notes.append(f"history entry {e['path']} changed or vanished; left for the next write")
        except PermissionDenied:
            raise
        except GitHubError as exc:  # trimming is housekeeping: never lose the write over it
            result.notes.append(f"could not trim {e['path']}: {exc.message}")


def write_branch_baseline(client: GitHubClient, branch: str, metrics_raw: bytes, *, commit_sha: str,
                          keep_history: int = 10, timestamp: str | None = None,
                          default_branch: str | None = None, create_branch: bool = True,
                          max_attempts: int = 3) -> BranchWriteResult:
    """Store `metrics_raw` as the baseline for its own config and hardware key (read from the
    file, so a run can never be filed under the wrong hardware), add it to the history and trim
    the history to `keep_history` entries."""
    run = parse_run(metrics_raw, "the new baseline")
    if not run.config_name or not run.hardware_key:
        raise BaselineError("the new baseline has no run.config_name or env.hardware_key; refusing to file it")
    if keep_history < 1:
        raise ValueError("keep_history must be at least 1")
    folder = baseline_dir(run.config_name, run.hardware_key)
    stamp = timestamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = BranchWriteResult(branch, f"{folder}/{METRICS_FILE}",
                               f"{folder}/{HISTORY_DIR}/{stamp}-{path_segment(commit_sha[:12])}.json")
    message = f"canary baseline: {folder} from {commit_sha[:12]} [skip ci]"
    try:
        result.created_branch = _ensure_branch(client, branch, default_branch, create_branch)
        result.commit_sha = _put_file(client, result.path, metrics_raw, branch, message,
                                      attempts=max_attempts, result=result)
        _put_file(client, result.history_path, metrics_raw, branch, message, attempts=max_attempts, result=result)
        trim_history(client, branch, folder, keep_history, result)
    except PermissionDenied as exc:
        raise BaselineError(f"cannot write baselines to branch {branch!r}: the token may not push "
                            f"({exc.status} {exc.message}); grant `contents: write` on the default branch's runs") from None
    except GitHubError as exc:
        raise BaselineError(f"cannot write baselines to branch {branch!r}: {exc}") from None
    log.info("baseline %s written to %s (%d history entries trimmed)", result.path, branch, len(result.trimmed))
    return result

