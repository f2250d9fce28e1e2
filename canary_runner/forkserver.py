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
stdout, {"exit": code}, after the child has exited. End of input ends the server.
"""

import importlib
import json
import os
import sys
import traceback

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
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    code = 1
    try:
        from canary_runner.cli import main

        code = main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - as the interpreter would: print it, exit 1
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    os._exit(code if isinstance(code, int) else 1)


def serve():
    preload(sys.argv[1:])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            child(request)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
