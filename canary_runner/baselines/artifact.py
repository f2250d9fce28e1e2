"""`artifact:<name>`: baselines uploaded as a workflow artifact by runs on the default branch.

GitHub keeps artifacts for a limited time and every branch's runs upload under the same name, so the
pick is: the newest non-expired artifact of that name whose run was on the default branch.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import PurePosixPath

from ..github.client import GitHubClient, GitHubError, PermissionDenied
from .model import METRICS_FILE, BaselineError, BaselineLookup, BaselineRun, not_found, parse_run, select

log = logging.getLogger("canary_runner.baselines")

MAX_ZIP_BYTES = 1 << 30
MAX_MEMBER_BYTES = 512 << 20
MAX_MEMBERS = 10_000


def pick_artifact(client: GitHubClient, name: str, default_branch: str) -> tuple[dict | None, int]:
    """(the newest usable artifact or None, how many artifacts had that name)."""
    arts = list(client.paginate(client.repo_path("actions/artifacts"), params={"name": name}, items_key="artifacts"))
    usable = [a for a in arts
              if a.get("name") == name and not a.get("expired")
              and (a.get("workflow_run") or {}).get("head_branch") == default_branch]
    # ISO-8601 UTC timestamps sort as strings; the id breaks ties (ids grow with time).
    usable.sort(key=lambda a: (a.get("created_at") or "", a.get("id") or 0), reverse=True)
    return (usable[0] if usable else None), len(arts)


def _unsafe(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def read_zip_metrics(data: bytes, origin: str) -> list[BaselineRun]:
    """Every metrics.json inside a zip, read in memory (nothing is extracted to disk), skipping
    members whose names try to escape (`../`, absolute paths) and refusing oversized members."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BaselineError(f"{origin} is not a valid zip archive: {exc}") from None
    runs: list[BaselineRun] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BaselineError(f"{origin} has {len(infos)} members; refusing more than {MAX_MEMBERS}")
        for info in infos:
            if info.is_dir() or PurePosixPath(info.filename).name != METRICS_FILE:
                continue
            if _unsafe(info.filename):
                log.warning("skipping %s in %s: unsafe member path", info.filename, origin)
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                raise BaselineError(f"{info.filename} in {origin} is larger than {MAX_MEMBER_BYTES} bytes")
            with zf.open(info) as fh:
                raw = fh.read(MAX_MEMBER_BYTES + 1)  # the header's size can lie (zip bombs)
            if len(raw) > MAX_MEMBER_BYTES:
                raise BaselineError(f"{info.filename} in {origin} is larger than {MAX_MEMBER_BYTES} bytes")
            runs.append(parse_run(raw, f"{origin}/{info.filename}"))
    return runs


def read_artifact_baseline(client: GitHubClient, name: str, *, config_name: str, hardware_key: str,
                           default_branch: str | None = None) -> BaselineLookup:
    source = f"artifact:{name}"
    try:
        default_branch = default_branch or client.get_json(client.repo_path())["default_branch"]
        art, total = pick_artifact(client, name, default_branch)
        if art is None:
            return not_found(source, config_name, hardware_key,
                             f"no baseline: no non-expired artifact named {name!r} from a run on "
                             f"{default_branch!r} ({total} with that name in all)")
        data = client.download(client.repo_path(f"actions/artifacts/{int(art['id'])}/zip"), max_bytes=MAX_ZIP_BYTES)
    except PermissionDenied as exc:
        raise BaselineError(f"cannot read artifact {name!r}: the token may not read workflow artifacts "
                            f"({exc.status} {exc.message}); grant `actions: read`") from None
    except GitHubError as exc:
        raise BaselineError(f"cannot read artifact {name!r}: {exc}") from None
    run = art.get("workflow_run") or {}
    origin = f"{source}#{art['id']} (run {run.get('id')}, {str(run.get('head_sha') or '')[:12]})"
    return select(read_zip_metrics(data, origin), source=source, config_name=config_name,
                  hardware_key=hardware_key, searched=f"artifact {name!r} #{art['id']}")
