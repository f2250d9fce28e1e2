"""Thresholds in force for one comparison: tier defaults, then the config's inline block, then the file.

Precedence, lowest first: `defaults.yaml` `common`, its tier block, the current run's
`config.thresholds` (reviewed with the canary config), the `--thresholds FILE` (the runner's own,
e.g. from `canary calibrate`). Later sources replace earlier ones field by field; a field set to null
switches that criterion off. A check id is looked up as given, then by its family
(`perf.phase.generation` -> `perf.phase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..thresholds import Thresholds, _defaults_raw, parse_thresholds

TIERS = ("smoke", "perf", "nightly")
DEFAULTS_NAME = "canary_runner/compare/defaults.yaml"


@dataclass(frozen=True)
class Limit:
    relative: float | None = None
    absolute: float | None = None
    max: float | None = None
    min: float | None = None
    severity: str = "fail"
    enabled: bool = True


@dataclass
class Settings:
    tier: str
    confidence: float = 0.95
    resamples: int = 2000
    window: float = 0.25
    checks: dict[str, dict] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def limit(self, check_id: str) -> Limit:
        """Merged limits for a check: family first, then the specific id over it."""
        parts = check_id.split(".")
        merged: dict = {}
        for i in range(1, len(parts) + 1):
            merged.update(self.checks.get(".".join(parts[:i]), {}))
        merged = {k: v for k, v in merged.items() if not (k in ("severity", "enabled") and v is None)}
        return Limit(**merged)

    def apply(self, block: Thresholds | dict | None, source: str) -> None:
        if block is None:
            return
        if isinstance(block, dict):
            block = parse_thresholds(block, source)
        data = block.model_dump(exclude_unset=True)
        for key in ("confidence", "resamples", "window"):
            if data.get(key) is not None:
                setattr(self, key, data[key])
        for check_id, limits in block.checks.items():
            self.checks.setdefault(check_id, {}).update(limits.explicit())
        self.sources.append(source)


def resolve(tier: str, inline: Thresholds | dict | None = None, inline_source: str = "config",
            file: Thresholds | None = None, file_source: str = "file") -> Settings:
    raw = _defaults_raw()
    s = Settings(tier=tier)
    common = raw.get("common") or {}
    tier_block = (raw.get("tiers") or {}).get(tier) or {}
    for block in (common, tier_block):
        for key in ("confidence", "resamples", "window"):
            if block.get(key) is not None:
                setattr(s, key, block[key])
        for check_id, limits in (block.get("checks") or {}).items():
            s.checks.setdefault(check_id, {}).update(limits or {})
    s.sources.append(f"{DEFAULTS_NAME}#{tier}")
    s.apply(inline, inline_source)
    s.apply(file, file_source)
    return s
