"""`canary history`: read the history of main kept beside the baselines, and act on it.

Each subcommand lives in its own module, which provides `add_<name>_arguments(parser)` and
`run_<name>(args) -> exit code`; this file only dispatches.
"""

from __future__ import annotations

import argparse
from importlib import import_module

# (name, module, help)
SUBCOMMANDS = [
    ("analyze", "canary_runner.history.analyze_cli", "change points (steps and drift) per metric over main's history"),
    ("render", "canary_runner.history.trend_cli", "write the trend page (index.html) and a PNG per config"),
    ("ack", "canary_runner.history.trend_cli", "mark a commit's shift as intended (acknowledged)"),
    ("notify", "canary_runner.history.trend_cli", "open, update or close one GitHub issue per change point"),
    ("accept", "canary_runner.history.trend_cli", "record a `/canary accept` PR comment as an acknowledgement"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="history_command", required=True, metavar="SUBCOMMAND")
    for name, module, help_text in SUBCOMMANDS:
        mod = import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(mod, f"add_{name}_arguments")(p)
        p.set_defaults(history_main=getattr(mod, f"run_{name}"))


def main(args) -> int:
    return args.history_main(args)
