"""`canary report COMPARISON... --format comment|summary|check|markdown [-o FILE]`.

Several comparisons (a matrix of configs) render as one document: a row per config, each config's
report in a collapsed section, one sticky marker (report_matrix.py).

Light imports only: the `canary` command imports this module to build its parser.
Exit codes: 0 written, 2 bad input (missing or corrupt comparison.json, unwritable output).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

FORMATS = ("comment", "summary", "check", "markdown")
EXIT_OK, EXIT_BAD_INPUT = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("comparison", nargs="+",
                        help="the comparison.json written by `canary compare` (or its directory); several "
                             "(a matrix of configs) make one report with a row per config")
    parser.add_argument("-f", "--format", choices=FORMATS, default="comment",
                        help="comment: the sticky PR comment (<= 65,536 chars); summary: the job summary; "
                             "check: the check run's output as JSON; markdown: the full report for a file "
                             "(default: comment)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write here (default: standard output; for markdown, report.md next to comparison.json)")
    parser.add_argument("--run-url", metavar="URL", help="link to the workflow run")
    parser.add_argument("--artifact-url", metavar="URL", help="link to the run's artifacts")
    parser.add_argument("--report-path", metavar="PATH",
                        help="where the full report lives, named when a comment is shortened to fit")
    parser.add_argument("--config-path", metavar="PATH",
                        help="file the check annotations point at (default: the run's config path)")
    parser.add_argument("--plots-dir", metavar="DIR",
                        help="write PNG plots of the curves here (default for markdown: the directory of "
                             "comparison.json; other formats write plots only when this is given)")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    parser.add_argument("--matrix-name", metavar="NAME",
                        help="with several comparisons: the name in the matrix comment's sticky marker, for a "
                             "repository with more than one matrix (default: one marker for the matrix)")


def _error(message: str) -> int:
    print(f"canary: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _relative(path: Path, start: Path) -> str:
    from urllib.parse import quote

    return quote(Path(os.path.relpath(path.resolve(), start.resolve())).as_posix())


def main(args) -> int:
    from . import report

    if len(args.comparison) > 1:
        return _main_matrix(args)
    source = Path(args.comparison[0])
    try:
        comparison = report.load_comparison(source)
    except report.ReportInputError as e:
        return _error(str(e))
    source_dir = source if source.is_dir() else source.parent
    output = Path(args.output) if args.output else (source_dir / "report.md" if args.format == "markdown" else None)
    links = {"run_url": args.run_url, "artifact_url": args.artifact_url, "report_path": args.report_path}

    plots = []
    plots_dir = args.plots_dir or (str(source_dir) if args.format == "markdown" else None)
    if plots_dir and not args.no_plots and comparison.get("curves"):
        from .plots import write_plots

        try:
            plots = write_plots(comparison, plots_dir)
        except ImportError:
            print("canary: warning: matplotlib is not installed, so no PNG plots were written "
                  "(the report draws its curves as Mermaid charts instead)", file=sys.stderr)
        except OSError as e:
            return _error(f"{plots_dir}: cannot write plots ({e.strerror or e}). Pass a writable --plots-dir or --no-plots.")

    if args.format == "markdown":
        base = (output or source_dir / "report.md").parent
        text = report.render_markdown(comparison, plots=[(m, _relative(p, base)) for m, p in plots], **links)
    elif args.format == "check":
        text = report.render(comparison, "check", config_path_override=args.config_path, **links)
    else:
        text = report.render(comparison, args.format, **links)

    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return EXIT_OK
    try:
        from .results import write_atomic

        write_atomic(output, text)  # 0644 whatever the umask: the next step may run as another user
    except OSError as e:
        return _error(f"{output}: cannot write the report ({e.strerror or e}).")
    print(f"{args.format} report: {output}" + (f" ({len(plots)} plots in {plots_dir})" if plots else ""),
          file=sys.stderr)
    return EXIT_OK


def _main_matrix(args) -> int:
    """Several comparisons as one report. Every file must be readable: a file named on the command line
    that is not is a mistake to fix (the action, reading downloaded artifacts, leaves bad ones out)."""
    from . import report
    from .report_matrix import MatrixEntry, render_matrix

    entries = []
    for name in args.comparison:
        try:
            entries.append(MatrixEntry(name, report.load_comparison(name)))
        except report.ReportInputError as e:
            return _error(str(e))
    if args.report_path or args.config_path or args.plots_dir:
        print("canary: warning: --report-path, --config-path and --plots-dir apply to one comparison; with several "
              "they are ignored (each config's report comes from its own `canary report`)", file=sys.stderr)
    text = render_matrix(entries, args.format, run_url=args.run_url, artifacts_url=args.artifact_url,
                         name=args.matrix_name)
    if not args.output:
        sys.stdout.write(text)
        sys.stdout.flush()
        return EXIT_OK
    try:
        from .results import write_atomic

        write_atomic(Path(args.output), text)
    except OSError as e:
        return _error(f"{args.output}: cannot write the report ({e.strerror or e}).")
    print(f"{args.format} report of {len(entries)} configs: {args.output}", file=sys.stderr)
    return EXIT_OK
