"""No traceback and no lost record when the run cannot go where it was asked, or is stopped roughly:
`-o` is a file, on a read-only file system or a full disk; two signals in quick succession; SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from canary_runner import results
from canary_runner.cli import main

SHORT = ["--no-progress", "--set", "train.max_steps=3", "--set", "train.warmup_steps=1"]


@pytest.fixture
def fallback_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runner-temp"
    root.mkdir()
    monkeypatch.setenv("RUNNER_TEMP", str(root))  # where a run goes when -o cannot be written
    return root


def only_fallback(root: Path) -> Path:
    dirs = list(root.iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_clear_exit_3(capsys, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err and "canary: error:" in err
    for f in fragments:
        assert f in err, err
    return err


def test_output_that_is_a_file_keeps_the_record_elsewhere(tmp_path, capsys, configs_dir, fallback_root):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    code = main(["run", str(configs_dir / "sft_embedded.yaml"), "-o", str(target), *SHORT])
    where = only_fallback(fallback_root)
    assert_clear_exit_3(capsys, code, str(target), "cannot be written", str(where))
    rec = results.load_metrics(where)
    assert rec["status"] == "completed" and rec["run"]["steps_completed"] == 3
    assert len((where / "steps.jsonl").read_text().splitlines()) == 3
    assert target.read_text() == "not a directory"


@pytest.mark.skipif(not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and os.geteuid() != 0,
                    reason="needs a read-only file system (/sys on Linux)")
def test_output_on_a_read_only_file_system(capsys, configs_dir, fallback_root):
    # /sys refuses new files even to root: a read-only disk that this (root) test can reach.
    target = Path("/sys/canary-test-run")
    if os.access("/sys", os.W_OK) and not target.parent.exists():
        pytest.skip("/sys is writable here")
    code = main(["run", str(configs_dir / "sft_embedded.yaml"), "-o", str(target), *SHORT])
    where = only_fallback(fallback_root)
    assert_clear_exit_3(capsys, code, str(target), str(where))
    assert results.load_metrics(where)["status"] == "completed"


def test_a_full_disk_mid_run_keeps_the_steps_done(tmp_path, capsys, configs_dir, fallback_root):
    # A full disk, as far as this run can tell: the step stream is /dev/full (every write: ENOSPC), and
    # metrics.json cannot be replaced (a directory stands in its place).
    out = tmp_path / "run"
    out.mkdir()
    (out / "steps.jsonl").symlink_to("/dev/full")
    (out / "metrics.json").mkdir()
    code = main(["run", str(configs_dir / "sft_embedded.yaml"), "-o", str(out), *SHORT])
    where = only_fallback(fallback_root)
    assert_clear_exit_3(capsys, code, "metrics.json cannot be written", str(where))
    rec = results.load_metrics(where)
    assert rec["status"] == "crashed" and "No space left on device" in rec["error"]["message"]
    n = rec["run"]["steps_completed"]
    assert n >= 1 and len((where / "steps.jsonl").read_text().splitlines()) == n


def start_run(out: Path, configs_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "canary_runner.cli", "run", str(configs_dir / "sft_embedded.yaml"), "-o", str(out),
         "--no-progress", "--set", "train.max_steps=100000", "--set", "train.warmup_steps=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    steps = out / "steps.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if steps.exists() and len(steps.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    return proc


def test_two_signals_in_quick_succession_still_write_the_record(tmp_path, configs_dir):
    out = tmp_path / "run"
    proc = start_run(out, configs_dir)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # e.g. a runner's cancel, then a second one while the record is written
    for _ in range(3):
        time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    rec = results.load_metrics(out)
    assert rec["status"] == "interrupted"
    assert len((out / "steps.jsonl").read_text().splitlines()) == rec["run"]["steps_completed"]


def test_compare_recognises_a_killed_run(tmp_path, configs_dir, capsys):
    out = tmp_path / "killed"
    proc = start_run(out, configs_dir)
    proc.kill()  # SIGKILL: no handler runs, no metrics.json
    proc.communicate(timeout=60)
    assert not (out / "metrics.json").exists()
    last = results.decode(__import__("json").loads((out / "steps.jsonl").read_text().splitlines()[-1]))["step"]
    for target in (out, tmp_path):  # the run directory, and a directory of repeats holding it
        assert main(["compare", str(target), "--no-baseline", "-o", str(tmp_path / "c.json")]) == 2
        err = capsys.readouterr().err
        assert f"the run was killed at step {last}" in err and str(out / "steps.jsonl") in err
        assert "Traceback" not in err


def test_distributed_run_into_a_file_is_a_usage_error(tmp_path):
    """torchrun is never started when its output folder cannot be made: exit 2, the path named."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "canary_runner.cli", "run", "sft_embedded", "--no-progress",
                           "--set", "distributed.nproc_per_node=2", "-o", str(blocker / "run")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{blocker / 'run'} cannot be written (Not a directory); pass a writable -o" in proc.stderr
    assert "Traceback" not in proc.stderr
