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

# What one metrics.json may hold. A canary run is minutes long (a 2,000-step DPO record is ~1 MB), so
# these are far above any real record; they keep a corrupt or hostile file (a baseline comes from an
# artifact or a branch) from costing more than seconds and a few hundred MB to load and compare.
MAX_METRICS_BYTES = 64 << 20
MAX_STEPS = 50_000
MAX_SERIES = 2_000
# Files are written world-readable: the container runs as root and the next step (actions/upload-artifact
# on the host) runs as the runner's user. Nothing secret is ever written to them.
FILE_MODE = 0o644


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


def write_atomic(path: str | os.PathLike, data: bytes | str, mode: int = FILE_MODE) -> Path:
    """Write a file so that readers see the old file or the new one, never half of one.

    The rename replaces a symlink at `path` rather than writing through it, and the file gets `mode`
    whatever the umask (mkstemp alone would leave it 0600, unreadable to the next step)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (see `write_atomic`), non-finite floats as strings."""
    return write_atomic(path, json.dumps(encode(data), indent=1, allow_nan=False) + "\n")


def schema() -> dict:
    return schemas.load("metrics")


def validate(record: dict) -> None:
    """Raise MetricsFileError naming the first problem of an *encoded* record: a schema violation,
    or series that do not fit together (see `consistency_error`)."""
    error = _schema_error(record) or consistency_error(record)
    if error is not None:
        raise MetricsFileError(error)


def _schema_error(record) -> str | None:
    """The schema's first violation. The per-step arrays are checked here in plain Python (the same
    rules as the schema's `series` items): jsonschema takes ~1 s per 1,000 steps on them."""
    series = record.get("series") if isinstance(record, dict) else None
    if not isinstance(series, dict):
        return schemas.first_error("metrics", record)
    outline = dict(record, series={k: [] if isinstance(v, list) else v for k, v in series.items()})
    return schemas.first_error("metrics", outline) or _series_item_error(series)


def _is_integer(v) -> bool:  # JSON Schema's "integer": 3 and 3.0, never true/false
    return not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))


def _is_num(v) -> bool:  # $defs/num: a number, null, or a non-finite float written as a string
    if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return True
    return isinstance(v, str) and v in _NONFINITE


_SERIES_ITEMS = {
    "step": (lambda v: _is_integer(v) and v >= 1, "an integer step number of at least 1"),
    "warmup": (lambda v: isinstance(v, bool), "true or false"),
}


def _series_item_error(series: dict) -> str | None:
    for name, values in series.items():
        ok, what = _SERIES_ITEMS.get(name, (_is_num, 'a number, null, "NaN", "Infinity" or "-Infinity"'))
        for i, v in enumerate(values):
            if not ok(v):
                return f"series/{name}/{i}: {_short(v)} is not {what}"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def consistency_error(record: dict) -> str | None:
    """What the schema cannot say about a (schema-valid, encoded or decoded) record: every series is
    as long as `step`, steps increase, times are finite and not negative (step times positive), the
    `warmup` mask is the steps up to `run.warmup_steps`, and the record is within the size limits.
    Compare reads series by position, so a record that breaks these would give silent nonsense."""
    series = record["series"]
    steps = series["step"]
    n = len(steps)
    if n > MAX_STEPS:
        return f"series/step: {n} steps; a metrics.json may hold at most {MAX_STEPS}"
    if len(series) > MAX_SERIES:
        return f"series: {len(series)} series; a metrics.json may hold at most {MAX_SERIES}"
    for name, values in series.items():
        if len(values) != n:
            return f"series/{name}: {len(values)} values but series/step has {n}; every series has one value per step"
    for i in range(1, n):
        if steps[i] <= steps[i - 1]:
            return f"series/step/{i}: step {steps[i]} follows step {steps[i - 1]}; steps must increase"
    for name, values in series.items():
        if name != "step_time_s" and not name.endswith("_time_s"):
            continue
        positive = name == "step_time_s" or name.endswith("/step_time_s")
        for i, v in enumerate(values):
            if v is None:
                continue
            if not _finite_number(v) or v < 0 or (positive and v == 0):
                need = "positive" if positive else "0 or more"
                return f"series/{name}/{i}: {_short(v)} is not a time; times are finite and {need} (seconds)"
    warmup_steps = record["run"]["warmup_steps"]
    for i, (step, warm) in enumerate(zip(steps, series["warmup"])):
        if warm != (step <= warmup_steps):
            return (f"series/warmup/{i}: {str(warm).lower()} at step {step}, but run.warmup_steps is "
                    f"{warmup_steps}; the mask must be true exactly for the steps up to it")
    return None


def size_text(n: int) -> str:
    """A byte count for a message: '64 MiB', '1.5 MiB', '900 bytes'."""
    if n < 1 << 20:
        return f"{n} bytes"
    return f"{n / 2**20:.1f}".removesuffix(".0") + " MiB"


class _Bare:
    """A bare NaN/Infinity/-Infinity token: Python's json accepts them, JSON does not."""

    def __init__(self, name: str):
        self.name = name


def _first_bare(value, where: str = "") -> str | None:
    if isinstance(value, _Bare):
        return f"{where or '(top level)'}: bare {value.name}"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_bare(item, f"{where}/{key}" if where else str(key))
        if found:
            return found
    return None


def parse_metrics(raw: bytes | str, origin: str) -> dict:
    """Parse, check and decode the bytes of a metrics.json; `origin` names it in every message.

    Raises MetricsFileError, saying what is wrong and what to do, for anything compare could not
    trust: over the size limits, not JSON, bare NaN/Infinity, another schema_version, a schema
    violation, or series that do not fit together."""
    if len(raw) > MAX_METRICS_BYTES:
        raise MetricsFileError(f"{origin}: {size_text(len(raw))}; a metrics.json may be at most "
                               f"{size_text(MAX_METRICS_BYTES)} (see the limits in README.md)")
    found_bare = []

    def bare(name: str) -> _Bare:
        found_bare.append(name)
        return _Bare(name)

    try:
        doc = json.loads(raw, parse_constant=bare)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetricsFileError(f"{origin}: not valid JSON ({e}). The file is corrupt; re-run the canary.") from None
    except RecursionError:
        raise MetricsFileError(f"{origin}: not valid JSON (nested too deeply). The file is corrupt.") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise MetricsFileError(f"{origin}: not a canary metrics.json (no schema_version).")
    version = doc["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise MetricsFileError(
            f"{origin}: schema_version {_short(version)} is not supported (this canary reads {SCHEMA_VERSION}). "
            "Upgrade rlhf-canary or regenerate the baseline."
        )
    if found_bare:
        raise MetricsFileError(f"{origin}: {_first_bare(doc)} is not JSON; a non-finite number is written "
                               'as the string "NaN", "Infinity" or "-Infinity". The file was not written by '
                               "the canary; regenerate it.")
    schema_error = _schema_error(doc)
    if schema_error is not None:
        raise MetricsFileError(f"{origin}: does not match the metrics schema at {schema_error}")
    inconsistent = consistency_error(doc)
    if inconsistent is not None:
        raise MetricsFileError(f"{origin}: inconsistent record at {inconsistent}")
    return decode(doc)


def load_metrics(path: str | os.PathLike) -> dict:
    """Load and check a metrics.json (or a run directory holding one); floats decoded."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise MetricsFileError(f"{path}: no such file. Pass a metrics.json or the run directory of `canary run`.")
    try:
        size = path.stat().st_size
        if size > MAX_METRICS_BYTES:  # said before reading a byte of it
            raise MetricsFileError(f"{path}: {size_text(size)}; a metrics.json may be at most "
                                   f"{size_text(MAX_METRICS_BYTES)} (see the limits in README.md)")
        raw = path.read_bytes()
    except OSError as e:
        raise MetricsFileError(f"{path}: cannot read it ({e.strerror or e}).") from None
    return parse_metrics(raw, str(path))


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


def to_series(records: list[dict]) -> dict[str, list]:
    """Per-step records to aligned per-metric arrays (None where a metric was not logged)."""
    names: list[str] = []
    for rec in records:
        for k in rec:
            if k not in names:
                names.append(k)
    series = {k: [rec.get(k) for rec in records] for k in names}
    for required in ("step", "warmup", "step_time_s", "tokens", "loss", "grad_norm"):
        series.setdefault(required, [None] * len(records))
    return series
