"""Baseline source specs: `path:<dir>`, `branch:<name>`, `artifact:<name>`, and `ref:<git ref>`, which is
not a stored baseline at all: the base is measured in the same job (`canary ab`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class BaselineSpecError(ValueError):
    """A baseline spec the user typed is malformed (bad input: the CLI maps it to exit code 2)."""


@dataclass(frozen=True)
class PathSpec:
    path: Path
    kind: str = "path"

    def __str__(self) -> str:
        return f"path:{self.path}"


@dataclass(frozen=True)
class BranchSpec:
    branch: str
    kind: str = "branch"

    def __str__(self) -> str:
        return f"branch:{self.branch}"


@dataclass(frozen=True)
class ArtifactSpec:
    name: str
    kind: str = "artifact"

    def __str__(self) -> str:
        return f"artifact:{self.name}"


@dataclass(frozen=True)
class RefSpec:
    ref: str  # `base`: the pull request's base commit (other events: the default branch's head)
    kind: str = "ref"

    def __str__(self) -> str:
        return f"ref:{self.ref}"


BaselineSpec = PathSpec | BranchSpec | ArtifactSpec | RefSpec

# git check-ref-format, the parts that matter for a branch typed into a workflow file.
_BAD_REF = re.compile(r"(\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\])")
# Characters GitHub refuses in artifact names.
_BAD_ARTIFACT = re.compile(r'[":<>|*?\r\n\\/]')


def _check_branch(name: str) -> str:
    if (not name or _BAD_REF.search(name) or name.startswith(("-", "/", ".")) or name.endswith(("/", ".", ".lock"))
            or name == "@" or "/." in name):
        raise BaselineSpecError(f"invalid branch name {name!r} in baseline spec 'branch:{name}'")
    return name


def parse_baseline_spec(text: str) -> BaselineSpec:
    """Parse `path:<dir>`, `branch:<name>`, `artifact:<name>` or `ref:<git ref>`; raise BaselineSpecError
    otherwise."""
    if not isinstance(text, str):
        raise BaselineSpecError(f"baseline spec must be a string, got {type(text).__name__}")
    text = text.strip()
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    value = value.strip()
    usage = "expected path:<dir>, branch:<name>, artifact:<name> or ref:<git ref>"
    if not sep:
        raise BaselineSpecError(f"baseline spec {text!r} has no kind; {usage}")
    if not value:
        raise BaselineSpecError(f"baseline spec {text!r} has an empty {kind or 'value'}; {usage}")
    if kind == "path":
        return PathSpec(Path(value).expanduser())
    if kind == "branch":
        return BranchSpec(_check_branch(value))
    if kind == "artifact":
        if _BAD_ARTIFACT.search(value) or len(value) > 256:
            raise BaselineSpecError(f"invalid artifact name {value!r}: GitHub forbids \" : < > | * ? \\ / and newlines")
        return ArtifactSpec(value)
    if kind == "ref":
        if not re.fullmatch(r"[0-9a-fA-F]{7,40}", value):
            _check_branch(value)  # a branch or tag name, as git accepts it
        return RefSpec(value)
    raise BaselineSpecError(f"unknown baseline source {kind!r} in {text!r}; {usage}")
