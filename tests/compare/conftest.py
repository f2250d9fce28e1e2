"""Fixtures for compare: runs trained for real (once per session, shared), and controlled records
built from per-step series (valid metrics.json files whose numbers a test chooses)."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest

from canary_runner import results
from canary_runner.cli import main as canary_main
from canary_runner.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

ENV = {
    "hardware_key": "cpu-test-2c", "python": "3.11.7", "platform": "Linux-test", "cpu_model": "Test CPU",
    "cpu_count": 2, "gpu": None, "cuda": None, "cudnn": None, "nccl": None,
    "packages": {"torch": "2.13.0+cpu", "trl": "1.12.0", "transformers": "5.24.0", "peft": "0.21.2",
                 "accelerate": "1.15.0", "datasets": "5.2.0", "tokenizers": "0.23.3", "safetensors": "0.8.0",
                 "numpy": "2.4.6", "bitsandbytes": None},
}


# -- controlled records ------------------------------------------------------------------------------


def make_record(training_type: str = "dpo", steps: int = 30, warmup: int = 5, series: dict | None = None,
                overrides: tuple = (), status: str = "completed", error: dict | None = None,
                env: dict | None = None, seed: int = 0, step_time: float = 0.02, noise: float = 0.03,
                run_id: str | None = None) -> dict:
    """A valid metrics.json record of a `training_type` embedded config with chosen per-step series.
    Defaults: step times ~N(step_time, noise x step_time), 500 tokens/step, a smoothly falling loss."""
    cfg = load_config(CONFIGS / f"{training_type}_embedded.yaml",
                      [f"train.max_steps={steps}", f"train.warmup_steps={warmup}", *overrides])
    rng = random.Random(seed)
    s = {
        "step": list(range(1, steps + 1)),
        "warmup": [i < warmup for i in range(steps)],
        "step_time_s": [step_time * (1 + noise * rng.gauss(0, 1)) for _ in range(steps)],
        "tokens": [500] * steps,
        "mem_rss_anon_mb": [340.0 + 0.1 * i for i in range(steps)],
        "loss": [0.7 * math.exp(-i / 40) for i in range(steps)],
        "grad_norm": [1.0 + 0.05 * rng.gauss(0, 1) for _ in range(steps)],
        "learning_rate": [cfg.train.learning_rate] * steps,
    }
    for k, v in (series or {}).items():
        if v is None:
            s.pop(k, None)
        else:
            s[k] = list(v)
    phases = sorted(k for k in s if k.endswith("_time_s") and k != "step_time_s")
    n_done = len(s["step"])
    return {
        "schema_version": 1, "status": status, "error": error,
        "run": {"id": run_id or f"{cfg.name}-synthetic-{seed}", "config_name": cfg.name, "config_path": None,
                "training_type": training_type, "tier": cfg.tier, "started_at": "2026-01-01T00:00:00+00:00",
                "ended_at": "2026-01-01T00:00:10+00:00", "duration_s": 10.0, "setup_s": 5.0, "train_s": 5.0,
                "git_sha": None, "steps_planned": steps, "steps_completed": n_done, "warmup_steps": warmup,
                "world_size": 1},
        "env": copy.deepcopy(env or ENV),
        "config": cfg.resolved(),
        "config_hash": cfg.hash(),
        "summary": results.summarize(s, phases),
        "series": s,
    }


def write_record(path: Path, record: dict) -> Path:
    results.validate(results.encode(record))  # a test record must be a valid metrics.json
    results.write_json_atomic(path / "metrics.json", record)
    return path


@pytest.fixture
def record_dir(tmp_path):
    """record_dir(name, **make_record kwargs) -> a run directory holding that record."""
    def build(name: str, record: dict | None = None, **kwargs) -> Path:
        rec = record if record is not None else make_record(run_id=name, **kwargs)
        return write_record(tmp_path / name, rec)
    return build


# -- running the command ---------------------------------------------------------------------------


class Result:
    def __init__(self, code: int, out: str, err: str, doc: dict | None):
        self.code, self.out, self.err, self.doc = code, out, err, doc

    def check(self, check_id: str) -> dict:
        found = [c for c in self.doc["checks"] if c["id"] == check_id]
        assert found, f"no check {check_id} in {[c['id'] for c in self.doc['checks']]}"
        return found[0]

    def status(self, check_id: str) -> str:
        return self.check(check_id)["status"]

    def failing(self) -> list[str]:
        return [c["id"] for c in self.doc["checks"] if c["status"] == "fail"]


@pytest.fixture
def compare(tmp_path, capsys):
    """compare(*args) runs `canary compare ARGS -o TMP/comparison.json` in-process."""
    counter = {"n": 0}

    def run(*args) -> Result:
        counter["n"] += 1
        out = tmp_path / f"comparison-{counter['n']}.json"
        argv = ["compare", *map(str, args)]
        if "-o" not in argv:
            argv += ["-o", str(out)]
        code = canary_main(argv)
        captured = capsys.readouterr()
        doc = None
        if out.exists():
            doc = results.decode(json.loads(out.read_text()))
            from canary_runner.compare.engine import validate

            errors = validate(json.loads(out.read_text()))
            assert not errors, f"comparison.json breaks its schema: {errors}"
        return Result(code, captured.out, captured.err, doc)

    return run


# -- real runs, trained once per session -----------------------------------------------------------


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """trained(key, config, *overrides) trains the embedded config once per session (cached by key)."""
    root = tmp_path_factory.mktemp("trained")
    cache: dict[str, Path] = {}

    def train(key: str, config: str, *overrides: str, callbacks=()) -> Path:
        if key not in cache:
            import warnings

            import torch

            from canary_runner.runner import run

            cfg = load_config(CONFIGS / f"{config}.yaml", list(overrides))
            # One intra-op thread: on a shared 2-core machine, two OpenMP threads that wait on each
            # other turn a neighbour's load into 10x step times; one thread degrades gracefully.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, _code = run(cfg, root / key, callbacks=callbacks)
            finally:
                torch.set_num_threads(threads)
            cache[key] = root / key
        return cache[key]

    return train


# Real runs that break training without a NaN, each the shortest that shows it (the shipped config with
# one change): name -> (config, overrides). Baselines: `sft-base` here, and test_real's DPO A/A runs.
DET = "train.deterministic=true"
BROKEN = {
    "sft-base": ("sft_embedded",),
    "sft-collapse": ("sft_embedded", "train.learning_rate=1e3"),  # loss 1.4e7 at step 2, then uniform output
    "sft-low-lr": ("sft_embedded", "train.learning_rate=1e-6"),  # the loss barely moves
    # With the sigmoid loss TRL 1.12 ignores label_smoothing; the aot loss at 0.5 has zero gradient.
    "dpo-no-gradient": ("dpo_embedded", DET, "dpo.loss_type=aot", "dpo.extra_args.label_smoothing=0.5"),
}


@pytest.fixture(scope="session")
def broken(trained):
    """broken(name) -> the run directory of one of the BROKEN runs (trained once per session, on first use)."""
    return lambda name: trained(name, *BROKEN[name])


@pytest.fixture(scope="session")
def dpo_stopped(trained):
    """A deterministic DPO run that crashes after step 11 of 30 (a real exception inside training)."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 11:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")

    return trained("dpo-stopped", "dpo_embedded", DET, callbacks=[StopAt()])
