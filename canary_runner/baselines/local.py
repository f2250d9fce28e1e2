"""`path:<dir>`: baselines in a local directory (a checkout, a downloaded artifact, a cache)."""

from __future__ import annotations

from pathlib import Path

from .model import HISTORY_DIR, METRICS_FILE, BaselineError, BaselineLookup, BaselineRun, not_found, parse_run, path_segment, select

MAX_FILE_BYTES = 512 << 20


def _read(path: Path) -> BaselineRun:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BaselineError(f"baseline {path} is larger than {MAX_FILE_BYTES} bytes")
        return parse_run(path.read_bytes(), str(path))
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc.strerror or exc}") from None


def read_path_baseline(root: Path, *, config_name: str, hardware_key: str, history: int = 0,
                       source: str | None = None) -> BaselineLookup:
    """Read `root` itself (a metrics.json file), `root/metrics.json`, or `root/<config>/<hardware>/
    metrics.json` (the branch layout) and any metrics.json up to two levels down; select by content.
    `history` > 0 adds that many of the newest `<config>/<hardware>/history/*.json`."""
    root = Path(root)
    source = source or f"path:{root}"
    if root.is_file():
        return select([_read(root)], source=source, config_name=config_name, hardware_key=hardware_key)
    if not root.is_dir():
        return not_found(source, config_name, hardware_key, f"no baseline: directory {root} does not exist")
    files = [root / METRICS_FILE, *sorted(root.glob(f"*/{METRICS_FILE}")), *sorted(root.glob(f"*/*/{METRICS_FILE}"))]
    runs = [_read(p) for p in files if p.is_file()]
    if history > 0:
        hist = root / path_segment(config_name) / path_segment(hardware_key) / HISTORY_DIR
        entries = sorted(hist.glob("*.json"), reverse=True)[:history] if hist.is_dir() else []
        runs += [_read(p) for p in entries]
    return select(runs, source=source, config_name=config_name, hardware_key=hardware_key, searched=str(root))


def write_path_baseline(root: Path, metrics_raw: bytes, *, keep_history: int = 10, timestamp: str | None = None,
                        commit_sha: str | None = None) -> Path:
    """Store a run as the baseline under `root` in the branch layout (`<config>/<hardware>/metrics.json`
    plus a bounded `history/`), e.g. for a directory kept with actions/cache. Returns the file written."""
    import os
    import tempfile
    import time

    run = parse_run(metrics_raw, "the new baseline")
    if not run.config_name or not run.hardware_key:
        raise BaselineError("the new baseline has no run.config_name or env.hardware_key; refusing to file it")
    if keep_history < 1:
        raise ValueError("keep_history must be at least 1")
    folder = Path(root) / path_segment(run.config_name) / path_segment(run.hardware_key)
    stamp = timestamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    sha = commit_sha or ((run.metrics.get("run") or {}).get("git_sha")) or "unknown"
    hist = folder / HISTORY_DIR
    try:
        hist.mkdir(parents=True, exist_ok=True)
        for dest in (hist / f"{stamp}-{path_segment(str(sha)[:12])}.json", folder / METRICS_FILE):
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(metrics_raw)
            os.replace(tmp, dest)  # readers see the old file or the new one, never half of one
        for old in sorted(hist.glob("*.json"))[:-keep_history]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise BaselineError(f"cannot write baseline under {root}: {exc.strerror or exc}") from None
    return folder / METRICS_FILE
