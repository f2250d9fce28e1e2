"""Per-check threshold overrides: one strict model for the thresholds YAML file and a config's `thresholds:`.

A thresholds document sets, per check id (or check family), the limits compare holds a run to:

```yaml
version: 1                  # optional
confidence: 0.95            # optional: confidence level of the intervals
checks:
  perf.step_time: {relative: 0.15}          # fail when median step time is >15% slower (interval clear of it)
  memory.cuda_max_allocated: {relative: 0.05, absolute: 256}   # every device; `.cuda:1` for one device
  rl.ppo.kl: {max: 8.0}
  environment.stack: {severity: info}
```

Fields of one check (all optional; a field set to null switches that criterion off):
- `relative`: allowed relative change against the baseline, in the check's bad direction (0.10 = 10%).
- `absolute`: allowed absolute change against the baseline, in the metric's unit. When both `relative`
  and `absolute` are set, a change must exceed both to count (the absolute one is a noise floor).
- `max` / `min`: limits on the current value alone (no baseline needed).
- `severity`: `fail` (default), `warn` (never worse than warn) or `info` (reported, never worse than pass).
- `enabled`: false skips the check.

Keys are the check ids that `canary_runner/compare/defaults.yaml` lists, so a typo is an error that names
the key. Families with one check per device or phase (`perf.phase`, `memory.cuda_max_allocated`,
`memory.cuda_max_reserved`) also accept `FAMILY.NAME` for one member (`perf.phase.generation`).

This module stays light (pydantic and PyYAML): the config loader imports it.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Severity = Literal["fail", "warn", "info"]
OPEN_FAMILIES = ("perf.phase", "memory.cuda_max_allocated", "memory.cuda_max_reserved")
LIMIT_FIELDS = ("relative", "absolute", "max", "min", "severity", "enabled")


class ThresholdsError(Exception):
    """A thresholds file or block that cannot be used; the message names the file, key and field."""


class CheckThreshold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    relative: float | None = Field(None, ge=0, description="Allowed relative change vs the baseline (0.1 = 10%).")
    absolute: float | None = Field(None, ge=0, description="Allowed absolute change vs the baseline, metric units.")
    max: float | None = Field(None, description="Upper limit on the current value (no baseline needed).")
    min: float | None = Field(None, description="Lower limit on the current value (no baseline needed).")
    severity: Severity | None = Field(None, description="fail (default), warn or info: the worst status it may give.")
    enabled: bool | None = None

    def explicit(self) -> dict:
        """The fields this block sets (a field set to null is kept: it switches the criterion off)."""
        return self.model_dump(exclude_unset=True)


@cache
def known_check_keys() -> frozenset[str]:
    """Every check id or family that the shipped defaults define."""
    data = _defaults_raw()
    keys: set[str] = set((data.get("common") or {}).get("checks") or {})
    for tier in (data.get("tiers") or {}).values():
        keys |= set((tier or {}).get("checks") or {})
    return frozenset(keys)


def is_known_key(key: str) -> bool:
    if key in known_check_keys():
        return True
    family, _, member = key.rpartition(".")
    return family in OPEN_FAMILIES and bool(member)


class Thresholds(BaseModel):
    """Overrides of the per-tier defaults. Strict: unknown fields and unknown check ids are errors."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    confidence: float | None = Field(None, gt=0.5, lt=1, description="Confidence level of the intervals.")
    resamples: int | None = Field(None, ge=200, le=100_000, description="Bootstrap resamples.")
    window: float | None = Field(None, gt=0, le=1, description="Fraction of steps in the early/late windows.")
    checks: dict[str, CheckThreshold] = Field(default_factory=dict)

    @field_validator("checks", mode="before")
    @classmethod
    def _flatten(cls, checks):
        """`{perf: {step_time: {relative: 0.1}}}` is `{perf.step_time: {relative: 0.1}}`: the nested form
        is what `canary run --set thresholds.checks.perf.step_time.relative=0.1` produces."""
        if not isinstance(checks, dict):
            return checks
        flat: dict = {}

        def walk(prefix: str, node) -> None:
            parent, _, leaf = prefix.rpartition(".")
            if isinstance(node, dict) and node:
                own = {k: v for k, v in node.items() if k in LIMIT_FIELDS or not isinstance(v, dict)}
                if own:
                    flat[prefix] = own
                for k, v in node.items():
                    if k not in own:
                        walk(f"{prefix}.{k}", v)
            elif not isinstance(node, dict) and parent and is_known_key(parent) \
                    and isinstance(flat.setdefault(parent, {}), dict):
                flat[parent][leaf] = node  # a field of a known check: let the model name it
            else:
                flat[prefix] = node

        for key, value in checks.items():
            walk(str(key), value)
        return flat

    @field_validator("checks")
    @classmethod
    def _known_keys(cls, checks: dict) -> dict:
        unknown = sorted(k for k in checks if not is_known_key(k))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known_check_keys()), n=1)
                hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise ValueError(
                f"unknown check id {', '.join(hints)}; the ids are the keys of "
                "canary_runner/compare/defaults.yaml (`canary compare --list-checks` prints them)"
            )
        return checks


# -- loading ------------------------------------------------------------------------------------------


@cache
def _defaults_raw() -> dict:
    text = resources.files("canary_runner.compare").joinpath("defaults.yaml").read_text()
    return yaml.safe_load(text) or {}


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid thresholds ({err.error_count()} problem(s)):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown field (a check takes {', '.join(LIMIT_FIELDS)}; the top level takes " \
                  f"version, confidence, resamples, window, checks)"
        elif "input" in e and e["type"] != "value_error" and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  - {field}: {msg}")
    return "\n".join(lines)


def parse_thresholds(data, source: str) -> Thresholds:
    """Validate a thresholds mapping; raises ThresholdsError naming `source`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ThresholdsError(f"{source}: expected a mapping (version, confidence, checks), got {type(data).__name__}")
    try:
        return Thresholds.model_validate(data)
    except ValidationError as e:
        raise ThresholdsError(format_validation_error(source, e)) from None


def load_thresholds(path: str | Path) -> Thresholds:
    """Read and validate a thresholds YAML file; raises ThresholdsError with a user-facing message."""
    path = Path(path)
    if not path.is_file():
        raise ThresholdsError(f"{path}: thresholds file not found. Write one with `canary calibrate` "
                              "or see canary_runner/compare/defaults.yaml for the keys.")
    from .config import load_yaml, read_text_file  # config imports this module: import here

    text = read_text_file(path, "thresholds file", ThresholdsError)
    try:
        data = load_yaml(text)  # a key given twice is an error, as in configs
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ThresholdsError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_thresholds(data, str(path))
