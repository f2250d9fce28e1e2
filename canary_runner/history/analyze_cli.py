"""`canary history analyze`: change points over a config's history on main.

    canary history analyze --baseline branch:canary-baselines --config dpo_smoke [--metric step_time_s] [--json]

--json prints {"config": ..., "change_points": [{"metric", "commit", "index", "before", "after", "change",
"significance", "kind"}, ...]} (significance: a two-sided p-value, see canary_runner/history/detect.py).
Exit codes: 0 done, whatever was found (change points are data, not a failure); 2 bad input (unknown
config, no history, a metric that does not exist); 3 the store could not be read.
GitHub access (branch:, artifact:): --repo or $GITHUB_REPOSITORY, --token or $GITHUB_TOKEN ($GH_TOKEN),
--api-url or $GITHUB_API_URL.
"""

from __future__ import annotations

import json
import sys

from .index import METRICS

EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED = 0, 2, 3


class UsageError(Exception):
    """Bad input (exit 2)."""


def add_analyze_arguments(p) -> None:
    from .detect import DEFAULT_ALPHA, DEFAULT_MIN_CHANGE

    p.add_argument("--baseline", required=True, metavar="SPEC",
                   help="the store the baselines are pushed to: path:DIR, branch:NAME or artifact:NAME")
    p.add_argument("--config", required=True, metavar="NAME", help="config name (run.config_name), e.g. dpo_smoke")
    p.add_argument("--hardware", metavar="KEY", help="hardware key (default: the store's only one for the config)")
    p.add_argument("--metric", action="append", metavar="M",
                   help=f"a metric to analyse (repeatable; default all: {', '.join(METRICS)})")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"the largest p-value reported (default {DEFAULT_ALPHA})")
    p.add_argument("--min-change", type=float, default=DEFAULT_MIN_CHANGE,
                   help=f"the smallest relative shift reported (default {DEFAULT_MIN_CHANGE})")
    p.add_argument("--json", action="store_true", help="print the change points as JSON")
    g = p.add_argument_group("GitHub (branch: and artifact: stores)")
    g.add_argument("--repo", help="owner/name (default: $GITHUB_REPOSITORY)")
    g.add_argument("--token", help="API token (default: $GITHUB_TOKEN or $GH_TOKEN; never printed)")
    g.add_argument("--api-url", help="REST API root (default: $GITHUB_API_URL or https://api.github.com)")


def _client(args, spec):
    from ..baselines.spec import PathSpec
    from ..github.client import client_from_env

    if isinstance(spec, PathSpec):
        return None
    try:
        return client_from_env(args.repo, args.token, args.api_url, what=str(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def load_index(args):
    from ..baselines.spec import parse_baseline_spec
    from .store import read_index

    spec = parse_baseline_spec(args.baseline)
    client = _client(args, spec)
    if client is None:
        return read_index(spec, args.config, args.hardware, workspace=None)
    with client:
        return read_index(spec, args.config, args.hardware, client=client)


def run_analyze(args) -> int:
    from ..baselines.model import BaselineError
    from ..baselines.spec import BaselineSpecError
    from .detect import Settings, detect
    from .store import NoHistory

    try:
        metrics = args.metric or list(METRICS)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise UsageError(f"unknown metric {', '.join(map(repr, unknown))}; the history keeps {', '.join(METRICS)}")
        if not 0 < args.alpha < 1 or args.min_change < 0:
            raise UsageError("--alpha must lie in (0, 1) and --min-change be >= 0")
        index = load_index(args)
    except (UsageError, BaselineSpecError, NoHistory) as exc:
        print(f"canary history: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BaselineError as exc:  # the store exists but could not be read
        print(f"canary history: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    found = detect(index, metrics, Settings(alpha=args.alpha, min_change=args.min_change))
    if args.json:
        print(json.dumps({"config": args.config, "change_points": [cp.to_json() for cp in found]}, indent=2))
        return EXIT_OK
    n = len(index.entries)
    span = f"{index.entries[0].sha[:12]}..{index.entries[-1].sha[:12]}" if n else "no commits"
    print(f"{args.config} on {index.hardware_key}: {n} commit(s) ({span}), {len(index.acks)} acknowledged")
    if not found:
        print("no change points")
    for cp in found:
        print(f"- {cp.describe()}")
    return EXIT_OK
