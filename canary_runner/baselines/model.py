"""What every baseline source returns, the on-branch layout, and hardware-keyed selection.

metrics.json is opaque here except for two keys: `run.config_name` and `env.hardware_key`.
Selection is by both, so an A100 run is never compared with an H100 baseline by accident.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..results import MAX_METRICS_BYTES, size_text

HISTORY_DIR = "history"
METRICS_FILE = "metrics.json"


class BaselineError(RuntimeError):
    """A baseline source could not be read or written (corrupt file, refused by GitHub, ...).
    A baseline that simply does not exist is not an error: see `BaselineLookup.found`."""


@dataclass(frozen=True)
class BaselineRun:
    raw: bytes = field(repr=False)
    metrics: dict[str, Any] = field(repr=False)
    origin: str  # where it came from, for messages: "branch:canary-baselines/sft-tiny/h100/metrics.json"

    @property
    def config_name(self) -> str | None:
        run = self.metrics.get("run")
        return run.get("config_name") if isinstance(run, dict) else None

    @property
    def hardware_key(self) -> str | None:
        env = self.metrics.get("env")
        return env.get("hardware_key") if isinstance(env, dict) else None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


@dataclass(frozen=True)
class BaselineLookup:
    source: str  # the spec, e.g. "branch:canary-baselines"
    config_name: str
    hardware_key: str
    runs: tuple[BaselineRun, ...] = ()  # matching runs, newest first
    available_hardware: tuple[str, ...] = ()  # hardware keys the source has for this config
    message: str = ""

    @property
    def found(self) -> bool:
        return bool(self.runs)

    @property
    def latest(self) -> BaselineRun | None:
        return self.runs[0] if self.runs else None


def parse_run(raw: bytes, origin: str) -> BaselineRun:
    if len(raw) > MAX_METRICS_BYTES:
        raise BaselineError(f"baseline {origin} is {size_text(len(raw))}; a metrics.json may be at most "
                            f"{size_text(MAX_METRICS_BYTES)}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BaselineError(f"baseline {origin} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BaselineError(f"baseline {origin} is not a JSON object")
    return BaselineRun(raw=raw, metrics=data, origin=origin)


def unfit_as_baseline(metrics: dict) -> str | None:
    """Why a run must not become the baseline (None when it may): a crashed run, one without a
    single step, or one with NaN/Inf would make every later comparison meaningless."""
    status = metrics.get("status")
    if status != "completed":
        return f"the run {status}" if isinstance(status, str) else "the run has no status"
    steps = (metrics.get("series") or {}).get("step") or []
    if not steps:
        return "the run completed without recording a single step"
    nan_total = (((metrics.get("summary") or {}).get("nan_inf") or {}).get("total")) or 0
    if nan_total:
        return f"the run has {nan_total} NaN/Inf values"
    return None


def path_segment(value: str) -> str:
    """A config name or hardware key as one safe path segment (same mapping on read and write)."""
    seg = re.sub(r"[^A-Za-z0-9._-]", "_", value.strip())
    if not seg or set(seg) == {"."}:
        raise ValueError(f"{value!r} cannot be used as a baseline path segment")
    return seg


def baseline_dir(config_name: str, hardware_key: str) -> str:
    return f"{path_segment(config_name)}/{path_segment(hardware_key)}"


def select(runs: Iterable[BaselineRun], *, source: str, config_name: str, hardware_key: str,
           searched: str | None = None) -> BaselineLookup:
    """Keep the runs of `config_name` on `hardware_key`; say clearly what exists when none match."""
    unique: list[BaselineRun] = []
    seen: set[str] = set()
    for r in runs:  # the branch's metrics.json and its newest history entry are the same bytes
        if r.digest not in seen:
            seen.add(r.digest)
            unique.append(r)
    where = searched or source
    same_config = [r for r in unique if r.config_name == config_name]
    if not same_config:
        configs = sorted({str(r.config_name) for r in unique})
        found = f"found configs: {', '.join(configs)}" if configs else "found no metrics.json"
        return BaselineLookup(source, config_name, hardware_key,
                              message=f"no baseline for config {config_name!r} in {where} ({found})")
    hardware = tuple(sorted({str(r.hardware_key) for r in same_config}))
    matching = tuple(r for r in same_config if r.hardware_key == hardware_key)
    if not matching:
        return BaselineLookup(source, config_name, hardware_key, available_hardware=hardware,
                              message=f"no baseline for hardware {hardware_key} (found: {', '.join(hardware)}) "
                                      f"for config {config_name!r} in {where}")
    n = len(matching)
    return BaselineLookup(source, config_name, hardware_key, runs=matching, available_hardware=hardware,
                          message=f"baseline for {config_name!r} on {hardware_key}: {n} run{'s' if n > 1 else ''} "
                                  f"from {where} (latest: {matching[0].origin})")


def not_found(source: str, config_name: str, hardware_key: str, message: str,
              available_hardware: Iterable[str] = ()) -> BaselineLookup:
    return BaselineLookup(source, config_name, hardware_key, available_hardware=tuple(sorted(available_hardware)),
                          message=message)
