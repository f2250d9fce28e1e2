"""Run a child process the way a canary run needs: SIGTERM/SIGINT forwarded, its exit code returned."""

from __future__ import annotations

import signal
import subprocess


def run_forwarding_signals(cmd: list[str], **popen) -> int:
    """Start `cmd` (an argv list, never a shell) and wait; a SIGTERM or SIGINT sent to this process is
    passed on, so the child records itself as interrupted before both exit."""
    proc = subprocess.Popen(cmd, **popen)
    previous = {s: signal.signal(s, lambda signum, _f: proc.send_signal(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
