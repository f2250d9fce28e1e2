"""Trains the catalog's runs once and compares each case, in parallel worker processes.

Two workers (the CI machine has 2 cores), spawned once: each imports torch/TRL once and trains runs
in-process with one intra-op thread (two OpenMP threads per run on 2 shared cores make step times
erratic), then the comparisons run in the same workers. Used by the tests' session fixture and by
benchmarks/verdict_suite.py.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .cases import CASES, TIMING_OFF, UPGRADE, Case, Run, runs

REPO = Path(__file__).resolve().parents[2]


def _init() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("CANARY_CACHE_DIR", str(REPO / ".cache" / "canary"))
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the code changes' import strings (tests.verdicts.breaks:...)
    warnings.simplefilter("ignore")
    sys.stdout = sys.stderr  # TRL's PPO prints progress; the benchmark's table owns stdout
    import torch

    torch.set_num_threads(1)
    import canary_runner.runner  # noqa: F401  (the heavy imports, once per worker)
    import trl  # noqa: F401


def train(run: Run, root: str) -> tuple[str, str, float]:
    """Train `run` into root/<key>; returns (key, run directory, seconds)."""
    from canary_runner.config import load_config
    from canary_runner.runner import run as canary_run

    from .breaks import code_change

    t0 = time.perf_counter()
    out = Path(root) / run.key
    cfg = load_config(REPO / "configs" / f"{run.config}.yaml", list(run.sets))
    callbacks, patch = code_change(run.code, run.type) if run.code else ([], None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if patch is None:
            canary_run(cfg, out, callbacks=callbacks)
        else:
            with patch:
                canary_run(cfg, out, callbacks=callbacks)
    if not (out / "metrics.json").is_file():
        raise RuntimeError(f"{run.key}: no metrics.json")
    return run.key, str(out), time.perf_counter() - t0


def edited(record: dict, variant: str | None) -> dict:
    """The current record as `variant` says: a library upgrade in env.packages, or a renamed series."""
    from canary_runner import results

    if variant is None:
        return record
    record = copy.deepcopy(record)
    if variant == "upgrade":
        record["env"].setdefault("packages", {}).update(UPGRADE)
        return record
    kind, _, spec = variant.partition(":")
    old, _, new = spec.partition("=")
    if kind in ("alias", "rename"):
        series = record["series"]
        if old not in series:
            raise KeyError(f"{variant}: the run logged no {old!r}")
        series[new] = series.pop(old)
        phases = sorted(k for k in series if k.endswith("_time_s") and k != "step_time_s")
        record["summary"] = results.summarize(series, phases)
        return record
    raise ValueError(f"unknown variant {variant!r}")


def judge(current: str, baseline: str, variant: str | None) -> dict:
    """Compare in-process (what `canary compare CURRENT BASELINE --thresholds <timing off>` does) and
    summarise: verdict, failing and warning check ids with their reasons, causes and their kinds."""
    from canary_runner import results
    from canary_runner.compare import engine
    from canary_runner.compare.loading import Run as Loaded
    from canary_runner.compare.settings import resolve
    from canary_runner.thresholds import parse_thresholds

    cur = Loaded(Path(current) / "metrics.json", edited(results.load_metrics(current), variant))
    base = Loaded(Path(baseline) / "metrics.json", results.load_metrics(baseline))
    settings = resolve(cur.info.get("tier", "smoke"), file=parse_thresholds(TIMING_OFF, "timing off"),
                       file_source="tests/verdicts timing off")
    doc = engine.compare([cur], [base], settings)
    errors = engine.validate(results.encode(doc))
    return {
        "verdict": doc["verdict"],
        "fail": [c["id"] for c in doc["checks"] if c["status"] == "fail"],
        "warn": [c["id"] for c in doc["checks"] if c["status"] == "warn"],
        "reasons": {c["id"]: c["reason"] for c in doc["checks"] if c["status"] in ("fail", "warn")},
        "kinds": [d.get("kind") for d in doc["diagnosis"]],
        "causes": [d["cause"] for d in doc["diagnosis"]],
        "schema_errors": errors[:3],
    }


def run_suite(root: str | Path, cases: list[Case] = CASES, workers: int = 2, log=None, reuse: bool = False) -> dict:
    """Train every run the cases need and compare every case. Returns
    {"results": {case name: judge summary}, "train_s": {key: seconds}, "wall_s": ...}.
    `reuse`: a run already in `root` (metrics.json) is not trained again."""
    t0 = time.perf_counter()
    todo = runs(cases)
    paths, seconds = {}, {}
    if reuse:
        kept = [r for r in todo if (Path(root) / r.key / "metrics.json").is_file()]
        paths = {r.key: str(Path(root) / r.key) for r in kept}
        todo = [r for r in todo if r.key not in paths]
    # Longest first (PPO, then GRPO/RLOO) so that the two workers finish together.
    order = {"ppo": 0, "grpo": 1, "rloo": 1}
    todo.sort(key=lambda r: order.get(r.type, 2))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init) as pool:
        for key, path, s in pool.map(train, todo, [str(root)] * len(todo)):
            paths[key], seconds[key] = path, s
        if log:
            log(f"trained {len(todo)} runs in {time.perf_counter() - t0:.0f} s")
        got = pool.map(judge, [paths[c.current.key] for c in cases], [paths[c.baseline.key] for c in cases],
                       [c.variant for c in cases])
        results = {c.name: g for c, g in zip(cases, got)}
    if log:
        log(f"compared {len(cases)} cases in {time.perf_counter() - t0:.0f} s")
    return {"results": results, "train_s": seconds, "wall_s": time.perf_counter() - t0}
