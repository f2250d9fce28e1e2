"""Reading and writing the history index (`<config>/<hardware-key>/index.json`) in every baseline store.

    read_index("branch:canary-baselines", "dpo_smoke", None, client=client)   -> Index (one contents read)
    update_index("path:baselines", "dpo_smoke", key, lambda idx: ..., workspace=ws)

path: the index lies under the directory (confined to the workspace when one is given, as for
baselines). branch: one contents-API read; writes carry the blob sha read, and a 409 (another job
wrote first) re-reads the index and re-applies the change, a bounded number of times, so a concurrent
job's entry is never lost. artifact: read-only, the index.json inside the newest trusted artifact.

Nothing read from a store is trusted as a path: an entry's `file` is used only when it has the exact
shape the writer gives it (`history/<name>.json`, a plain name), see `full_record_path`.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..baselines.model import HISTORY_DIR, METRICS_FILE, BaselineError, path_segment
from ..baselines.spec import ArtifactSpec, BaselineSpec, BaselineSpecError, BranchSpec, PathSpec, parse_baseline_spec
from . import index as ix

log = logging.getLogger("canary_runner.history")

HISTORY_FILE = re.compile(rf"^{HISTORY_DIR}/[A-Za-z0-9][A-Za-z0-9._-]{{0,200}}\.json$")


class HistoryError(BaselineError):
    """The store has an index that cannot be read or written (malformed, too large, GitHub refused)."""


class NoHistory(HistoryError):
    """The store has no index for this config and hardware key (no baseline pushed since history began)."""


class AmbiguousHardware(BaselineSpecError):
    """hardware_key was not given and the store has several for the config (bad input: pick one)."""


def _spec(spec: str | BaselineSpec) -> BaselineSpec:
    spec = parse_baseline_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "ref":
        raise BaselineSpecError(f"{spec} measures the base in the same job and keeps no history; "
                                "use the store the baselines are pushed to (branch:, path: or artifact:)")
    return spec


def folder_of(config: str, hardware_key: str) -> str:
    return f"{path_segment(config)}/{path_segment(hardware_key)}"


def full_record_path(entry: ix.Entry) -> str | None:
    """The entry's full record relative to its `<config>/<hardware>` folder, or None when it has none
    (trimmed) or names something that is not a history file this code writes."""
    return entry.file if entry.file and HISTORY_FILE.match(entry.file) else None


def _pick_hardware(found: list[str], config: str, where: str) -> str:
    if len(found) == 1:
        return found[0]
    if not found:
        raise NoHistory(f"no history for config {config!r} in {where} (no {config}/<hardware>/{ix.INDEX_FILE}); "
                        "it is written by `canary baseline push` and the action's update-baseline")
    raise AmbiguousHardware(f"{where} has history for config {config!r} on several hardware keys "
                            f"({', '.join(sorted(found))}); pick one with --hardware KEY")


def _parse(raw: bytes, origin: str) -> ix.Index:
    try:
        return ix.parse(raw, origin)
    except ix.IndexError_ as exc:
        raise HistoryError(str(exc)) from None


# ------------------------------------------------------------------------------------------- read
def read_index(spec: str | BaselineSpec, config: str, hardware_key: str | None = None, *, client=None,
               workspace: Path | None = None, default_branch: str | None = None) -> ix.Index:
    """The history index of (config, hardware_key) in the store `spec`. With hardware_key None the
    store's only hardware key for the config is used (several: AmbiguousHardware). Raises NoHistory
    when there is no index, HistoryError when there is one that cannot be read."""
    spec = _spec(spec)
    if isinstance(spec, PathSpec):
        return _read_path(Path(spec.path), config, hardware_key, workspace, str(spec))
    if client is None:
        raise ValueError(f"history in {spec} needs a GitHub client (--repo and a token)")
    if isinstance(spec, BranchSpec):
        return _read_branch(client, spec.branch, config, hardware_key)
    return _read_artifact(client, spec, config, hardware_key, default_branch)


def _path_root(root: Path, workspace: Path | None) -> Path:
    if workspace is not None:
        from ..baselines.local import confine

        return confine(root, workspace)
    return root


def _read_path(root: Path, config: str, hardware_key: str | None, workspace: Path | None, source: str) -> ix.Index:
    root = _path_root(root, workspace)
    cfg_dir = root / path_segment(config)
    if hardware_key is None:
        found = sorted(p.parent.name for p in cfg_dir.glob(f"*/{ix.INDEX_FILE}")) if cfg_dir.is_dir() else []
        hardware_key = _pick_hardware(found, config, source)
    path = cfg_dir / path_segment(hardware_key) / ix.INDEX_FILE
    if not path.is_file():
        raise NoHistory(f"no history for config {config!r} on {hardware_key} in {source} (no {path})")
    try:
        if workspace is not None:
            from ..baselines.local import _inside

            if not _inside(path.resolve(), Path(workspace).resolve()):
                raise HistoryError(f"{path} is a symlink that leads outside the workspace; not read")
        with open(path, "rb") as fh:
            raw = fh.read(ix.MAX_INDEX_BYTES + 1)
    except OSError as exc:
        raise HistoryError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _parse(raw, str(path))


def _read_branch(client, branch: str, config: str, hardware_key: str | None) -> ix.Index:
    from ..baselines.branch import _list_dir, _read_raw
    from ..github.client import GitHubError, NotFound, PermissionDenied

    where = f"branch {branch!r}"
    try:
        if hardware_key is None:
            found = [e["name"] for e in _list_dir(client, path_segment(config), branch) if e.get("type") == "dir"]
            hardware_key = _pick_hardware(found, config, where)
        path = f"{folder_of(config, hardware_key)}/{ix.INDEX_FILE}"
        try:
            raw = _read_raw(client, path, branch, limit=ix.MAX_INDEX_BYTES, what="a history index")
        except NotFound:
            raise NoHistory(f"no history for config {config!r} on {hardware_key} on {where} (no {path}); it is "
                            "written by `canary baseline push` and the action's update-baseline") from None
    except PermissionDenied as exc:
        raise HistoryError(f"cannot read history from {where}: the token may not read repository contents "
                           f"({exc.status} {exc.message}); grant `contents: read`") from None
    except GitHubError as exc:
        raise HistoryError(f"cannot read history from {where}: {exc}") from None
    return _parse(raw, f"branch:{branch}/{path}")


def _read_artifact(client, spec: ArtifactSpec, config: str, hardware_key: str | None,
                   default_branch: str | None) -> ix.Index:
    from ..baselines.artifact import download_latest

    art, total, data, default_branch = download_latest(client, spec.name, default_branch, HistoryError)
    if art is None:
        raise NoHistory(f"no history: no non-expired artifact named {spec.name!r} from a run on "
                        f"{default_branch!r} ({total} with that name in all)")
    return zip_index(data, f"{spec}#{art['id']}", config, hardware_key)


def zip_index(data: bytes, origin: str, config: str, hardware_key: str | None) -> ix.Index:
    """The index.json for (config, hardware) inside an artifact's zip, found by its content (the
    index names its config and hardware key); read in memory, member names never used as paths."""
    from ..baselines.artifact import MAX_MEMBERS, _read_member, _unsafe

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise HistoryError(f"{origin} is not a valid zip archive: {exc}") from None
    found: dict[str, ix.Index] = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise HistoryError(f"{origin} has {len(infos)} members; refusing more than {MAX_MEMBERS}")
        members = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).name == ix.INDEX_FILE
                   and not _unsafe(i.filename)]
        for info in members[:100]:
            if info.file_size > ix.MAX_INDEX_BYTES:
                raise HistoryError(f"{info.filename[:200]!r} in {origin} is larger than {ix.MAX_INDEX_BYTES} bytes")
            idx = _parse(_read_member(zf, info, ix.MAX_INDEX_BYTES, origin), f"{origin}/{info.filename[:200]}")
            if idx.config == config:
                found.setdefault(idx.hardware_key, idx)
    if hardware_key is None:
        hardware_key = _pick_hardware(sorted(found), config, origin)
    if hardware_key not in found:
        raise NoHistory(f"no history for config {config!r} on {hardware_key} in {origin}"
                        + (f" (it has: {', '.join(sorted(found))})" if found else " (no index.json in it)"))
    return found[hardware_key]


def read_full_record(spec: str | BaselineSpec, index: ix.Index, entry: ix.Entry, *, client=None,
                     workspace: Path | None = None):
    """The full record (a BaselineRun) an index entry names: its history file, or metrics.json when
    the entry is the index's newest and names none. Raises HistoryError when there is none to read."""
    from ..baselines.model import parse_run

    spec = _spec(spec)
    rel = full_record_path(entry)
    if rel is None:
        if not index.entries or entry is not index.entries[-1]:
            raise HistoryError(f"the record of {entry.sha[:12]} was trimmed from the history (only its numbers "
                               "are kept in the index)")
        rel = METRICS_FILE
    folder = folder_of(index.config, index.hardware_key)
    if isinstance(spec, PathSpec):
        root = _path_root(Path(spec.path), workspace)
        path = root / folder / rel
        try:
            if workspace is not None:
                from ..baselines.local import _inside

                if not _inside(path.resolve(), Path(workspace).resolve()):
                    raise HistoryError(f"{path} is a symlink that leads outside the workspace; not read")
            from ..baselines.local import _read

            return _read(path, workspace)
        except BaselineError as exc:
            raise HistoryError(f"the record of {entry.sha[:12]}: {exc}") from None
    if isinstance(spec, BranchSpec):
        from ..baselines.branch import _read_raw
        from ..github.client import GitHubError, NotFound

        path = f"{folder}/{rel}"
        try:
            return parse_run(_read_raw(client, path, spec.branch), f"{spec}/{path}")
        except NotFound:
            raise HistoryError(f"the record of {entry.sha[:12]} ({path}) is not on branch {spec.branch!r}") from None
        except GitHubError as exc:
            raise HistoryError(f"cannot read {path} from branch {spec.branch!r}: {exc}") from None
    raise HistoryError(f"{spec}: full records are read with the artifact itself, not through the index")


# ------------------------------------------------------------------------------------------ write
Update = Callable[[ix.Index], object]


def update_index(spec: str | BaselineSpec, config: str, hardware_key: str, update: Update | ix.Index, *,
                 client=None, workspace: Path | None = None, message: str | None = None,
                 max_attempts: int = 3) -> ix.Index:
    """Apply `update` to the store's current index (a new, empty one when there is none) and write it
    back. `update` is a function changing the index in place (re-applied to the fresh index after a
    conflicting write on a branch) or an Index to store as it is. Returns the index written."""
    spec = _spec(spec)
    apply = update if callable(update) else (lambda idx: _replace(idx, update))
    if isinstance(spec, ArtifactSpec):
        raise BaselineSpecError(f"{spec} is read-only: an artifact's index is uploaded with the artifact")
    if isinstance(spec, PathSpec):
        return _write_path(Path(spec.path), config, hardware_key, apply, workspace)
    if client is None:
        raise ValueError(f"history in {spec} needs a GitHub client (--repo and a token)")
    return _write_branch(client, spec.branch, config, hardware_key, apply, message, max_attempts)


write_index = update_index  # the name the history commands were promised


def _replace(idx: ix.Index, new: ix.Index) -> None:
    idx.entries, idx.acks = list(new.entries), list(new.acks)


def _current(read: Callable[[], ix.Index], config: str, hardware_key: str) -> ix.Index:
    try:
        return read()
    except NoHistory:
        return ix.new(config, hardware_key)


def _write_path(root: Path, config: str, hardware_key: str, apply: Update, workspace: Path | None) -> ix.Index:
    from ..baselines.local import refuse_symlinks
    from ..results import write_atomic

    idx = _current(lambda: _read_path(root, config, hardware_key, workspace, f"path:{root}"), config, hardware_key)
    apply(idx)
    base = Path(os.path.abspath(workspace)) if workspace is not None else Path(root)
    dest = _path_root(root, workspace) / folder_of(config, hardware_key) / ix.INDEX_FILE
    try:
        refuse_symlinks(base, dest)
        write_atomic(dest, idx.dumps())
    except OSError as exc:
        raise HistoryError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return idx


def _write_branch(client, branch: str, config: str, hardware_key: str, apply: Update, message: str | None,
                  max_attempts: int) -> ix.Index:
    from ..baselines.branch import _contents, _file_sha
    from ..github.client import Conflict, GitHubError, PermissionDenied

    path = f"{folder_of(config, hardware_key)}/{ix.INDEX_FILE}"
    message = message or f"canary history: {folder_of(config, hardware_key)} index [skip ci]"
    try:
        for attempt in range(1, max_attempts + 1):
            sha = _file_sha(client, path, branch)
            idx = _current(lambda: _read_branch(client, branch, config, hardware_key), config, hardware_key) \
                if sha else ix.new(config, hardware_key)
            apply(idx)
            body = {"message": message, "content": base64.b64encode(idx.dumps()).decode("ascii"), "branch": branch}
            if sha:
                body["sha"] = sha
            try:
                client.put_json(_contents(client, path), body)
                return idx
            except Conflict as exc:
                log.info("history index write to %s conflicted (%s); re-reading (attempt %d of %d)",
                         path, exc.message, attempt, max_attempts)
            except GitHubError as exc:
                if not (exc.status == 422 and "sha" in exc.message.lower()):  # created between read and write
                    raise
    except PermissionDenied as exc:
        raise HistoryError(f"cannot write history to branch {branch!r}: the token may not push "
                           f"({exc.status} {exc.message}); grant `contents: write`") from None
    except GitHubError as exc:
        raise HistoryError(f"cannot write history to branch {branch!r}: {exc}") from None
    raise HistoryError(f"history index write to {path} on {branch!r} kept conflicting after {max_attempts} attempts")


def record_baseline(spec: str | BaselineSpec, record: dict, *, sha: str, parent: str | None, file: str | None,
                    keep: int = ix.DEFAULT_KEEP, max_age_days: float = ix.DEFAULT_MAX_AGE_DAYS,
                    present: Callable[[str], bool] | None = None, client=None, workspace: Path | None = None,
                    ) -> ix.Index:
    """Append the entry of a baseline just pushed (its commit, parent, the run's end time, the trend
    numbers, its history file) and apply retention. `present(file)` says whether an older entry's full
    record still exists (the history is trimmed to --keep-history): an entry whose file is gone keeps
    its numbers but no longer names it."""
    config = str((record.get("run") or {}).get("config_name") or "")
    hardware_key = str((record.get("env") or {}).get("hardware_key") or "")
    if not config or not hardware_key:
        raise HistoryError("the run has no run.config_name or env.hardware_key; cannot index it")
    try:
        entry = ix.entry_from_record(record, sha=sha, parent=parent, file=file)
    except ix.IndexError_ as exc:
        raise HistoryError(str(exc)) from None

    def apply(idx: ix.Index) -> None:
        ix.append(idx, entry, keep=keep, max_age_days=max_age_days)
        if present is not None:
            for e in idx.entries:
                if e is not entry and e.file and not present(e.file):
                    e.file = None

    return update_index(spec, config, hardware_key, apply, client=client, workspace=workspace,
                        message=f"canary history: {folder_of(config, hardware_key)} {sha[:12]} [skip ci]")


__all__ = ["AmbiguousHardware", "HistoryError", "NoHistory", "folder_of", "full_record_path", "read_full_record",
           "read_index",
           "record_baseline", "update_index", "write_index", "zip_index"]
