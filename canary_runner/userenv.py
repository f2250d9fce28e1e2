"""The code under review, installed on top of the pinned stack in an overlay environment.

An overlay is a bare venv whose site-packages comes first on `sys.path`, followed by this
interpreter's own site-packages (added through a `.pth` file, so editable installs there keep
working). `pip install` into the overlay shadows a pinned package without touching it: the image's
environment stays as built, every run (and each side of an A/B run) gets its own overlay, and
removing the overlay's folder undoes everything.

Install lines are pip argument sets (`-e .`, `-r requirements-canary.txt`, `trl==1.13.0`), split
like a shell would but never run by one.
"""

from __future__ import annotations

import json
import os
import shlex
import site
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .collect.env import INSTALL_ENV

PIP_TAIL_LINES = 15  # of pip's output, in the error of a failed install
PTH_NAME = "_canary_parent_env.pth"

# Run inside an environment: {normalised name: version}, the first distribution on sys.path winning
# (the one `import` would load).
_LIST_PACKAGES = """
import json, re
from importlib import metadata
seen = {}
for d in metadata.distributions():
    name = d.metadata["Name"]
    if name:
        seen.setdefault(re.sub(r"[-_.]+", "-", name).lower(), d.version)
print(json.dumps(seen))
"""


class InstallError(Exception):
    """An install line pip refused (bad input: exit 2). The message ends with pip's last lines."""


@dataclass
class Overlay:
    root: Path
    python: Path
    lines: list[str] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)  # [{"name", "old", "new"}], old None when new

    def record(self) -> dict:
        """What goes into metrics.json `env.install`."""
        return {"lines": list(self.lines), "changed": list(self.changed)}

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` as a process in the overlay sees it: its `bin/` first on PATH (a command's `python` is
        the overlay's), and the install record for the run's environment fingerprint."""
        return {**base, INSTALL_ENV: json.dumps(self.record()), "VIRTUAL_ENV": str(self.root),
                "PATH": os.pathsep.join([str(self.python.parent), base.get("PATH", "")])}


def parse_lines(lines: list[str] | str) -> list[list[str]]:
    """Install input -> pip argument lists: one per non-empty line; `#` starts a comment."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out = []
    for raw in lines:
        try:
            args = shlex.split(raw, comments=True)
        except ValueError as exc:  # an unclosed quote
            raise InstallError(f"install line {raw!r} cannot be split into pip arguments: {exc}") from None
        if args:
            out.append(args)
    return out


def _python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def packages(python: Path | str) -> dict[str, str]:
    # -I: not the working directory (a source checkout holds its own .egg-info) nor PYTHON* variables.
    proc = subprocess.run([str(python), "-I", "-c", _LIST_PACKAGES], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise InstallError(f"cannot list the packages of {python}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def changed_packages(before: dict[str, str], after: dict[str, str]) -> list[dict]:
    return [{"name": name, "old": before.get(name), "new": version}
            for name, version in sorted(after.items()) if before.get(name) != version]


def create(root: Path | str) -> Overlay:
    """A bare overlay venv at `root` that sees this interpreter's packages after its own."""
    root = Path(root)
    venv.EnvBuilder(with_pip=False, symlinks=sys.platform != "win32", clear=True).create(root)
    python = _python(root)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # `import` lines in a .pth run at startup; addsitedir also processes the parent's own .pth files.
    Path(purelib, PTH_NAME).write_text("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in parents) + "\n")
    return Overlay(root=root, python=python)


def install(overlay: Overlay, lines: list[str] | str, cwd: Path | str | None = None) -> Overlay:
    """pip-install each line into the overlay (pip from the parent environment, run by the overlay's
    interpreter, installs into the overlay). Records which packages changed. Raises InstallError."""
    arg_sets = parse_lines(lines)
    before = packages(overlay.python)
    for args in arg_sets:
        cmd = [str(overlay.python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-PIP_TAIL_LINES:])
            raise InstallError(f"install line {shlex.join(args)!r} failed (pip exit {proc.returncode}):\n{tail}")
        overlay.lines.append(shlex.join(args))
    overlay.changed = changed_packages(before, packages(overlay.python))
    return overlay


@contextmanager
def overlay(lines: list[str] | str, cwd: Path | str | None = None) -> Iterator[Overlay]:
    """A temporary overlay with `lines` installed, removed on exit. Raises InstallError."""
    with tempfile.TemporaryDirectory(prefix="canary-env-") as tmp:
        yield install(create(tmp), lines, cwd=cwd)


def describe(changed: list[dict]) -> str:
    """`trl 1.12.0 -> 1.13.0, user-pkg (new) 0.1.0`."""
    return ", ".join(f"{c['name']} {c['old']} -> {c['new']}" if c["old"] else f"{c['name']} (new) {c['new']}"
                     for c in changed) or "no package changed"
