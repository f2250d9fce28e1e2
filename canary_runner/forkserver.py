"""Fresh processes without paying for the imports every time: one fork server per A/B side.

`canary ab` runs every measured run in a fresh process. Starting Python and importing torch,
transformers and TRL costs 5-7 s on a 2-core runner, four times the whole training of a smoke
canary, so a ten-pair A/B would spend most of its time importing. A fork server starts once per
side, in that side's tree and environment, imports the heavy third-party libraries (never this
package or the user's code: each run imports those fresh from the side's tree) and forks one child
per run. The child is a new process with its own memory, signals and exit status; what it inherits
is libraries imported but not yet used: no torch op has run and no thread pool exists in the server.

This file is executed with `python -c` (its source text), so it imports nothing from this package:
the side's tree may hold another version of the package, or none.

Protocol: one JSON request per line on stdin, {"argv": [...], "log": path}; one JSON line back on
stdout, {"exit": code}, after the child has exited. End of input ends the server; when it comes while
a run is in flight (the launcher closed, or died), the run is stopped with SIGTERM first (it records
itself as interrupted), so no run outlives its A/B.

The child never touches the protocol pipes: its stdin is /dev/null and its stdout/stderr the run's
log, so nothing it (or a library, or a process it starts) reads or prints can take a request or fake
a reply.
"""

import atexit
import importlib
import json
import os
import select
import signal
import sys
import traceback

STOP_GRACE_S = 30  # how long a stopped run may take to write its record before it is killed

# What a run would import anyway; a missing one (an older or leaner stack) is simply not preloaded.
PRELOAD = ["torch", "transformers", "transformers.trainer", "datasets", "accelerate", "peft", "trl"]


def preload(extra):
    """Import PRELOAD and each `module:attribute` in `extra` (a trainer class TRL loads lazily)."""
    for spec in PRELOAD + list(extra):
        module, _, attribute = spec.partition(":")
        try:
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
        except Exception:  # noqa: BLE001 - preloading is an optimisation, never a failure
            pass


def child(request):
    """The run, in the forked process. Whatever happens, this process ends here with the run's exit
    code: it must never return into the server's loop (a second server on the same pipes)."""
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdin = open(0, closefd=False)
        # The server's `-c` and preload list are not the run's command line.
        sys.argv = ["-m", *request["argv"]]
        from canary_runner.cli import main

        code = main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - as the interpreter would: print it, exit 1
        traceback.print_exc()
    finally:
        # What a normal interpreter exit does and os._exit skips: exit handlers (logging's flush among
        # them), then the streams' buffers.
        try:
            atexit._run_exitfuncs()
        except BaseException:  # noqa: BLE001
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


class Requests:
    """Lines from stdin, read with os.read: the server also watches stdin for its end while a run is
    in flight, which a buffered reader would hide."""

    def __init__(self):
        self.buffer = b""
        self.ended = False

    def fill(self) -> None:
        chunk = os.read(0, 65536)
        self.buffer += chunk
        self.ended = self.ended or not chunk

    def next(self):
        while b"\n" not in self.buffer and not self.ended:
            self.fill()
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def wait_for(pid, requests):
    """The child's wait status; if stdin ends meanwhile, stop the child first (SIGTERM, then SIGKILL)."""
    try:
        watch = [os.pidfd_open(pid)]  # readable when the child exits: no polling
    except (AttributeError, OSError):
        watch = []
    try:
        while True:
            ready, _, _ = select.select([0, *watch], [], [], None if watch else 0.5)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if 0 in ready:
                requests.fill()
                if requests.ended:
                    return stop(pid)
    finally:
        for fd in watch:
            os.close(fd)


def stop(pid):
    os.kill(pid, signal.SIGTERM)
    for _ in range(STOP_GRACE_S * 10):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        select.select([], [], [], 0.1)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def serve():
    preload(sys.argv[1:])
    print(json.dumps({"ready": True}), flush=True)
    requests = Requests()
    while True:
        request = requests.next()
        if request is None:
            break
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(request)
        status = wait_for(pid, requests)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
