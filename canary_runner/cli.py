"""The `canary` command line. Exit codes: 0 pass, 1 regression, 2 bad input or usage, 3 run crashed.

User errors print one clear message (what is wrong, how to fix it) and never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path

from . import logsafe
from .config import ConfigError, load_config
from .runner import EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_OK

REPO_ROOT = Path(__file__).resolve().parent.parent


def configs_dir() -> Path:
    """Shipped configs: the repo's configs/ (a checkout, or the package's copy when installed)."""
    for candidate in (REPO_ROOT / "configs", Path(__file__).resolve().parent / "configs"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT / "configs"


def resolve_config_path(name: str) -> Path:
    """A path as given, or the name of a shipped config (`dpo_embedded`)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    shipped = configs_dir() / f"{name}.yaml"
    return shipped if shipped.exists() else path


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"canary: error: {message}", file=sys.stderr)
    return code


# -- canary run ---------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    path = resolve_config_path(args.config)
    try:
        cfg = load_config(path, args.set or [])
    except ConfigError as e:
        return fail(str(e))
    out = Path(args.output or f"runs/{cfg.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    from .plugins import use_workspace, workspace_of

    use_workspace(workspace_of(path))
    if args.install:
        return run_installed(args, path, out)
    from .distributed import run_canary
    from .progress import RunProgress
    from .quiet import quiet_libraries
    from .runner import RecordNotWritten, SetupError

    if not args.verbose:
        quiet_libraries()
    with RunProgress(cfg, enabled=not args.no_progress) as progress:
        try:
            record, code = run_canary(cfg, out, config_path=str(path), on_step=progress.step)
        except SetupError as e:
            from .workload.sources import HubUnreachable

            if isinstance(e.__context__, HubUnreachable):  # a network failure, not a bad config
                return fail(f"{path}: the run could not start, a network failure: {e}", EXIT_CRASHED)
            return fail(f"{path}: {e}")
        except RecordNotWritten as e:  # nothing lost, but not where it was asked to go
            if e.where is not None:
                progress.print_summary(e.record, e.where)
            return fail(str(e), EXIT_CRASHED)
    progress.print_summary(record, out)
    if code == 0 and cfg.equivalence and not args.no_equivalence:
        from . import equivalence, results

        record["equivalence"] = equivalence.run_all(cfg, out)
        results.write_json_atomic(out / "metrics.json", record)
    return code


def run_installed(args, path: Path, out: Path) -> int:
    """`canary run --install ...`: install the lines into a fresh overlay environment on top of this
    one, then run the same command there; the overlay goes away afterwards."""
    import os

    from . import userenv
    from .child import run_forwarding_signals

    try:
        with userenv.overlay(args.install) as env:
            print(f"canary: installed in an overlay environment: {userenv.describe(env.changed)}", file=sys.stderr)
            cmd = [str(env.python), "-m", "canary_runner.cli", "run", str(path), "-o", str(out),
                   *(f"--set={s}" for s in args.set or []), *(["--no-progress"] if args.no_progress else []),
                   *(["--verbose"] if args.verbose else []), *(["--no-equivalence"] if args.no_equivalence else [])]
            return run_forwarding_signals(cmd, env=env.env(os.environ))
    except userenv.InstallError as e:
        return fail(str(e))


# -- canary env / configs -------------------------------------------------------------------------------


def cmd_env(args) -> int:
    from .collect.env import fingerprint

    fp = fingerprint()
    if args.json:
        print(json.dumps(fp, indent=2))
        return EXIT_OK
    print(f"hardware_key  {fp['hardware_key']}")
    print(f"cpu           {fp['cpu_model']} ({fp['cpu_count']} cores)")
    gpu = fp["gpu"]
    gpu_text = f"{gpu['count']} x {gpu['name']} (driver {gpu['driver']})" if gpu else "none"
    print(f"gpu           {gpu_text}")
    print(f"cuda/cudnn    {fp['cuda']} / {fp['cudnn']}   nccl {fp['nccl']}")
    print(f"python        {fp['python']} on {fp['platform']}")
    for pkg, version in fp["packages"].items():
        print(f"{pkg:<13} {version or '-'}")
    return EXIT_OK


def cmd_configs(args) -> int:
    import yaml

    rows = []
    for path in sorted(configs_dir().glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            data = {}
        model = (data.get("model") or {}).get("name", "embedded:tiny-llama")
        rows.append((path.stem, data.get("training_type", "?"), data.get("tier", "smoke"), model))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"{'config':<{width}}  type    tier     model")
    for name, ttype, tier, model in rows:
        print(f"{name:<{width}}  {ttype:<6}  {tier:<7}  {model}")
    print(f"\n{len(rows)} configs in {configs_dir()}; run one with `canary run NAME`.")
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------------

# Subcommands that live in their own packages: (name, module, help). Each module provides
# add_arguments(parser) and main(args) -> exit code, so this file stays a thin dispatcher.
EXTERNAL = [
    ("compare", "canary_runner.compare.cli", "compare a run with a baseline and write comparison.json"),
    ("ab", "canary_runner.ab_cli", "measure a change's base and head side by side on this machine, pair by pair"),
    ("calibrate", "canary_runner.compare.calibrate", "run a config N times and write thresholds fitted to this machine's noise"),
    ("report", "canary_runner.report_cli", "render comparison.json as a PR comment, job summary, check output or markdown"),
    ("baseline", "canary_runner.baselines.cli", "pull, push or show baselines (path:, branch:, artifact:)"),
    ("equivalence", "canary_runner.equivalence_cli", "run a config's equivalence classes: variants that must train identically"),
    ("exec", "canary_runner.exec.cli", "run your own training script as a canary: canary exec -o DIR -- python train.py"),
    ("history", "canary_runner.history.cli", "the history of main: trend page, change points, acknowledgements"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canary", description="RLHF training canaries: run, compare, report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train a canary config and write metrics.json")
    p.add_argument("config", help="a config file, or the name of a shipped config (see `canary configs`)")
    p.add_argument("-o", "--output", help="run directory (default: runs/<config>-<UTC time>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. train.max_steps=10")
    p.add_argument("--install", action="append", metavar="PIP_ARGS",
                   help="install the code under review first, into an overlay environment on top of the pinned "
                        "stack: pip arguments such as '-e .', '-r requirements.txt', 'trl==1.13.0' (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (still prints the summary)")
    p.add_argument("-v", "--verbose", action="store_true", help="show library warnings")
    p.add_argument("--no-equivalence", action="store_true",
                   help="skip the config's equivalence classes (they run after the canary by default)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("env", help="print the environment fingerprint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("configs", help="list the shipped configs")
    p.set_defaults(func=cmd_configs)

    for name, module, help_text in EXTERNAL:
        mod = import_module(module)
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(func=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # In a GitHub Actions step, names and reasons printed from runs (a fork's artifact, say) must not
    # become workflow commands: everything printed goes through logsafe (the CLI issues no commands).
    guard = os.environ.get("GITHUB_ACTIONS") == "true" and not isinstance(sys.stdout, logsafe.SafeStream)
    raw = sys.stdout, sys.stderr
    if guard:
        sys.stdout, sys.stderr = logsafe.SafeStream(raw[0]), logsafe.SafeStream(raw[1])
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_CRASHED)
    finally:
        if guard:
            logsafe.flush_streams(sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = raw


if __name__ == "__main__":
    sys.exit(main())
