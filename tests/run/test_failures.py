"""A run that fails still leaves its record: status, the steps done, the error, and exit code 3."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import TrainerCallback

from canary_runner import results
from canary_runner.config import load_config
from canary_runner.runner import run


class RaiseAt(TrainerCallback):
    """Fault injection: raise `exc` when step `step` ends."""

    def __init__(self, step, exc):
        self.step, self.exc = step, exc

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.exc


class SleepAt(TrainerCallback):
    def __init__(self, step, seconds):
        self.step, self.seconds = step, seconds

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            time.sleep(self.seconds)


def assert_preserved(out_dir, status, steps):
    raw = json.loads((out_dir / "metrics.json").read_text())
    results.validate(raw)
    rec = results.load_metrics(out_dir)
    assert rec["status"] == status
    assert rec["run"]["steps_completed"] == steps == len(rec["series"]["step"])
    lines = (out_dir / "steps.jsonl").read_text().splitlines()
    assert len(lines) == steps
    assert rec["error"]["step"] == (steps or None)
    return rec


@pytest.mark.parametrize("training_type", ["sft", "ppo"])
def test_exception_mid_run(tmp_path, configs_dir, training_type):
    cfg = load_config(configs_dir / f"{training_type}_embedded.yaml", ["train.max_steps=10", "train.warmup_steps=1"])
    rec, code = run(cfg, tmp_path, callbacks=[RaiseAt(4, RuntimeError("boom at four"))])
    assert code == 3
    rec = assert_preserved(tmp_path, "crashed", 4)
    assert rec["error"]["type"] == "RuntimeError" and rec["error"]["message"] == "boom at four"
    assert "Traceback" in rec["error"]["traceback"]
    assert rec["summary"]["step_time_s"]["count"] == 3  # steps after warmup are summarised


class SignalledWhileFormatted(RuntimeError):
    """A crash during whose handling SIGTERM arrives, as when torchrun stops the surviving ranks
    after one died: the signal lands while the runner formats this error."""

    def __str__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        return "peer rank died"


def test_a_signal_while_a_crash_is_handled_keeps_the_record(tmp_path, configs_dir):
    cfg = load_config(configs_dir / "sft_embedded.yaml", ["train.max_steps=10", "train.warmup_steps=1"])
    rec, code = run(cfg, tmp_path, callbacks=[RaiseAt(3, SignalledWhileFormatted())])
    assert code == 3
    rec = assert_preserved(tmp_path, "crashed", 3)
    assert rec["error"]["type"] == "SignalledWhileFormatted" and rec["error"]["message"] == "peer rank died"


def test_out_of_memory_mid_run(tmp_path, configs_dir):
    # No GPU here: the OOM is raised by a callback, as torch raises it from inside a CUDA step.
    cfg = load_config(configs_dir / "dpo_embedded.yaml", ["train.max_steps=10", "train.warmup_steps=1"])
    rec, code = run(cfg, tmp_path, callbacks=[RaiseAt(3, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))])
    assert code == 3
    rec = assert_preserved(tmp_path, "crashed", 3)
    assert rec["error"]["type"] == "OutOfMemoryError" and "Tried to allocate" in rec["error"]["message"]


@pytest.mark.parametrize("training_type", ["dpo", "ppo"])
def test_timeout(tmp_path, configs_dir, training_type):
    # PPO's loop ignores should_training_stop, so it is stopped by an exception one step later.
    cfg = load_config(configs_dir / f"{training_type}_embedded.yaml",
                      ["train.max_steps=40", "train.warmup_steps=1", "train.timeout_s=1"])
    rec, code = run(cfg, tmp_path, callbacks=[SleepAt(2, 1.2)])
    assert code == 3
    rec = results.load_metrics(tmp_path)
    assert rec["status"] == "timeout" and rec["error"]["type"] == "Timeout"
    assert 1 <= rec["run"]["steps_completed"] < 40


def test_sigterm_mid_run(tmp_path, configs_dir):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "canary_runner.cli", "run", str(configs_dir / "sft_embedded.yaml"), "-o", str(out),
         "--no-progress", "--set", "train.max_steps=100000", "--set", "train.warmup_steps=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    steps = out / "steps.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if steps.exists() and len(steps.read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    rec = results.load_metrics(out)
    assert rec["status"] == "interrupted" and "SIGTERM" in rec["error"]["message"]
    n = rec["run"]["steps_completed"]
    assert n >= 5 and rec["series"]["step"] == list(range(1, n + 1))
    assert len(steps.read_text().splitlines()) == n
    assert "interrupted" in stdout and str(out / "metrics.json") in stdout


def test_nan_is_recorded_not_hidden(tmp_path, configs_dir):
    cfg = load_config(configs_dir / "sft_embedded.yaml", ["train.max_steps=6", "train.warmup_steps=1",
                                                          "train.learning_rate=1e20", "train.max_grad_norm=null"])
    rec, code = run(cfg, tmp_path)
    assert code == 0  # a NaN is a verdict for compare, not a crash
    rec = results.load_metrics(tmp_path)
    nan = rec["summary"]["nan_inf"]
    assert nan["total"] > 0 and nan["first_step"] is not None
    assert any(isinstance(v, float) and v != v for v in rec["series"]["loss"])
    assert '"NaN"' in (tmp_path / "metrics.json").read_text()  # valid JSON, round-trips
