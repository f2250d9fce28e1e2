"""The history index: one compact entry per main-branch commit that pushed a baseline.

Kept beside the baseline as `<config>/<hardware-key>/index.json` in every store (path:, branch:,
artifact:), so a year of history is one read. Full records (metrics.json with series) stay in
`history/` under their own, shorter retention; the index keeps the numbers trends need.

    {"version": 1, "config": "dpo_smoke", "hardware_key": "...",
     "entries": [{"sha": "<40 hex>", "parent": "<40 hex>|null", "timestamp": "<ISO 8601 UTC>",
                  "file": "history/<ts>-<sha>.json"|null, "values": {"step_time_s": 0.021, ...}}, ...],
     "acks": [{"sha": "<40 hex>", "reason": "...", "by": "login", "at": "<ISO 8601>", "metric": null}]}

Entries are oldest first. Everything read from a store is data from a branch anyone with push access
(or a fork's artifact) may have written: sizes are bounded and every field is validated on read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

INDEX_FILE = "index.json"
VERSION = 1
MAX_INDEX_BYTES = 8 * 1024 * 1024
MAX_ENTRIES = 5000
SHA = re.compile(r"^[0-9a-f]{7,64}$")
# The numbers a trend is drawn for, read from a run record's summary (None when the run lacks one).
METRICS = ("step_time_s", "tokens_per_s", "peak_memory_mb", "final_loss")
DEFAULT_KEEP = 1000
DEFAULT_MAX_AGE_DAYS = 365


class IndexError_(ValueError):
    """An index.json that is not one (bad JSON, wrong shape, too large); the message says where."""


@dataclass
class Entry:
    sha: str
    parent: str | None
    timestamp: str
    values: dict[str, float | None]
    file: str | None = None

    def to_json(self) -> dict:
        return {"sha": self.sha, "parent": self.parent, "timestamp": self.timestamp, "file": self.file,
                "values": {k: _num(v) for k, v in self.values.items()}}


@dataclass
class Ack:
    sha: str
    reason: str
    by: str = ""
    at: str = ""
    metric: str | None = None  # None: every metric's shift at this commit is intended

    def to_json(self) -> dict:
        return {"sha": self.sha, "reason": self.reason, "by": self.by, "at": self.at, "metric": self.metric}


@dataclass
class Index:
    config: str
    hardware_key: str
    entries: list[Entry] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"version": VERSION, "config": self.config, "hardware_key": self.hardware_key,
                "entries": [e.to_json() for e in self.entries], "acks": [a.to_json() for a in self.acks]}

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), separators=(",", ":")) + "\n").encode()

    def series(self, metric: str) -> list[tuple[Entry, float]]:
        """(entry, value) for the entries that have a finite value of `metric`, oldest first."""
        out = []
        for e in self.entries:
            v = e.values.get(metric)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.append((e, float(v)))
        return out

    def acked(self, sha: str, metric: str | None = None) -> Ack | None:
        return next((a for a in self.acks if sha.startswith(a.sha) or a.sha.startswith(sha)
                     if a.metric in (None, metric)), None)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def values_of(record: dict) -> dict[str, float | None]:
    """The trend numbers of one run record (metrics.json), from its summary."""
    summary = record.get("summary") or {}
    peak = summary.get("peak_memory") or {}
    device_peaks = [_num(d.get("max_allocated_mb")) for d in peak.get("devices") or [] if isinstance(d, dict)]
    device_peaks = [v for v in device_peaks if v is not None]
    return {
        "step_time_s": _num((summary.get("step_time_s") or {}).get("median")),
        "tokens_per_s": _num((summary.get("tokens_per_s") or {}).get("median")),
        "peak_memory_mb": max(device_peaks) if device_peaks else _num(peak.get("cpu_rss_anon_mb")),
        "final_loss": _num((summary.get("loss") or {}).get("final")),
    }


def entry_from_record(record: dict, *, sha: str, parent: str | None, timestamp: str | None = None,
                      file: str | None = None) -> Entry:
    if not SHA.match(sha or ""):
        raise IndexError_(f"commit {sha!r} is not a hex sha")
    if parent is not None and not SHA.match(parent):
        raise IndexError_(f"parent {parent!r} is not a hex sha")
    ts = timestamp or (record.get("run") or {}).get("ended_at") or datetime.now(timezone.utc).isoformat()
    return Entry(sha=sha, parent=parent, timestamp=ts, values=values_of(record), file=file)


def new(config: str, hardware_key: str) -> Index:
    return Index(config=config, hardware_key=hardware_key)


def parse(raw: bytes, origin: str) -> Index:
    """An index read from a store. Malformed entries are an error naming `origin`, never guessed at."""
    if len(raw) > MAX_INDEX_BYTES:
        raise IndexError_(f"{origin} is {len(raw)} bytes; an index may be at most {MAX_INDEX_BYTES}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise IndexError_(f"{origin} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise IndexError_(f"{origin} is not a version-{VERSION} history index")
    entries, acks = data.get("entries"), data.get("acks", [])
    if not isinstance(entries, list) or not isinstance(acks, list) or len(entries) > MAX_ENTRIES:
        raise IndexError_(f"{origin}: entries and acks must be lists (at most {MAX_ENTRIES} entries)")
    out = Index(config=str(data.get("config", "")), hardware_key=str(data.get("hardware_key", "")))
    for i, e in enumerate(entries):
        try:
            sha, parent, ts = e["sha"], e.get("parent"), e["timestamp"]
            if not (isinstance(sha, str) and SHA.match(sha)) or (parent is not None and not (
                    isinstance(parent, str) and SHA.match(parent))):
                raise ValueError("bad sha")
            datetime.fromisoformat(str(ts))
            file = e.get("file")
            if file is not None and (not isinstance(file, str) or ".." in file or file.startswith("/")):
                raise ValueError("bad file")
            values = {k: _num(v) for k, v in (e.get("values") or {}).items() if k in METRICS}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IndexError_(f"{origin}: entry {i} is malformed ({exc})") from None
        out.entries.append(Entry(sha=sha, parent=parent, timestamp=str(ts), values=values, file=file))
    for i, a in enumerate(acks):
        if not (isinstance(a, dict) and isinstance(a.get("sha"), str) and SHA.match(a["sha"])):
            raise IndexError_(f"{origin}: ack {i} is malformed")
        out.acks.append(Ack(sha=a["sha"], reason=str(a.get("reason", ""))[:500], by=str(a.get("by", ""))[:100],
                            at=str(a.get("at", ""))[:40], metric=a.get("metric") if a.get("metric") in METRICS else None))
    return out


def append(index: Index, entry: Entry, *, keep: int = DEFAULT_KEEP, max_age_days: float = DEFAULT_MAX_AGE_DAYS,
           now: datetime | None = None) -> list[Entry]:
    """Add `entry` (replacing an entry of the same commit), then apply the retention policy: at most
    `keep` entries, none older than `max_age_days`. Returns the entries dropped."""
    index.entries = [e for e in index.entries if e.sha != entry.sha] + [entry]
    index.entries.sort(key=lambda e: _when(e.timestamp))
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=max_age_days)
    kept = [e for e in index.entries if _when(e.timestamp) >= cutoff][-keep:]
    kept_ids = {id(e) for e in kept}
    dropped = [e for e in index.entries if id(e) not in kept_ids]
    index.entries = kept
    return dropped


def _when(ts: str) -> datetime:
    t = datetime.fromisoformat(ts)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
