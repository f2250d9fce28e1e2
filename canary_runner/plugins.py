"""The user's own code, named in a config by import string: `package.module:attribute`.

Strings are resolved with the workspace (the config file's repository root) first on `sys.path`, so
a team's trainer subclass, reward functions, callbacks, model hooks and dataset builders run as the
canary. Every failure names the config field, the string and the reason; none is a traceback.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

IMPORT_STRING = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
WORKSPACE_ENV = "CANARY_WORKSPACE"  # carries the workspace to torchrun ranks and overlay children


class PluginError(Exception):
    """An import string that cannot be used (bad input: exit 2)."""


def is_import_string(text: str) -> bool:
    return bool(IMPORT_STRING.match(text)) and not text.startswith("embedded:")


ROOT_MARKERS = (".git", "pyproject.toml", "setup.py", "setup.cfg")


def workspace_of(config_path: Path | str) -> Path:
    """The project root holding the config: the nearest folder at or above it with `.git`,
    `pyproject.toml`, `setup.py` or `setup.cfg`; else the config's own folder."""
    start = Path(config_path).resolve().parent
    for folder in (start, *start.parents):
        if any((folder / m).exists() for m in ROOT_MARKERS):
            return folder
    return start


def use_workspace(workspace: Path | str | None = None) -> Path | None:
    """Put the workspace first on sys.path (and in the environment, for child processes)."""
    workspace = workspace or os.environ.get(WORKSPACE_ENV)
    if not workspace:
        return None
    path = str(Path(workspace).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    os.environ[WORKSPACE_ENV] = path
    return Path(path)


def load(spec: str, field: str) -> Any:
    """The object an import string names. Raises PluginError naming `field`, the string and why."""
    if not IMPORT_STRING.match(spec or ""):
        raise PluginError(f"{field}: {spec!r} is not an import string; write package.module:attribute "
                          "(e.g. my_project.trainers:MyDPOTrainer)")
    module_name, _, attr_path = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = os.environ.get(WORKSPACE_ENV) or "none set"
        raise PluginError(f"{field}: {spec!r}: module {exc.name!r} not found (searched the workspace ({where}) "
                          "and the installed packages; check the spelling, or install it with --install)") from None
    except Exception as exc:  # the user's module raised while importing
        raise PluginError(f"{field}: {spec!r}: importing {module_name} raised {type(exc).__name__}: {exc}") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{field}: {spec!r}: {module_name} has no attribute {attr_path!r}") from None
    return obj


def load_subclass(spec: str, field: str, base: type) -> type:
    obj = load(spec, field)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        what = obj.__name__ if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise PluginError(f"{field}: {spec!r} is {what}, not a subclass of {base.__module__}.{base.__name__}")
    return obj


def load_callable(spec: str, field: str) -> Any:
    obj = load(spec, field)
    if not callable(obj):
        raise PluginError(f"{field}: {spec!r} is a {type(obj).__name__}, not a callable")
    return obj
