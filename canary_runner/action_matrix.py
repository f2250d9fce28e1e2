"""The aggregating half of a matrix workflow: the comparison.json files the matrix's jobs uploaded as
artifacts, downloaded by actions/download-artifact, read back as data.

They are artifacts, so untrusted input of bounded size: each is read only if it is a plain file inside
the workspace, at most MAX_COMPARISON_BYTES, valid JSON matching the comparison schema; one that is not
is named (its path and why) and left out, and never stops the others from being reported.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from .report_matrix import MatrixEntry

log = logging.getLogger("canary_runner.action")

MAX_COMPARISONS = 64  # a matrix larger than this is not one PR comment's worth of rows
# A nightly comparison with every curve is a few MB; 32 MiB leaves room and bounds memory (x64 files read one by one).
MAX_COMPARISON_BYTES = 32 << 20


class NoComparisons(ValueError):
    """The input names nothing to aggregate (bad input: the download step or the path is wrong)."""


def find_comparison_files(spec: str, workspace: Path) -> tuple[Path | None, list[Path]]:
    """(the directory the paths are named relative to, the comparison files): a directory (searched for
    comparison.json at any depth), one file, or a glob relative to the workspace."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.rglob("comparison.json"))
        if not found:
            raise NoComparisons(f"comparisons: no comparison.json under {spec!r}. Download the matrix's artifacts "
                                "there first (actions/download-artifact with pattern: canary-* and path: that "
                                "directory), in this job, after the matrix job")
        return path, found
    if path.is_file():
        return path.parent, [path]
    found = sorted(Path(p) for p in glob.glob(spec, root_dir=None, recursive=True))
    if not found:
        raise NoComparisons(f"comparisons: {spec!r} is not a directory or a file and matches no file; give the "
                            "directory the matrix's artifacts were downloaded into, or a glob such as "
                            "canary-artifacts/*/comparison.json")
    return None, found


def _within(path: Path, workspace: Path) -> bool:
    return Path(os.path.abspath(path)).resolve().is_relative_to(workspace.resolve())


def read_entries(spec: str, workspace: Path, artifact_urls: Mapping[str, str] | None = None) -> list[MatrixEntry]:
    """Every comparison the input names, each read, bounded and validated, or named with why it was left out."""
    from . import report

    root, files = find_comparison_files(spec, workspace)
    entries: list[MatrixEntry] = []
    for path in files[:MAX_COMPARISONS]:
        source = _source(path, root, workspace)
        url = _artifact_url(path, root, workspace, artifact_urls or {})
        entry = MatrixEntry(source, artifact_url=url)
        try:
            if path.is_symlink() or not path.is_file():
                raise ValueError("not a plain file")
            if not _within(path, workspace):
                raise ValueError("outside the workspace")
            size = path.stat().st_size
            if size > MAX_COMPARISON_BYTES:
                raise ValueError(f"{size:,} bytes, over the {MAX_COMPARISON_BYTES >> 20} MiB a comparison may have")
            entry.comparison = report.load_comparison(path)
        except report.ReportInputError as exc:
            entry.error = str(exc).removeprefix(f"{path}: ")
        except (ValueError, OSError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
            entry.error = str(exc) or type(exc).__name__
        entries.append(entry)
    if len(files) > MAX_COMPARISONS:
        entries.append(MatrixEntry(f"{len(files) - MAX_COMPARISONS} more files",
                                   error=f"a matrix report holds at most {MAX_COMPARISONS} comparisons"))
    return entries


def _relative_parts(path: Path, root: Path | None, workspace: Path) -> tuple[str, ...]:
    base = root if root is not None else workspace
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(base)).parts
    except ValueError:
        return path.parts


def _source(path: Path, root: Path | None, workspace: Path) -> str:
    return "/".join(_relative_parts(path, root, workspace)) or path.name


def _artifact_url(path: Path, root: Path | None, workspace: Path, urls: Mapping[str, str]) -> str | None:
    """The artifact a downloaded file came from: download-artifact puts each artifact in a folder of its name."""
    for part in reversed(_relative_parts(path, root, workspace)[:-1]):
        if part in urls:
            return urls[part]
    return None


def run_artifact_urls(client, ctx) -> dict[str, str]:
    """This run's artifacts by name -> their download page (GitHub's web URL for one artifact), from
    GET /repos/{owner}/{repo}/actions/runs/{run_id}/artifacts. Empty when the token may not list them."""
    from .github.client import GitHubError

    if client is None or not ctx.run_id:
        return {}
    urls = {}
    try:
        for art in client.paginate(client.repo_path(f"actions/runs/{int(ctx.run_id)}/artifacts"),
                                   items_key="artifacts"):
            if isinstance(art, Mapping) and isinstance(art.get("name"), str) and isinstance(art.get("id"), int) \
                    and not art.get("expired"):
                urls[art["name"]] = f"{ctx.server_url}/{ctx.repository}/actions/runs/{int(ctx.run_id)}/artifacts/{art['id']}"
    except (GitHubError, ValueError) as exc:
        log.warning("could not list this run's artifacts (%s); the report links the run's artifacts page", exc)
        return {}
    return urls


def artifacts_page(ctx) -> str | None:
    """The run's page, scrolled to its artifacts: where the uploaded report is once the job ends."""
    if ctx is None or not ctx.run_id:
        return None
    return f"{ctx.server_url}/{ctx.repository}/actions/runs/{ctx.run_id}#artifacts"
