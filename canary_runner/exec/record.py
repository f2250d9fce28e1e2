"""metrics.json of a `canary exec` run, built from what its processes streamed.

The same schema as `canary run`: the steps come from `steps.jsonl`, the training type, arguments and
environment from the `trainer.json` the hook wrote next to them, and status and error from how the
command ended (the launcher's `Outcome`). Several ranks get one record each under
`ranks/rank<N>/`, merged by `canary_runner.distributed.merge` exactly as `canary run` merges them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import results
from ..distributed import STATUS_ORDER, merge
from .attach import suffix


@dataclass
class Launch:
    """What the launcher knows of the run, independent of what the processes recorded."""

    command: list[str]
    name: str
    tier: str
    warmup_steps: int
    max_steps: int | None
    started_at: float  # time.time() at launch
    ended_at: float = 0.0
    git_sha: str | None = None


@dataclass
class Outcome:
    status: str  # completed | crashed | timeout | interrupted
    error: dict | None = None
    returncode: int | None = None
    notes: list[str] = field(default_factory=list)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def read_steps(path: Path) -> list[dict]:
    """The streamed step records (a line cut short by a killed process ends the list)."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(results.decode(json.loads(line)))
            except json.JSONDecodeError:
                break
    return records


def read_info(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info or None  # `{}` is a claim whose details were never written


def pick_trainer(d: Path) -> tuple[list[dict], dict | None]:
    """Steps and info of the first Trainer of a process directory that trained (else the first)."""
    first = None
    for index in range(1, 1000):
        info_path = d / f"trainer{suffix(index)}.json"
        if not info_path.is_file():
            break
        steps = read_steps(d / f"steps{suffix(index)}.jsonl")
        if steps:
            return steps, read_info(info_path)
        if first is None:
            first = ([], read_info(info_path))
    return first or (read_steps(d / "steps.jsonl"), None)


def script_of(command: list[str]) -> str | None:
    """The user's script in a command line (`python train.py`, `torchrun ... train.py`), if any."""
    for i, arg in enumerate(command):
        if arg.endswith(".py") and i > 0:
            return arg
        if arg == "-m" and i + 1 < len(command) and not command[i + 1].startswith("torch.distributed"):
            return f"-m {command[i + 1]}"
    return None


def launcher_of(command: list[str]) -> str:
    """torchrun (also as `python -m torch.distributed.run`), accelerate, deepspeed ..., else the program."""
    program = Path(command[0]).name
    if program == "torchrun" or "torch.distributed.run" in command or "torch.distributed.launch" in command:
        return "torchrun"
    return program


def config_of(launch: Launch, info: dict | None) -> dict:
    """The record's config: the command line and what the Trainer was told, under `exec` (the rest
    of the keys are those of a canary config that compare reads: seed, train.deterministic). Paths
    that differ between two runs of one command (output_dir ...) are left out: they stay comparable."""
    info = info or {}
    args = info.get("training_args") or {}
    return {
        "name": launch.name,
        "training_type": info.get("training_type", "custom"),
        "seed": args.get("seed"),
        # Where compare looks for the run's determinism (its deterministic-replay check).
        "train": {"deterministic": bool(args.get("full_determinism", False))},
        "exec": {
            "command": list(launch.command),
            "trainer": info.get("trainer_class"),
            "max_steps_cap": launch.max_steps,
            "warmup_steps": launch.warmup_steps,
            "training_args": args,
        },
    }


def _hash(config: dict) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _env(info: dict | None) -> dict:
    """The environment the script ran in (its own fingerprint), or this process's when it recorded none."""
    if info and info.get("env"):
        return info["env"]
    from ..collect.env import fingerprint

    return fingerprint()


def process_record(steps: list[dict], info: dict | None, launch: Launch, outcome: Outcome) -> dict:
    info = info or {}
    series = results.to_series(steps)
    phases = sorted(k for k in series if k.endswith("_time_s") and k != "step_time_s")
    error = None
    if outcome.error is not None:
        error = {"traceback": None, **outcome.error, "step": steps[-1]["step"] if steps else None}
    train_t0 = info.get("train_started_at")
    planned = info.get("steps_planned") or info.get("max_steps")
    if not isinstance(planned, int) or planned <= 0:
        planned = launch.max_steps or len(steps)
    config = config_of(launch, info)
    return {
        "schema_version": results.SCHEMA_VERSION,
        "status": outcome.status,
        "error": error,
        "run": {
            "id": f"{launch.name}-{datetime.fromtimestamp(launch.started_at, timezone.utc):%Y%m%dT%H%M%SZ}"
                  f"-{uuid.uuid4().hex[:6]}",
            "config_name": launch.name,
            "config_path": script_of(launch.command),
            "training_type": config["training_type"],
            "tier": launch.tier,
            "started_at": _iso(launch.started_at),
            "ended_at": _iso(launch.ended_at),
            "duration_s": max(0.0, launch.ended_at - launch.started_at),
            "setup_s": (train_t0 - launch.started_at) if train_t0 else None,
            "train_s": max(0.0, launch.ended_at - train_t0) if train_t0 else None,
            "git_sha": launch.git_sha,
            "steps_planned": planned,
            "steps_completed": len(steps),
            "warmup_steps": launch.warmup_steps,
            "world_size": int(info.get("world_size", 1)),
        },
        "env": _env(info),
        "config": config,
        "config_hash": _hash(config),
        "summary": results.summarize(series, phases),
        "series": series,
    }


def rank_dirs(out_dir: Path) -> dict[int, Path]:
    ranks = Path(out_dir) / "ranks"
    found = {}
    if ranks.is_dir():
        for d in ranks.iterdir():
            if d.is_dir() and d.name.startswith("rank") and d.name[4:].isdigit():
                found[int(d.name[4:])] = d
    return found


def build(out_dir: Path, launch: Launch, outcome: Outcome) -> dict:
    """The run's record (not yet written): one process's, or every rank's merged."""
    out_dir = Path(out_dir)
    ranks = rank_dirs(out_dir)
    if not ranks:
        steps, info = pick_trainer(out_dir)
        return process_record(steps, info, launch, outcome)

    infos = {}
    for r, d in sorted(ranks.items()):
        steps, info = pick_trainer(d)
        infos[r] = info
        results.write_json_atomic(d / "metrics.json", process_record(steps, info, launch, outcome))
    world = max([r + 1 for r in ranks] + [int(i.get("world_size", 1)) for i in infos.values() if i])
    base = next((i for _, i in sorted(infos.items()) if i), {})
    record = merge(out_dir, world, base.get("strategy", "ddp"), outcome.returncode or 0)
    record["run"]["distributed"]["launcher"] = launcher_of(launch.command)
    # The launcher saw how the command ended; a rank that never recorded makes it worse, not better.
    record["status"] = max(record["status"], outcome.status, key=STATUS_ORDER.index)
    if outcome.error is not None:
        steps = record["series"]["step"]
        record["error"] = {"traceback": None, **outcome.error, "step": steps[-1] if steps else None}
    return record
