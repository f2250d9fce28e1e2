"""`artifact:<name>`: baselines uploaded as a workflow artifact by runs on the default branch.

GitHub keeps artifacts for a limited time and every run uploads under the same name, forks' PR runs
included (a fork's branch may well be called `main`), so the pick is: the newest non-expired artifact of
that name uploaded by a push, schedule or workflow_dispatch run of this repository (not a fork) on the
default branch. Anything else is data a PR author controls and must never become the baseline.
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from pathlib import PurePosixPath

from ..github.client import GitHubClient, GitHubError, NotFound, PermissionDenied
from ..results import MAX_METRICS_BYTES, size_text
from .model import METRICS_FILE, BaselineError, BaselineLookup, BaselineRun, not_found, parse_run, select

log = logging.getLogger("canary_runner.baselines")

# What one artifact may cost. An artifact is untrusted input: these bound the download, the archive's
# directory, and the bytes decompressed (only metrics.json members are ever decompressed).
MAX_ZIP_BYTES = 256 << 20  # the download
MAX_MEMBERS = 10_000  # entries in the archive
MAX_DECLARED_BYTES = 4 << 30  # the uncompressed size all members declare: more is a zip bomb
MAX_MEMBER_BYTES = MAX_METRICS_BYTES  # one metrics.json
MAX_READ_BYTES = 256 << 20  # all metrics.json members together


# The events whose runs build the default branch's own code; `pull_request*`, `workflow_run`,
# `issue_comment` and the rest may run with, or on behalf of, a PR's code.
TRUSTED_EVENTS = frozenset({"push", "schedule", "workflow_dispatch"})
MAX_RUN_LOOKUPS = 10  # runs asked about per pick (one GET each); candidates are pre-filtered for free


def _candidate(art: dict, name: str, default_branch: str) -> bool:
    """What the artifact list itself tells: the name, not expired, a run of this repository's own
    (not a fork's: `head_repository_id` is the fork's) on the default branch."""
    run = art.get("workflow_run") or {}
    return (art.get("name") == name and not art.get("expired") and run.get("head_branch") == default_branch
            and run.get("id") is not None and run.get("repository_id") is not None
            and run.get("head_repository_id") == run.get("repository_id"))


def trusted_run(run: dict, repo: str, default_branch: str) -> str | None:
    """Why the workflow run `run` (GET /actions/runs/{id}) may not make a baseline, or None if it may."""
    head = str((run.get("head_repository") or {}).get("full_name") or "")
    if run.get("event") not in TRUSTED_EVENTS:
        return f"it was made by a {run.get('event') or 'unknown'} run"
    if head.lower() != repo.lower():
        return f"its run built {head or 'an unknown repository'}, not {repo}"
    if run.get("head_branch") != default_branch:
        return f"its run was on {run.get('head_branch')!r}, not {default_branch!r}"
    return None


def pick_artifact(client: GitHubClient, name: str, default_branch: str) -> tuple[dict | None, int]:
    """(the newest trusted artifact or None, how many artifacts had that name).

    The artifact list names the run's branch and repositories but not its event, so the newest
    candidates' runs are looked up (`GET /actions/runs/{id}`, once per run) until one is trusted."""
    arts = list(client.paginate(client.repo_path("actions/artifacts"), params={"name": name}, items_key="artifacts"))
    candidates = [a for a in arts if _candidate(a, name, default_branch)]
    # ISO-8601 UTC timestamps sort as strings; the id breaks ties (ids grow with time).
    candidates.sort(key=lambda a: (a.get("created_at") or "", a.get("id") or 0), reverse=True)
    verdicts: dict[int, str | None] = {}
    for art in candidates:
        run_id = int(art["workflow_run"]["id"])
        if run_id not in verdicts:
            if len(verdicts) >= MAX_RUN_LOOKUPS:
                log.warning("stopped after checking %d runs for a trusted artifact %r", MAX_RUN_LOOKUPS, name)
                break
            try:
                run = client.get_json(client.repo_path(f"actions/runs/{run_id}"))
            except NotFound:
                run = {}  # the run was deleted: nothing vouches for its artifact
            verdicts[run_id] = trusted_run(run or {}, client.repo, default_branch) if run else "its run is gone"
        why = verdicts[run_id]
        if why is None:
            return art, len(arts)
        log.warning("artifact %r #%s is not used as a baseline: %s (only push, schedule and workflow_dispatch "
                    "runs of this repository's default branch make baselines)", name, art.get("id"), why)
    return None, len(arts)


def download_latest(client: GitHubClient, name: str, default_branch: str | None,
                    error: type[Exception]) -> tuple[dict | None, int, bytes | None, str]:
    """The newest trusted artifact `name` from a run on the default branch, and its zip: (artifact,
    how many carry that name, zip bytes, the default branch). (None, total, None, branch) when there is
    none. A refusal or GitHub failure raises `error` with what to do."""
    try:
        default_branch = default_branch or client.get_json(client.repo_path())["default_branch"]
        art, total = pick_artifact(client, name, default_branch)
        if art is None:
            return None, total, None, default_branch
        data = client.download(client.repo_path(f"actions/artifacts/{int(art['id'])}/zip"), max_bytes=MAX_ZIP_BYTES)
    except PermissionDenied as exc:
        raise error(f"cannot read artifact {name!r}: the token may not read workflow artifacts "
                    f"({exc.status} {exc.message}); grant `actions: read`") from None
    except GitHubError as exc:
        raise error(f"cannot read artifact {name!r}: {exc}") from None
    return art, total, data, default_branch


def _unsafe(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def read_zip_metrics(data: bytes, origin: str) -> list[BaselineRun]:
    """Every metrics.json inside a zip, read in memory (nothing is extracted to disk), skipping
    members whose names try to escape (`../`, absolute paths). An archive past the limits above, or
    with a metrics.json that cannot be read back intact (bad CRC, corrupt deflate, truncated), is a
    BaselineError: a damaged artifact is not trusted in part."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise BaselineError(f"{origin} is not a valid zip archive: {exc}") from None
    runs: list[BaselineRun] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BaselineError(f"{origin} has {len(infos)} members; refusing more than {MAX_MEMBERS}")
        declared = sum(i.file_size for i in infos)
        if declared > MAX_DECLARED_BYTES:
            raise BaselineError(f"{origin} declares {size_text(declared)} uncompressed; refusing more than "
                                f"{size_text(MAX_DECLARED_BYTES)}")
        budget = MAX_READ_BYTES
        for info in infos:
            if info.is_dir() or PurePosixPath(info.filename).name != METRICS_FILE:
                continue
            if _unsafe(info.filename):
                log.warning("skipping %s in %s: unsafe member path", _name(info), origin)
                continue
            # The header's size can lie (zip bombs): never read more than the limit, whatever it says.
            limit = min(MAX_MEMBER_BYTES, budget)
            if info.file_size > limit:
                raise BaselineError(f"{_name(info)} in {origin} is larger than {size_text(limit)}"
                                    + ("" if limit == MAX_MEMBER_BYTES else
                                       f" (the metrics.json members may hold {size_text(MAX_READ_BYTES)} in all)"))
            raw = _read_member(zf, info, limit, origin)
            budget -= len(raw)
            runs.append(parse_run(raw, f"{origin}/{info.filename[:200]}"))
    return runs


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, origin: str) -> bytes:
    """One member's bytes, its CRC checked by zipfile once the whole member is read."""
    try:
        with zf.open(info) as fh:
            raw = fh.read(limit + 1)
            if len(raw) <= limit:
                fh.read(1)  # reach the end of the member so that its CRC is verified
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: encrypted; NotImplementedError: a compression method zipfile lacks.
        raise BaselineError(f"{_name(info)} in {origin} is corrupt or unreadable ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); the artifact is not used") from None
    if len(raw) > limit:
        raise BaselineError(f"{_name(info)} in {origin} is larger than {size_text(limit)}")
    return raw


def _name(info: zipfile.ZipInfo) -> str:
    """A member's name for a message: untrusted, so quoted and bounded."""
    return repr(info.filename[:200])


def read_artifact_baseline(client: GitHubClient, name: str, *, config_name: str, hardware_key: str,
                           default_branch: str | None = None) -> BaselineLookup:
    source = f"artifact:{name}"
    art, total, data, default_branch = download_latest(client, name, default_branch, BaselineError)
    if art is None:
        return not_found(source, config_name, hardware_key,
                         f"no baseline: no non-expired artifact named {name!r} from a run on "
                         f"{default_branch!r} ({total} with that name in all; only push, schedule and "
                         f"workflow_dispatch runs of this repository count)")
    run = art.get("workflow_run") or {}
    origin = f"{source}#{art['id']} (run {run.get('id')}, {str(run.get('head_sha') or '')[:12]})"
    return select(read_zip_metrics(data, origin), source=source, config_name=config_name,
                  hardware_key=hardware_key, searched=f"artifact {name!r} #{art['id']}")
