"""`canary exec` run for real: the user's script in tests/exec/scripts trains the embedded model in a
child process, launched through the `canary` command line as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from canary_runner import results

SCRIPTS = Path(__file__).resolve().parent / "scripts"
TRAIN = SCRIPTS / "train_sft.py"
PY = sys.executable


@dataclass
class Exec:
    out: Path
    code: int
    stdout: str
    stderr: str

    @property
    def raw(self) -> dict:
        return json.loads((self.out / "metrics.json").read_text())

    @property
    def record(self) -> dict:
        return results.load_metrics(self.out)


def canary_exec(out: Path, *args: str, timeout: float = 300) -> Exec:
    """`canary exec -o OUT ARGS...` in a subprocess (ARGS hold the options, `--` and the command)."""
    proc = subprocess.run([PY, "-m", "canary_runner.cli", "exec", "-o", str(out), *args],
                          capture_output=True, text=True, timeout=timeout)
    return Exec(out, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def capped_runs(tmp_path_factory):
    """Two runs of one command: the script asks for 40 steps, `--max-steps 6` caps them."""
    root = tmp_path_factory.mktemp("exec-capped")
    return [canary_exec(root / name, "--max-steps", "6", "--warmup-steps", "2", "--", PY, str(TRAIN),
                        "--steps", "40") for name in ("a", "b")]
