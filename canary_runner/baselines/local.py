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
