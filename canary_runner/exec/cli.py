"""`canary exec`: run an unmodified training script as a canary.

Kept import-light: the `canary` parser imports this module; the launcher loads only in `main`.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

EXIT_BAD_INPUT = 2
TIERS = ("smoke", "perf", "nightly")
# As a canary config's name: it names run directories and baselines.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

DESCRIPTION = """\
Run your own training script as a canary, unmodified: every transformers Trainer it builds (TRL's
SFTTrainer, DPOTrainer, GRPOTrainer ..., a subclass, a plain Trainer) gets the canary's collector,
and DIR/metrics.json is written in the schema of `canary run`, so `canary compare`, `canary report`
and baselines work on it. The command runs as given (no shell); put it after `--`.

  canary exec -o runs/pr -- python train.py --lr 1e-4
  canary exec -o runs/pr --max-steps 30 -- torchrun --nproc_per_node 2 train.py
  canary exec -o runs/pr --timeout 900 -- accelerate launch train.py
  canary compare runs/pr runs/main

Steps stream to DIR/steps.jsonl (one process) or DIR/ranks/rank<N>/steps.jsonl (several, merged
into one metrics.json as `canary run` does). A crash, SIGTERM/SIGINT or the timeout still leaves
metrics.json with the status and the steps done.

Exit codes: 0 completed; 3 crashed, interrupted or timed out; 2 bad usage (nothing ran)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("-o", "--output", metavar="DIR", help="run directory (default: runs/<name>-<UTC time>)")
    parser.add_argument("--name", help="the run's config name in reports and baselines (default: the script's stem)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="cap every Trainer's max_steps at N (epoch-based runs too)")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop the command after S seconds (status timeout)")
    parser.add_argument("--warmup-steps", type=int, default=3, metavar="N",
                        help="steps recorded but left out of the timing statistics (default: 3)")
    parser.add_argument("--tier", choices=TIERS, default="smoke", help="threshold tier recorded for compare (default: smoke)")
    parser.add_argument("--no-summary", action="store_true", help="do not print the summary table")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                        help="the training command, e.g. -- python train.py ARGS")


def _error(message: str) -> int:
    print(f"canary exec: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def default_name(command: list[str]) -> str:
    """The script's stem (`train` for `python scripts/train.py`), else the program's name."""
    from .record import script_of

    script = script_of(command)
    if script and script.startswith("-m "):
        stem = script.removeprefix("-m ").rsplit(".", 1)[-1]  # python -m pkg.train -> train
    else:
        stem = Path(script).stem if script else Path(command[0]).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).lstrip("-._")[:100] or "exec"


def main(args) -> int:
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _error("no command to run: put it after `--`, e.g. canary exec -o runs/pr -- python train.py")
    if command[0].startswith("-") and command[0] != "-":
        return _error(f"unknown option {command[0]!r} before the command; options go before `--`, "
                      "the command after it (see canary exec --help)")
    if args.max_steps is not None and args.max_steps < 1:
        return _error(f"--max-steps must be at least 1 (got {args.max_steps})")
    if args.timeout is not None and args.timeout <= 0:
        return _error(f"--timeout must be a positive number of seconds (got {args.timeout:g})")
    if args.warmup_steps < 0:
        return _error(f"--warmup-steps must be 0 or more (got {args.warmup_steps})")
    if args.name is not None and not NAME.match(args.name):
        return _error(f"--name {args.name!r}: use letters, digits, '.', '_' and '-' (at most 100, the first a "
                      "letter or digit); it names the run's directory and its baselines")
    name = args.name or default_name(command)
    out = Path(args.output or f"runs/{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")

    from .launch import UsageError, execute

    try:
        record, code = execute(command, out, name, max_steps=args.max_steps, warmup_steps=args.warmup_steps,
                               timeout_s=args.timeout, tier=args.tier)
    except UsageError as e:
        return _error(str(e))
    if not args.no_summary:
        from types import SimpleNamespace

        from ..progress import RunProgress

        RunProgress(SimpleNamespace(name=name), enabled=False).print_summary(record, out)
    return code
