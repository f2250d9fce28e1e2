"""`canary ab`'s runs forked from a per-side fork server: the same run as a new interpreter gives, the
same exit codes, and a plain new interpreter whenever the server cannot start or dies; no server or
run outlives the A/B that started it."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from canary_runner import results
from canary_runner.ab import Launcher, Side, fork_safe

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "sft_embedded.yaml"
CHEAP = ["train.max_steps=4", "train.warmup_steps=1", "train.deterministic=true", "train.cpu_threads=1"]

pytestmark = pytest.mark.skipif(not fork_safe(), reason="runs are never forked on this machine (GPU driver, no fork)")


def argv(config: Path, out: Path, *sets: str) -> list[str]:
    return ["run", str(config), "-o", str(out), "--no-progress", *(f"--set={s}" for s in [*CHEAP, *sets])]


def launcher(root: Path, log: Path, use_fork: bool = True, python: str = sys.executable) -> Launcher:
    return Launcher(Side("head", str(root), root, python=python), ["trl:SFTTrainer"], use_fork, log)


def completed(out: Path) -> dict:
    rec = results.load_metrics(out)
    assert rec["status"] == "completed", rec.get("error")
    return rec


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("plain") / "run"
    plain = launcher(REPO, None, use_fork=False)
    assert plain.run(argv(CONFIG, out), out.with_suffix(".log")) == 0
    return completed(out)


def test_a_forked_run_is_the_plain_run_and_a_dead_server_falls_back(tmp_path, plain_run):
    forked = launcher(REPO, tmp_path / "server.log")
    try:
        assert forked.run(argv(CONFIG, tmp_path / "a"), tmp_path / "a.log") == 0
        assert forked.server is not None and forked.server.poll() is None  # it was forked, not a fallback
        rec = completed(tmp_path / "a")
        assert rec["config_hash"] == plain_run["config_hash"]
        assert rec["series"]["loss"] == plain_run["series"]["loss"]
        # The server dies between runs (the OOM killer's way): the next run is a new interpreter.
        os.kill(forked.server.pid, signal.SIGKILL)
        assert forked.run(argv(CONFIG, tmp_path / "b"), tmp_path / "b.log") == 0
        assert forked.server is None
        assert completed(tmp_path / "b")["series"]["loss"] == plain_run["series"]["loss"]
    finally:
        forked.close()


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory) -> Path:
    """A user repository whose callback misbehaves the way user code can: it reads stdin and writes a
    fake protocol reply straight to file descriptor 1, then raises at step 2."""
    root = tmp_path_factory.mktemp("user")
    (root / "pyproject.toml").write_text('[project]\nname = "boompkg"\nversion = "0.1.0"\n')
    (root / "boompkg").mkdir()
    (root / "boompkg" / "__init__.py").write_text("")
    (root / "boompkg" / "cb.py").write_text(textwrap.dedent("""\
        import os
        import sys

        from transformers import TrainerCallback


        class Boom(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 2:
                    got = sys.stdin.read()  # a new interpreter's stdin here is /dev/null: nothing, at once
                    os.write(1, b'{"exit": 0}\\n')
                    print(f"stdin gave {got!r}", flush=True)
                    raise RuntimeError("boom at two")
        """))
    (root / "canary").mkdir()
    (root / "canary" / "c.yaml").write_text(CONFIG.read_text().replace("name: sft_embedded", "name: boom")
                                            + "trainer:\n  callbacks: [boompkg.cb:Boom]\n")
    return root


@pytest.mark.parametrize("sets, code, said", [
    ([], 3, "boom at two"),  # the user's code raises mid-run: a crash
    (["train.no_such_field=1"], 2, "train.no_such_field"),  # bad input
])
def test_a_failing_run_exits_as_a_plain_run_does_and_its_log_says_why(tmp_path, user_repo, sets, code, said):
    config = user_repo / "canary" / "c.yaml"
    got = {}
    for use_fork in (True, False):
        out = tmp_path / f"fork-{use_fork}"
        side = launcher(user_repo, tmp_path / "server.log", use_fork)
        done = threading.Thread(target=lambda: got.__setitem__(use_fork, side.run(argv(config, out, *sets),
                                                                                  out.with_suffix(".log"))))
        done.start()
        done.join(timeout=120)  # a run that reads the server's request pipe as its stdin would hang here
        alive = done.is_alive()
        if use_fork:
            assert side.server is not None  # neither the fake reply nor the failure ended the server
        side.close()
        assert not alive
        log = out.with_suffix(".log").read_text()
        assert said in log, log
        if code == 3:
            assert "stdin gave ''" in log and results.load_metrics(out)["status"] == "crashed"
    assert got == {True: code, False: code}


def test_a_server_that_cannot_start_means_plain_runs(tmp_path):
    # An interpreter that runs scripts but fails any `-c` program: the server exits at once.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\ncase "$1" in -c) exit 1;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    side = launcher(REPO, tmp_path / "server.log", python=str(python))
    try:
        assert side.run(argv(CONFIG, tmp_path / "run"), tmp_path / "run.log") == 0
        assert side.server is None
        completed(tmp_path / "run")
    finally:
        side.close()


# SIGTERM only: stopping `canary ab` with SIGINT (Ctrl-C) passes here on an idle machine but hung in
# 2 of 2 fresh CI runs on a loaded one, in the parent's cleanup; until that is found, Ctrl-C is not
# claimed to stop cleanly (README).
@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_a_stopped_ab_leaves_no_server_or_run_behind(tmp_path, sig):
    out = tmp_path / "ab"
    proc = subprocess.Popen([sys.executable, "-m", "canary_runner.cli", "ab", "sft_embedded", "--base", ".", "--head",
                             ".", "-o", str(out), "--set", "train.max_steps=100000", "--set", "train.warmup_steps=1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    steps = out / "warmup" / "base" / "steps.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if steps.exists() and len(steps.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0]
    started = psutil.Process(proc.pid).children(recursive=True)
    assert any("-c" in p.cmdline() for p in started)  # the fork servers, and the warm-up run forked from one
    proc.send_signal(sig)
    # Stopping waits for each server's run to record itself (a grace of 30 s per server at most): on a
    # loaded 2-core machine that can take a while, so the bound here is generous.
    proc.communicate(timeout=150)
    _gone, alive = psutil.wait_procs(started, timeout=60)
    left = [(p.pid, p.name()) for p in alive]
    for p in alive:
        p.kill()
    assert not left
    # The run was stopped by SIGTERM, not killed: it recorded itself.
    assert results.load_metrics(out / "warmup" / "base")["status"] == "interrupted"
