"""Baseline sources: a local path, a git branch, or a workflow artifact; all keyed by hardware."""

from __future__ import annotations

from pathlib import Path

from ..github.client import GitHubClient
from .artifact import pick_artifact, read_artifact_baseline, read_zip_metrics
from .branch import BranchWriteResult, read_branch_baseline, trim_history, write_branch_baseline
from .local import confine, read_path_baseline
from .model import BaselineError, BaselineLookup, BaselineRun, baseline_dir, path_segment, select, unfit_as_baseline
from .spec import ArtifactSpec, BaselineSpec, BaselineSpecError, BranchSpec, PathSpec, parse_baseline_spec


def load_baseline(spec: str | BaselineSpec, *, config_name: str, hardware_key: str,
                  client: GitHubClient | None = None, default_branch: str | None = None,
                  history: int = 0, workspace: Path | None = None) -> BaselineLookup:
    """Fetch the baseline(s) for one config on one hardware key from any source.

    Returns a lookup whose `found` is False, with a one-line `message`, when there is none
    (e.g. "no baseline for hardware A100 (found: H100, L4)"). Raises BaselineSpecError for a
    malformed spec and BaselineError when the source exists but cannot be read. With `workspace`
    (the action's), a `path:` source must lie inside it (see `local.confine`).
    """
    if isinstance(spec, str):
        spec = parse_baseline_spec(spec)
    if isinstance(spec, PathSpec):
        return read_path_baseline(Path(spec.path), config_name=config_name, hardware_key=hardware_key,
                                  history=history, source=str(spec), workspace=workspace)
    if client is None:
        raise ValueError(f"baseline source {spec} needs a GitHub client")
    if isinstance(spec, BranchSpec):
        return read_branch_baseline(client, spec.branch, config_name=config_name, hardware_key=hardware_key,
                                    history=history)
    return read_artifact_baseline(client, spec.name, config_name=config_name, hardware_key=hardware_key,
                                  default_branch=default_branch)


__all__ = [
    "ArtifactSpec", "BaselineError", "BaselineLookup", "BaselineRun", "BaselineSpec", "BaselineSpecError",
    "BranchSpec", "BranchWriteResult", "PathSpec", "baseline_dir", "confine", "load_baseline", "parse_baseline_spec",
    "path_segment", "pick_artifact", "read_artifact_baseline", "read_branch_baseline", "read_path_baseline",
    "read_zip_metrics", "select", "trim_history", "unfit_as_baseline", "write_branch_baseline",
]
