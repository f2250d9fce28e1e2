"""Synthetic histories for the trend page, ack and notification tests: a known step in step time."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from canary_runner.history import index as ix

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
HW = "cpu-x86_64-test"


def sha_of(config: str, i: int) -> str:
    return hashlib.sha1(f"{config}/{i}".encode()).hexdigest()


def history(config: str, n: int, *, step_at: int | None = None, seed: int = 0, missing: dict | None = None) -> ix.Index:
    """`n` commits; step time +10% from commit `step_at` on (noise 1%); `missing` = {metric: {i, ...}} left out."""
    rng = random.Random(seed)
    idx = ix.new(config, HW)
    parent = None
    for i in range(n):
        step = 0.02 * (1.10 if step_at is not None and i >= step_at else 1.0) * (1 + rng.gauss(0, 0.01))
        values = {"step_time_s": step, "tokens_per_s": 512 / step, "peak_memory_mb": 900.0 + rng.random(),
                  "final_loss": 2.0 + rng.gauss(0, 0.02)}
        for metric, gone in (missing or {}).items():
            if i in gone:
                values[metric] = None
        # Oldest first, as index.append keeps them (appended directly: append's retention pass is quadratic).
        idx.entries.append(ix.Entry(sha=sha_of(config, i), parent=parent,
                                    timestamp=(T0 + timedelta(hours=i)).isoformat(), values=values))
        parent = sha_of(config, i)
    return idx


def write_store(root: Path, *indexes: ix.Index) -> Path:
    """A path: store: `<root>/<config>/<hw>/index.json`."""
    for idx in indexes:
        d = root / idx.config / idx.hardware_key
        d.mkdir(parents=True, exist_ok=True)
        (d / ix.INDEX_FILE).write_bytes(idx.dumps())
    return root
