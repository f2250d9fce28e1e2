"""Runs from paths: metrics.json files, run directories, or directories of repeats.

A side (current or baseline) is one or several runs of one config. Every problem with the inputs is
a `CompareInputError` whose message says what is wrong and what to pass instead (exit code 2).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..results import MetricsFileError, load_metrics

STATUS_ORDER = ("completed", "interrupted", "timeout", "crashed")  # worst last
# Config fields that change what a run is compared against, not what it computes.
NON_TRAINING_CONFIG = ("thresholds", "description", "heldout", "equivalence")  # evaluations beside training, not of it


# Metrics TRL / transformers log under another name in other versions (or in another trainer of the
# same family): canonical name -> the other names, per training type ("*": every type). A run that
# logged only another name is read under the canonical one, so a library upgrade does not turn a
# check into a silent skip. Each was seen in TRL's sources: `lr` (PPO's loop) vs `learning_rate`
# (the HF Trainer); `completion_length` and `zero_std_ratio` (GRPO before the `completions/*` and
# `frac_reward_zero_std` names); `clip_ratio` (GRPO's Liger loss and older GRPO); `objective/kl`
# (PPO, online DPO) vs `kl` (GRPO, RLOO).
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "*": {"learning_rate": ("lr",)},
    "ppo": {"objective/kl": ("kl",), "policy/entropy_avg": ("entropy",)},
    "grpo": {"kl": ("objective/kl",), "completions/mean_length": ("completion_length",),
             "clip_ratio/region_mean": ("clip_ratio",), "frac_reward_zero_std": ("zero_std_ratio",)},
}
ALIASES["rloo"] = ALIASES["grpo"]


def canonical_series(training_type: str, series: dict) -> dict[str, str]:
    """Rename, in place, the series logged under another name (ALIASES) to the canonical one;
    returns {canonical: the name it was logged under}."""
    renamed = {}
    for table in (ALIASES["*"], ALIASES.get(training_type, {})):
        for name, others in table.items():
            if name in series:
                continue
            other = next((o for o in others if o in series), None)
            if other is not None:
                series[name] = series.pop(other)
                renamed[name] = other
    return renamed


class CompareInputError(Exception):
    """Inputs compare cannot use: missing, corrupt, unsupported schema, or incompatible runs."""


@dataclass
class Run:
    path: Path
    record: dict = field(repr=False)
    renamed: dict = field(default_factory=dict)  # canonical metric -> the name this run logged it under

    def __post_init__(self):
        if isinstance(self.record.get("series"), dict) and isinstance(self.record.get("run"), dict):
            self.renamed = canonical_series(self.record["run"].get("training_type", ""), self.record["series"])

    @property
    def id(self) -> str:
        return self.record["run"]["id"]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def error(self) -> dict | None:
        return self.record.get("error")

    @property
    def info(self) -> dict:
        return self.record["run"]

    @property
    def training_type(self) -> str:
        return self.record["run"]["training_type"]

    @property
    def config(self) -> dict:
        return self.record.get("config") or {}

    @property
    def env(self) -> dict:
        return self.record.get("env") or {}

    @property
    def series(self) -> dict:
        return self.record["series"]

    @property
    def summary(self) -> dict:
        return self.record["summary"]

    @property
    def steps(self) -> list[int]:
        return self.series["step"]

    @cached_property
    def training_hash(self) -> str:
        """The config hash without the fields that do not change the training (thresholds, description)."""
        cfg = {k: v for k, v in self.config.items() if k not in NON_TRAINING_CONFIG}
        canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def points(self, name: str, after_warmup: bool = False) -> list[tuple[int, float]]:
        """(step, value) where `name` was logged (NaN/Inf kept)."""
        values = self.series.get(name)
        if values is None:
            return []
        warm = self.series.get("warmup") or [False] * len(values)
        return [(s, float(v)) for s, v, w in zip(self.steps, values, warm)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not (after_warmup and w)]

    def finite_points(self, name: str, after_warmup: bool = False) -> list[tuple[int, float]]:
        return [(s, v) for s, v in self.points(name, after_warmup) if math.isfinite(v)]

    def steady(self, name: str) -> list[float]:
        """Finite values of a series at the steps after warmup."""
        return [v for _, v in self.finite_points(name, after_warmup=True)]

    def tokens_per_s(self) -> list[float]:
        out = []
        for t, s, w in zip(self.series.get("tokens", []), self.series["step_time_s"], self.series["warmup"]):
            if w or not isinstance(t, (int, float)) or not isinstance(s, (int, float)) or not s or s <= 0:
                continue
            if t > 0:
                out.append(t / s)
        return out

    def setting(self, dotted: str, default=None):
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


STEPS_FILE = "steps.jsonl"


def _refuse_killed(run_dir: Path) -> None:
    """A run directory with the streamed steps but no metrics.json: the process was killed (SIGKILL,
    the OOM killer, a lost machine) before it could write its record. Say so, with where the steps are."""
    last, count = None, 0
    try:
        with open(run_dir / STEPS_FILE, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    step = json.loads(line).get("step")
                except (ValueError, AttributeError):
                    continue  # the line being written when the process died
                count += 1
                last = step if isinstance(step, int) else last
    except OSError:
        pass
    at = f"at step {last}" if last is not None else f"after {count} step(s)" if count else "before its first step"
    raise CompareInputError(
        f"{run_dir}: the run was killed {at} (its process ended without writing metrics.json); its steps "
        f"are in {run_dir / STEPS_FILE}. Re-run the canary; a run stopped by SIGTERM or a timeout still "
        "writes metrics.json, a killed one (SIGKILL, out of memory) cannot.")


def _expand(path: Path) -> list[Path]:
    """A metrics.json, a run directory, or a directory whose subdirectories are runs (repeats)."""
    if path.is_file() and path.name == STEPS_FILE:
        _refuse_killed(path.parent)
    if path.is_file():
        return [path]
    if path.is_dir():
        if (path / "metrics.json").is_file():
            return [path / "metrics.json"]
        if (path / STEPS_FILE).is_file():
            _refuse_killed(path)
        found = sorted(p / "metrics.json" for p in path.iterdir() if (p / "metrics.json").is_file())
        for sub in sorted(path.iterdir()):  # a killed repeat is not silently left out of the statistics
            if (sub / STEPS_FILE).is_file() and not (sub / "metrics.json").is_file():
                _refuse_killed(sub)
        if found:
            return found
        raise CompareInputError(
            f"{path}: no metrics.json in this directory or its subdirectories. Pass a metrics.json, the "
            "directory of a `canary run -o DIR`, or a directory holding several such run directories.")
    raise CompareInputError(f"{path}: no such file or directory. Pass a metrics.json or a run directory.")


def load_side(paths: list[str | Path], role: str) -> list[Run]:
    """Load every run of one side; raise CompareInputError for anything unusable."""
    runs: list[Run] = []
    for raw in paths:
        for file in _expand(Path(raw)):
            try:
                runs.append(Run(file, load_metrics(file)))
            except MetricsFileError as e:
                raise CompareInputError(f"{role} run: {e}") from None
    if not runs:
        raise CompareInputError(f"no {role} run given")
    if role == "baseline":
        for r in runs:
            if r.status == "completed" and not r.steps:
                raise CompareInputError(f"baseline run {r.path}: completed without recording a single step, so it "
                                        "is not a valid baseline; regenerate the baseline from a run that trained")
    ids = [r.id for r in runs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise CompareInputError(f"{role} runs: {dup} given more than once; each repeat must be a separate run")
    types = sorted({r.training_type for r in runs})
    if len(types) > 1:
        raise CompareInputError(f"{role} runs mix training types {types}: repeats must be runs of one config")
    hashes = sorted({r.training_hash for r in runs})
    if len(hashes) > 1:
        names = sorted({r.info["config_name"] for r in runs})
        raise CompareInputError(
            f"{role} runs are not repeats of one config ({len(hashes)} different configs among {names}): "
            "compare repeats of the same config, or pass the runs one comparison at a time")
    return runs


def check_compatible(current: list[Run], baseline: list[Run]) -> None:
    cur, base = current[0].training_type, baseline[0].training_type
    if cur != base:
        raise CompareInputError(
            f"the current run is {cur} ({current[0].info['config_name']}) but the baseline is {base} "
            f"({baseline[0].info['config_name']}): a baseline must be a run of the same canary config")


def worst_status(runs: list[Run]) -> str:
    return max((r.status for r in runs), key=STATUS_ORDER.index)


def usable_baselines(current: Path, baselines: list[Path]) -> tuple[list[Path], list[str]]:
    """The baseline files compare can use with the `current` run, and why each other one cannot.

    A baseline comes from somewhere else (a branch, an artifact, a cache) and may be of a newer
    schema, corrupt, of another training type or of a run that never trained: that means comparing
    without it (and saying why), never failing the run under test. Runs of the baseline side must be
    repeats of one config, so a run that is not a repeat of the first usable one is left out too."""
    try:
        cur = load_side([current], "current")
    except CompareInputError:
        return list(baselines), []  # the current run's own problem: compare reports it
    kept: list[Run] = []
    problems: list[str] = []
    for path in baselines:
        try:
            run = load_side([path], "baseline")[0]
            check_compatible(cur, [run])
        except CompareInputError as e:
            problems.append(str(e))
            continue
        if kept and (run.training_hash != kept[0].training_hash or run.id in {k.id for k in kept}):
            problems.append(f"baseline run {path}: not a repeat of the baseline {kept[0].path} (another config "
                            "or the same run again)")
            continue
        kept.append(run)
    return [r.path for r in kept], problems
