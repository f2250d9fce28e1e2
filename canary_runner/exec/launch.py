"""The parent side of `canary exec`: launch the command, watch it, and always write metrics.json.

The command runs as given (an argv list, never a shell), in its own session so that a timeout can
stop everything it started (torchrun's workers, data loader workers). SIGTERM and SIGINT sent to
`canary exec` are forwarded to it; the run is then `interrupted`. Past `--timeout` it gets SIGTERM,
then SIGKILL after a grace period; the run is then `timeout`. A non-zero exit is `crashed`, with
the last lines of the command's stderr as the error (stderr is passed through as it comes and only
its tail is kept). Whatever happened, the steps already streamed are in the record.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import record as records
from .attach import ENV_DIR, ENV_MAX_STEPS, ENV_WARMUP

HOOK_DIR = Path(__file__).resolve().parent / "hook"
PACKAGE_HOME = Path(__file__).resolve().parents[2]  # the directory holding canary_runner/
KILL_GRACE_S = 30.0  # after SIGTERM on timeout: time to write the last step before SIGKILL
STDERR_TAIL_BYTES = 64 * 1024
ERROR_LINES = 8  # stderr lines kept in error.message
ERROR_CHARS = 3000
TRACEBACK_CHARS = 16000


class UsageError(Exception):
    """The command cannot be started (missing, not executable): exit 2, nothing ran."""


def resolve_command(command: list[str]) -> list[str]:
    if not command:
        raise UsageError("no command to run: put it after `--`, e.g. canary exec -o runs/pr -- python train.py")
    exe = command[0]
    if os.sep in exe:
        if not Path(exe).is_file():
            raise UsageError(f"command not found: {exe} (no such file)")
        if not os.access(exe, os.X_OK):
            raise UsageError(f"command not executable: {exe} (chmod +x it, or run it through its interpreter)")
        return command
    if shutil.which(exe) is None:
        raise UsageError(f"command not found: {exe!r} is not on PATH (give its path, or activate its environment)")
    return command


def child_env(out_dir: Path, max_steps: int | None, warmup_steps: int) -> dict:
    env = os.environ.copy()
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(HOOK_DIR) + (os.pathsep + old if old else "")
    env[ENV_DIR] = str(Path(out_dir).resolve())
    env[ENV_MAX_STEPS] = str(max_steps or 0)
    env[ENV_WARMUP] = str(warmup_steps)
    env["CANARY_EXEC_HOME"] = str(PACKAGE_HOME)
    return env


def clean(out_dir: Path) -> None:
    """Remove what an earlier exec run left in this directory: stale ranks would be merged."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "ranks", ignore_errors=True)
    for pattern in ("steps*.jsonl", "trainer*.json", "metrics.json"):
        for p in out_dir.glob(pattern):
            p.unlink(missing_ok=True)


class StderrTee(threading.Thread):
    """Copies the child's stderr to ours as it comes, keeping the last STDERR_TAIL_BYTES."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.tail = pipe, bytearray()

    def run(self):
        fd = self.pipe.fileno()
        out = getattr(sys.stderr, "buffer", None)
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            try:
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:  # a text-only stderr (pytest's capture)
                    sys.stderr.write(chunk.decode("utf-8", "replace"))
                    sys.stderr.flush()
            except (OSError, ValueError):
                pass
            self.tail += chunk
            del self.tail[:-STDERR_TAIL_BYTES]

    def text(self) -> str:
        return self.tail.decode("utf-8", "replace")


# A traceback's first and last lines ("RuntimeError: boom", "torch.OutOfMemoryError: ..."), also as
# torchrun prefixes its workers' output ("[rank0]: ...").
_RANK_PREFIX = r"^(?:\[rank\d+\]:\s*)?"
_TRACEBACK = re.compile(_RANK_PREFIX + r"Traceback \(most recent call last\)")
_EXC_LINE = re.compile(_RANK_PREFIX + r"((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Interrupt|Exit))(?::|$)")
# The launchers' own reports that a worker failed: the worker's exception says more.
_LAUNCHER_EXCEPTIONS = ("ChildFailedError", "SignalException", "CalledProcessError")


def _ended_how(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        how = f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        how = f"killed by signal {-returncode}"
    return how + (" (the out-of-memory killer?)" if returncode == -signal.SIGKILL else "")


def crash_error(returncode: int, stderr: str) -> dict:
    """error of a run that exited non-zero, from what the command's stderr ended with: the message is
    the failure's exception line (or stderr's last line) and stderr's last lines; the traceback is
    the one that exception ended."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    # The worker's exception, not the report a launcher (torchrun, accelerate) prints after it.
    found = [(i, m) for i, m in enumerate(map(_EXC_LINE.match, lines)) if m]
    workers = [(i, m) for i, m in found if m.group(1).rsplit(".", 1)[-1] not in _LAUNCHER_EXCEPTIONS]
    at, exc = (workers or found or [(len(lines) - 1, None)])[-1]
    first = exc.string if exc else (lines[-1] if lines else "no output on stderr")
    tail = "\n".join(lines[-ERROR_LINES:])[-ERROR_CHARS:]
    starts = [i for i in range(at + 1) if _TRACEBACK.match(lines[i])]
    traceback = "\n".join(lines[starts[-1]:at + 1] if starts else lines)
    return {
        "type": exc.group(1).rsplit(".", 1)[-1] if exc else "ExitCode",
        "message": f"the command failed ({_ended_how(returncode)}): {first[:500]}" + (f"\n{tail}" if tail else ""),
        "traceback": traceback[-TRACEBACK_CHARS:] or None,
    }


def run_command(command: list[str], out_dir: Path, launch: records.Launch, timeout_s: float | None,
                kill_grace_s: float = KILL_GRACE_S) -> records.Outcome:
    """Run the command to its end (or its timeout, or a signal) and say how it ended."""
    env = child_env(out_dir, launch.max_steps, launch.warmup_steps)
    received: list[int] = []
    started: list[subprocess.Popen] = []

    def forward(signum, _frame):
        received.append(signum)
        if not started:
            return  # not started yet: it will not be
        if len(received) > 1:  # asked twice: stop waiting for a clean exit
            _kill_group(started[0])
            return
        try:
            started[0].send_signal(signum)
        except ProcessLookupError:
            pass

    # Handlers first: a signal between the start and the handlers would kill us and lose the record.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if received:  # while we were getting ready: nothing to run, still a record
            name = signal.Signals(received[0]).name
            return records.Outcome("interrupted", {"type": "Interrupted", "message": f"received {name}"}, None)
        try:
            proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:  # raced resolve_command, or an exec format error
            raise UsageError(f"cannot start {command[0]!r}: {e.strerror or e}") from None
        started.append(proc)
        if received:  # arrived while it was starting, before `started` named it
            proc.send_signal(received[0])
        tee = StderrTee(proc.stderr)
        tee.start()
        return _watch(proc, tee, received, timeout_s, kill_grace_s)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _watch(proc, tee, received: list[int], timeout_s: float | None, kill_grace_s: float) -> records.Outcome:
    timed_out = False
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            proc.wait(timeout=0.5 if deadline is None else max(0.05, min(0.5, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            timed_out = True
            proc.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers
            try:
                proc.wait(timeout=kill_grace_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
            break
    if timed_out or received:
        _kill_group(proc)  # anything the command left running
    proc.wait()
    tee.join(timeout=5)  # a grandchild that kept stderr open must not hold us
    code = proc.returncode
    if timed_out:
        return records.Outcome("timeout", {"type": "Timeout", "message": f"stopped after --timeout {timeout_s:g}s"}, code)
    if received:
        name = signal.Signals(received[0]).name
        return records.Outcome("interrupted", {"type": "Interrupted", "message": f"received {name}"}, code)
    if code != 0:
        return records.Outcome("crashed", crash_error(code, tee.text()), code)
    return records.Outcome("completed", None, code)


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def execute(command: list[str], out_dir: Path, name: str, *, max_steps: int | None = None,
            warmup_steps: int = 3, timeout_s: float | None = None, tier: str = "smoke",
            kill_grace_s: float = KILL_GRACE_S) -> tuple[dict, int]:
    """`canary exec`: run the command with the collector attached; write and return the record.
    Raises UsageError (nothing ran) when the command cannot be started."""
    from ..runner import git_sha

    command = resolve_command(command)
    out_dir = Path(out_dir)
    clean(out_dir)
    launch = records.Launch(command=command, name=name, tier=tier, warmup_steps=warmup_steps,
                            max_steps=max_steps, started_at=time.time())
    outcome = run_command(command, out_dir, launch, timeout_s, kill_grace_s)
    launch.ended_at = time.time()
    launch.git_sha = git_sha()
    record = records.build(out_dir, launch, outcome)
    if outcome.status == "completed" and record["run"]["steps_completed"] == 0 and record["status"] == "completed":
        record["status"] = "crashed"
        record["error"] = {"type": "NoTrainer", "traceback": None, "step": None, "message": (
            "the command succeeded but no transformers Trainer recorded a step: it builds no Trainer, or "
            "runs in a Python that skips PYTHONPATH (-I, -E) or lacks transformers. canary exec measures "
            "scripts that train with transformers.Trainer or a TRL trainer.")}
    from .. import results

    results.write_json_atomic(out_dir / "metrics.json", record)
    return record, 0 if record["status"] == "completed" else 3
