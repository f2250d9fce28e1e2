"""`canary exec`: an unmodified script's Trainer instrumented, and a record however the command ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from canary_runner import results
from canary_runner.cli import main
from canary_runner.exec import launch, record

from .conftest import PY, TRAIN, canary_exec


def read_lines(path):
    return path.read_text().splitlines() if path.exists() else []


# -- a completed run, capped, and compared -----------------------------------------------------------


def test_a_completed_run_writes_the_record_of_canary_run(capped_runs):
    run = capped_runs[0]
    assert run.code == 0, run.stderr
    results.validate(run.raw)  # the schema of `canary run`
    rec = run.record
    assert rec["status"] == "completed" and rec["error"] is None
    info = rec["run"]
    assert info["training_type"] == "sft" and info["config_name"] == "train_sft"
    assert info["config_path"] == str(TRAIN) and info["world_size"] == 1
    assert info["setup_s"] > 0 and info["train_s"] > 0
    s = rec["series"]
    assert s["step"] == [1, 2, 3, 4, 5, 6] and s["warmup"] == [True, True] + [False] * 4
    assert all(t > 0 for t in s["step_time_s"]) and all(n > 0 for n in s["tokens"])
    assert all(isinstance(v, float) for v in s["loss"]) and "mean_token_accuracy" in s
    assert rec["summary"]["step_time_s"]["count"] == 4 and rec["summary"]["loss"]["final"] is not None
    assert len(read_lines(run.out / "steps.jsonl")) == 6
    # The config: the command line and what the Trainer was told, nothing that differs run to run.
    cfg = rec["config"]["exec"]
    assert rec["config"]["seed"] == 7 and rec["config"]["train"] == {"deterministic": False}
    assert cfg["command"] == [PY, str(TRAIN), "--steps", "40"]
    assert cfg["trainer"] == "trl.trainer.sft_trainer.SFTTrainer"
    assert cfg["training_args"]["learning_rate"] == 1e-3 and "output_dir" not in cfg["training_args"]
    assert rec["env"]["packages"]["trl"] and rec["env"]["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert "train_sft (sft, smoke): completed" in run.stdout
    assert "user script done: 6 steps" in run.stdout  # the script's own output passes through


def test_max_steps_caps_the_script_s_own(capped_runs):
    run = capped_runs[0]
    rec = run.record
    assert rec["run"]["steps_planned"] == rec["run"]["steps_completed"] == 6
    assert rec["config"]["exec"]["max_steps_cap"] == 6 and rec["config"]["exec"]["training_args"]["max_steps"] == 6
    info = json.loads((run.out / "trainer.json").read_text())
    assert info["max_steps_capped_from"] == 40


def test_compare_two_exec_runs(capped_runs, tmp_path, capsys):
    a, b = capped_runs
    assert a.record["config_hash"] == b.record["config_hash"]
    out = tmp_path / "comparison.json"
    code = main(["compare", str(a.out), str(b.out), "-o", str(out)])
    capsys.readouterr()
    doc = json.loads(out.read_text())
    checks = {c["id"]: c for c in doc["checks"]}
    assert checks["run.config"]["status"] == "pass", checks["run.config"]["reason"]
    assert checks["correctness.loss_curve"]["status"] == "pass", checks["correctness.loss_curve"]["reason"]
    assert checks["perf.step_time"]["n_current"] == 4, checks["perf.step_time"]
    # Other jobs share this machine: only timing may differ between two runs of one command.
    failing = [c["id"] for c in doc["checks"] if c["status"] == "fail" and c["category"] != "performance"]
    assert not failing, failing
    if not any(c["status"] == "fail" for c in doc["checks"]):
        assert code == 0 and doc["verdict"] in ("pass", "warn")


# -- runs that do not complete -------------------------------------------------------------------------


def test_a_script_that_raises_is_crashed_with_its_steps_and_its_stderr(tmp_path):
    run = canary_exec(tmp_path / "run", "--", PY, str(TRAIN), "--steps", "10", "--raise-at", "3")
    assert run.code == 3
    results.validate(run.raw)
    rec = run.record
    assert rec["status"] == "crashed"
    assert rec["series"]["step"] == [1, 2] and rec["run"]["steps_completed"] == 2
    assert len(read_lines(run.out / "steps.jsonl")) == 2
    err = rec["error"]
    assert err["type"] == "RuntimeError" and err["step"] == 2
    first, *tail = err["message"].splitlines()
    assert first == "the command failed (exit code 1): RuntimeError: boom at step 3"
    assert tail[-1] == "RuntimeError: boom at step 3"  # the last lines of the script's stderr
    assert err["traceback"].startswith("Traceback (most recent call last)") and "on_step_end" in err["traceback"]
    assert "Traceback (most recent call last)" in run.stderr  # passed through as it came


def test_sigterm_interrupts_the_run_and_keeps_its_steps(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([PY, "-m", "canary_runner.cli", "exec", "-o", str(out), "--warmup-steps", "1", "--",
                             PY, str(TRAIN), "--plain", "--steps", "100000", "--sleep", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps = out / "steps.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and len(read_lines(steps)) < 3:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    rec = results.load_metrics(out)
    assert rec["status"] == "interrupted" and rec["error"]["message"] == "received SIGTERM"
    n = rec["run"]["steps_completed"]
    assert n >= 3 and rec["series"]["step"] == list(range(1, n + 1))
    assert len(read_lines(steps)) == n  # the step in progress at SIGTERM was flushed, none lost
    # A plain transformers Trainer: a custom training type, the loss still recorded.
    assert rec["run"]["training_type"] == "custom" and rec["config"]["exec"]["trainer"] == "transformers.trainer.Trainer"
    assert all(isinstance(v, float) for v in rec["series"]["loss"])
    assert all(n > 0 for n in rec["series"]["tokens"])  # its collator's batches are BatchEncodings
    assert "interrupted" in stdout
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_timeout_stops_the_command_and_everything_it_started(tmp_path):
    # A command that starts a grandchild and sleeps: the timeout must end both.
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            "print(p.pid, flush=True); time.sleep(120)")
    proc = subprocess.run([PY, "-m", "canary_runner.cli", "exec", "-o", str(tmp_path / "run"), "--timeout", "3",
                           "--", PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    rec = results.load_metrics(tmp_path / "run")
    assert rec["status"] == "timeout" and rec["error"] == {
        "type": "Timeout", "message": "stopped after --timeout 3s", "traceback": None, "step": None}
    grandchild = int(proc.stdout.split()[0])
    time.sleep(0.5)
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_timeout_kills_a_command_that_ignores_sigterm(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
    t0 = time.monotonic()
    rec, exit_code = launch.execute([PY, "-c", code], tmp_path / "run", "stubborn", timeout_s=2, kill_grace_s=1)
    assert exit_code == 3 and rec["status"] == "timeout"
    assert time.monotonic() - t0 < 30
    results.load_metrics(tmp_path / "run")


def test_a_command_that_builds_no_trainer_is_reported(tmp_path):
    run = canary_exec(tmp_path / "run", "--", PY, "-c", "print('no training here')")
    assert run.code == 3
    rec = run.record
    assert rec["status"] == "crashed" and rec["error"]["type"] == "NoTrainer"
    assert "no transformers Trainer recorded a step" in rec["error"]["message"]
    assert rec["run"]["training_type"] == "custom" and rec["run"]["steps_completed"] == 0


# -- several processes ---------------------------------------------------------------------------------


def test_torchrun_two_processes_are_merged(tmp_path):
    run = canary_exec(tmp_path / "run", "--max-steps", "5", "--warmup-steps", "1", "--",
                      PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      str(TRAIN), "--steps", "40")
    assert run.code == 0, run.stderr[-3000:]
    results.validate(run.raw)
    rec = run.record
    assert rec["status"] == "completed", rec["error"]
    assert rec["run"]["world_size"] == 2 and rec["run"]["steps_completed"] == 5, rec["run"]
    assert rec["run"]["distributed"] == {"nproc_per_node": 2, "strategy": "ddp", "launcher": "torchrun"}
    s = rec["series"]
    for r in (0, 1):
        rank = results.load_metrics(run.out / "ranks" / f"rank{r}")  # each rank's own record
        assert rank["series"]["step"] == [1, 2, 3, 4, 5], (r, rank["series"]["step"])
        assert len(read_lines(run.out / "ranks" / f"rank{r}" / "steps.jsonl")) == 5
        assert all(t > 0 for t in s[f"rank{r}/step_time_s"])
    # Merged as `canary run` merges: a step is as slow as its slowest rank, tokens add up.
    assert s["step_time_s"] == [max(a, b) for a, b in zip(s["rank0/step_time_s"], s["rank1/step_time_s"])]
    assert s["tokens"] == [a + b for a, b in zip(s["rank0/tokens"], s["rank1/tokens"])]
    assert [r["rank"] for r in rec["summary"]["distributed"]["ranks"]] == [0, 1]
    assert not (run.out / "steps.jsonl").exists()


def test_a_worker_s_exception_is_the_error_not_torchrun_s_report():
    # What torchrun prints when a worker raises (shortened): the worker's exception names the failure.
    stderr = "\n".join([
        "[rank1]: Traceback (most recent call last):",
        '[rank1]:   File "train.py", line 28, in on_step_end',
        "[rank1]: RuntimeError: boom at step 4",
        "E1129 06:15:38 failed (exitcode: 1) local_rank: 1 (pid: 12800) of binary: python",
        "Traceback (most recent call last):",
        '  File "torchrun", line 8, in <module>',
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
        "============================================================",
        "train.py FAILED",
    ])
    err = launch.crash_error(1, stderr)
    assert err["type"] == "RuntimeError"
    assert err["message"].splitlines()[0] == "the command failed (exit code 1): [rank1]: RuntimeError: boom at step 4"
    assert err["traceback"].splitlines()[0] == "[rank1]: Traceback (most recent call last):"
    assert err["traceback"].splitlines()[-1] == "[rank1]: RuntimeError: boom at step 4"
    assert launch.crash_error(-9, "")["message"].startswith("the command failed (killed by SIGKILL")


# -- the hook in the user's environment ------------------------------------------------------------------


def test_the_user_s_sitecustomize_and_pythonpath_still_apply(tmp_path, monkeypatch, capsys):
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nopen(os.environ['MARKER'], 'w').write('ran')\n")
    monkeypatch.setenv("PYTHONPATH", str(own))
    monkeypatch.setenv("MARKER", str(tmp_path / "marker"))
    show = tmp_path / "show.py"
    show.write_text("import json, sys\nprint(json.dumps(sys.path))\n")
    code = main(["exec", "-o", str(tmp_path / "run"), "--no-summary", "--", PY, str(show)])
    assert code == 3  # it trains nothing
    assert (tmp_path / "marker").read_text() == "ran"
    # No stdout capture through a real file descriptor in-process: check the path with the same hook.
    env = launch.child_env(tmp_path / "run2", None, 3)
    out = subprocess.run([PY, str(show)], env=env, capture_output=True, text=True).stdout
    path = json.loads(out)
    assert path.index(str(launch.HOOK_DIR)) < path.index(str(own))


def test_a_python_without_canary_runner_still_gets_the_hook(tmp_path):
    # The interpreter this venv was made from: no canary_runner, no site-packages of the venv.
    base = os.path.join(sys.base_prefix, "bin", "python3")
    if sys.prefix == sys.base_prefix or not os.path.exists(base):
        pytest.skip("the tests do not run in a virtual environment: no Python without canary_runner here")
    code = ("import json, sys; from canary_runner.exec import attach; "
            "print(json.dumps([attach.__file__, [type(f).__name__ for f in sys.meta_path], sys.path]))")
    env = launch.child_env(tmp_path / "run", None, 3)
    proc = subprocess.run([base, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warning: attached quietly
    where, finders, path = json.loads(proc.stdout)
    assert where == str(launch.PACKAGE_HOME / "canary_runner" / "exec" / "attach.py")
    assert "PostImportFinder" in finders
    assert not [p for p in path if "site-packages" in p and p.startswith(sys.prefix)]  # the venv stays out


# -- bad usage: exit 2, one clear line, nothing ran ------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["exec"], "no command to run: put it after `--`"),
    (["exec", "--"], "no command to run: put it after `--`"),
    (["exec", "--", "no-such-command-xyz", "train.py"], "command not found: 'no-such-command-xyz' is not on PATH"),
    (["exec", "--", "./missing/train.sh"], "command not found: ./missing/train.sh (no such file)"),
    (["exec", "--max-steps", "0", "--", PY, "train.py"], "--max-steps must be at least 1"),
    (["exec", "--timeout", "-5", "--", PY, "train.py"], "--timeout must be a positive number"),
    (["exec", "--name", "../up", "--", PY, "train.py"], "--name '../up': use letters, digits"),
])
def test_bad_usage_exits_2_with_one_clear_line(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main([argv[0], "-o", str(out), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("canary exec: error: ") and message in err and "Traceback" not in err
    assert not (out / "metrics.json").exists()


def test_not_executable_command_is_bad_usage(tmp_path, capsys):
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/sh\n")
    code = main(["exec", "-o", str(tmp_path / "run"), "--", str(script)])
    assert code == 2 and "command not executable" in capsys.readouterr().err


# -- pieces ----------------------------------------------------------------------------------------------


def test_default_name_is_the_script_s_stem():
    from canary_runner.exec.cli import NAME, default_name

    assert default_name(["python", "scripts/train_dpo.py", "--lr", "1"]) == "train_dpo"
    assert default_name(["torchrun", "--nproc_per_node=2", "-m", "pkg.train"]) == "train"
    assert default_name(["accelerate", "launch", "my train!.py"]) == "my-train-"
    assert default_name(["./run.sh"]) == "run.sh"
    assert all(NAME.match(default_name([p])) for p in ("..", "/", "-x", "é"))


def test_series_are_aligned_by_step():
    from canary_runner.results import to_series

    steps = [{"step": 1, "warmup": True, "step_time_s": 0.1, "tokens": 5, "loss": 2.0},
             {"step": 2, "warmup": False, "step_time_s": 0.2, "tokens": 6, "reward": 1.0}]
    series = to_series(steps)
    assert series["loss"] == [2.0, None] and series["reward"] == [None, 1.0] and series["grad_norm"] == [None, None]
    assert to_series([])["step"] == []


def test_training_type_follows_the_trl_class_a_user_subclasses():
    from transformers import Trainer
    from trl import DPOTrainer, GRPOTrainer, SFTTrainer

    from canary_runner.exec.attach import training_type

    class MyDPO(DPOTrainer):
        pass

    class SFTTrainerLookalike(Trainer):  # named like TRL's, not TRL's
        pass

    SFTTrainerLookalike.__name__ = "SFTTrainer"
    assert [training_type(c) for c in (SFTTrainer, MyDPO, GRPOTrainer, Trainer, SFTTrainerLookalike)] == \
        ["sft", "dpo", "grpo", "custom", "custom"]
