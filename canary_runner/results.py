"""metrics.json: the durable record of one canary run.

A public format: users keep baselines for months, so it carries a `schema_version`, a JSON Schema
(`schemas/metrics.schema.json`), and loaders that reject what they cannot read with a clear message.
JSON has no NaN/Inf, and a NaN loss is exactly what a canary must keep, so non-finite floats are
written as the strings "NaN", "Infinity", "-Infinity" and decoded back on load.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from . import schemas

SCHEMA_VERSION = 1
STATUSES = ("completed", "crashed", "timeout", "interrupted")
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class MetricsFileError(Exception):
    """A metrics.json that is missing, corrupt or of a schema this version cannot read."""


def encode(value: Any) -> Any:
    """Replace non-finite floats with their string names, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """Inverse of `encode`: the string names become floats again."""
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(encode(data), f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def schema() -> dict:
    return schemas.load("metrics")


def validate(record: dict) -> None:
    """Raise MetricsFileError naming the first schema violation of an *encoded* record."""
    error = schemas.first_error("metrics", record)
    if error is not None:
        raise MetricsFileError(error)


def load_metrics(path: str | os.PathLike) -> dict:
    """Load and validate a metrics.json (or a run directory holding one); floats decoded."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise MetricsFileError(f"{path}: no such file. Pass a metrics.json or the run directory of `canary run`.")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetricsFileError(f"{path}: not valid JSON ({e}). The file is corrupt; re-run the canary.") from None
    if not isinstance(raw, dict) or "schema_version" not in raw:
        raise MetricsFileError(f"{path}: not a canary metrics.json (no schema_version).")
    version = raw["schema_version"]
    if version != SCHEMA_VERSION:
        raise MetricsFileError(
            f"{path}: schema_version {version!r} is not supported (this canary reads {SCHEMA_VERSION}). "
            "Upgrade rlhf-canary or regenerate the baseline."
        )
    try:
        validate(raw)
    except MetricsFileError as e:
        raise MetricsFileError(f"{path}: does not match the metrics schema at {e}") from None
    return decode(raw)


# -- summary statistics ---------------------------------------------------------------------------


def finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def describe(values) -> dict:
    """count/median/mean/p95/MAD/min/max of the finite values (None when there are none)."""
    xs = sorted(finite(values))
    if not xs:
        return {"count": 0, "median": None, "mean": None, "p95": None, "mad": None, "min": None, "max": None}
    med = statistics.median(xs)
    # p95 by linear interpolation between closest ranks (numpy's default).
    pos = 0.95 * (len(xs) - 1)
    lo = int(pos)
    p95 = xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)
    return {
        "count": len(xs),
        "median": med,
        "mean": statistics.fmean(xs),
        "p95": p95,
        "mad": statistics.median(abs(x - med) for x in xs),
        "min": xs[0],
        "max": xs[-1],
    }


def steady(series: dict, name: str) -> list:
    """The values of one series at the steps after warmup."""
    return [v for v, w in zip(series.get(name, []), series["warmup"]) if not w]


def is_nonfinite(v) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def summarize(series: dict, phase_names: list[str] = ()) -> dict:
    """The summary block of metrics.json, computed from the per-step series."""
    steps = series["step"]
    times = series["step_time_s"]
    tps = [t / s if isinstance(t, (int, float)) and s else None for t, s in zip(series["tokens"], times)]

    nan_by_metric: dict[str, int] = {}
    first_step, first_metric = None, None
    for i, step in enumerate(steps):
        for name, values in series.items():
            if name in ("step", "warmup") or not is_nonfinite(values[i]):
                continue
            nan_by_metric[name] = nan_by_metric.get(name, 0) + 1
            if first_step is None:
                first_step, first_metric = step, name

    losses = [v for v in series["loss"] if isinstance(v, (int, float))]
    finite_losses = finite(losses)
    last = {}
    for name, values in series.items():
        if name in ("step", "warmup"):
            continue
        logged = [v for v in values if v is not None]
        if logged:
            last[name] = logged[-1]

    rss = finite(series.get("mem_rss_anon_mb", []))
    devices = []
    for name in series:
        if name.startswith("mem_cuda_max_allocated_mb"):
            dev = name.removeprefix("mem_cuda_max_allocated_mb").lstrip("_") or "cuda:0"
            reserved = series.get(name.replace("allocated", "reserved"), [])
            devices.append({
                "device": dev,
                "max_allocated_mb": max(finite(series[name]), default=0.0),
                "max_reserved_mb": max(finite(reserved), default=0.0),
            })
    return {
        "step_time_s": describe(steady(series, "step_time_s")),
        "tokens_per_s": describe([v for v, w in zip(tps, series["warmup"]) if not w]),
        "tokens_total": int(sum(finite(series["tokens"]))),
        "phases": {p: describe(steady(series, p)) for p in phase_names if p in series},
        "peak_memory": {
            "cpu_rss_anon_mb": max(rss) if rss else None,
            "cpu_rss_anon_rise_mb": (max(rss) - rss[0]) if rss else None,
            "devices": devices,
        },
        "nan_inf": {
            "total": sum(nan_by_metric.values()),
            "by_metric": nan_by_metric,
            "first_step": first_step,
            "first_metric": first_metric,
        },
        "loss": {
            "first": losses[0] if losses else None,
            "final": losses[-1] if losses else None,
            "min": min(finite_losses) if finite_losses else None,
        },
        "last": last,
    }
