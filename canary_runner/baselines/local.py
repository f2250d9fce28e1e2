"""`path:<dir>`: baselines in a local directory (a checkout, a downloaded artifact, a cache).

In the action the directory must lie inside the workspace: a `path:` spec with `..`, an absolute path
elsewhere, or a symlink that leads out of the workspace is refused, for reads and for writes. Writes
never go through a symlink at all: every directory below the root must be a real directory, and files
are replaced by an atomic rename, which replaces a symlink instead of writing to its target.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..results import MAX_METRICS_BYTES, size_text, write_atomic
from .model import HISTORY_DIR, METRICS_FILE, BaselineError, BaselineLookup, BaselineRun, not_found, parse_run, path_segment, select
from .spec import BaselineSpecError


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(path: Path, workspace: Path) -> Path:
    """`path` (relative to `workspace`, or absolute) checked to lie inside `workspace`, symlinks
    followed; raises BaselineSpecError (bad input) otherwise. Returns the path, not resolved."""
    path = Path(path)
    fix = "give a directory inside the workspace, e.g. path:canary-baselines"
    if ".." in path.parts:
        raise BaselineSpecError(f"baseline path {str(path)!r} contains '..'; {fix}")
    full = Path(os.path.abspath(path if path.is_absolute() else Path(workspace) / path))
    ws = Path(workspace).resolve()
    if not _inside(full.resolve(), ws):
        where = "leads (through a symlink) outside" if _inside(full, Path(os.path.abspath(workspace))) else "is outside"
        raise BaselineSpecError(f"baseline path {str(path)!r} {where} the workspace ({ws}); {fix}")
    return full


def _read(path: Path, workspace: Path | None) -> BaselineRun:
    try:
        if workspace is not None and not _inside(path.resolve(), Path(workspace).resolve()):
            raise BaselineError(f"baseline {path} is a symlink that leads outside the workspace; not read")
        if path.stat().st_size > MAX_METRICS_BYTES:
            raise BaselineError(f"baseline {path} is larger than {size_text(MAX_METRICS_BYTES)}, the most a "
                                "metrics.json may be")
        return parse_run(path.read_bytes(), str(path))
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc.strerror or exc}") from None


def read_path_baseline(root: Path, *, config_name: str, hardware_key: str, history: int = 0,
                       source: str | None = None, workspace: Path | None = None) -> BaselineLookup:
    """Read `root` itself (a metrics.json file), `root/metrics.json`, or `root/<config>/<hardware>/
    metrics.json` (the branch layout) and any metrics.json up to two levels down; select by content.
    `history` > 0 adds that many of the newest `<config>/<hardware>/history/*.json`. With `workspace`,
    `root` and every file read must lie inside it."""
    root = Path(root)
    source = source or f"path:{root}"
    if workspace is not None:
        root = confine(root, workspace)
    if root.is_file():
        return select([_read(root, workspace)], source=source, config_name=config_name, hardware_key=hardware_key)
    if not root.is_dir():
        return not_found(source, config_name, hardware_key, f"no baseline: directory {root} does not exist")
    files = [root / METRICS_FILE, *sorted(root.glob(f"*/{METRICS_FILE}")), *sorted(root.glob(f"*/*/{METRICS_FILE}"))]
    runs = [_read(p, workspace) for p in files if p.is_file()]
    if history > 0:
        hist = root / path_segment(config_name) / path_segment(hardware_key) / HISTORY_DIR
        entries = sorted(hist.glob("*.json"), reverse=True)[:history] if hist.is_dir() else []
        runs += [_read(p, workspace) for p in entries]
    return select(runs, source=source, config_name=config_name, hardware_key=hardware_key, searched=str(root))


def refuse_symlinks(base: Path, dest: Path) -> None:
    """Raise BaselineError when a component of `dest` below `base` is a symlink (a write would go
    wherever it points). `dest` itself may be one: it is replaced by a rename, never written through."""
    rel = Path(os.path.abspath(dest)).relative_to(os.path.abspath(base))
    here = Path(base)
    for part in rel.parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise BaselineError(f"refusing to write the baseline through the symlink {here}; "
                                "replace it with a directory")


def write_path_baseline(root: Path, metrics_raw: bytes, *, keep_history: int = 10, timestamp: str | None = None,
                        commit_sha: str | None = None, workspace: Path | None = None) -> Path:
    """Store a run as the baseline under `root` in the branch layout (`<config>/<hardware>/metrics.json`
    plus a bounded `history/`), e.g. for a directory kept with actions/cache. Returns the file written.
    With `workspace`, `root` must lie inside it and no directory from the workspace down may be a symlink;
    without, none below `root`."""
    run = parse_run(metrics_raw, "the new baseline")
    if not run.config_name or not run.hardware_key:
        raise BaselineError("the new baseline has no run.config_name or env.hardware_key; refusing to file it")
    if keep_history < 1:
        raise ValueError("keep_history must be at least 1")
    base = Path(root)
    if workspace is not None:
        root = confine(root, workspace)
        base = Path(os.path.abspath(workspace))
    folder = Path(root) / path_segment(run.config_name) / path_segment(run.hardware_key)
    stamp = timestamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    sha = commit_sha or ((run.metrics.get("run") or {}).get("git_sha")) or "unknown"
    hist = folder / HISTORY_DIR
    entry = hist / f"{stamp}-{path_segment(str(sha)[:12])}.json"
    try:
        refuse_symlinks(base, entry)
        hist.mkdir(parents=True, exist_ok=True)
        for dest in (entry, folder / METRICS_FILE):
            write_atomic(dest, metrics_raw)  # readers see the old file or the new one, never half of one
        for old in sorted(hist.glob("*.json"))[:-keep_history]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise BaselineError(f"cannot write baseline under {root}: {exc.strerror or exc}") from None
    return folder / METRICS_FILE
