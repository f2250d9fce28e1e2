"""`canary baseline pull|push|show`: the baseline sources (path:, branch:, artifact:) from a shell.

    canary baseline pull branch:canary-baselines --metrics runs/current -o baseline/
    canary baseline push branch:canary-baselines runs/current          # needs a token
    canary baseline show branch:canary-baselines --config dpo_smoke
    canary baseline history --baseline branch:canary-baselines --config dpo_smoke [--metric step_time_s]

GitHub access: `--token` or $GITHUB_TOKEN (or $GH_TOKEN), `--repo` or $GITHUB_REPOSITORY, `--api-url` or
$GITHUB_API_URL. Without a token, reads are anonymous (public repositories only). The token is never
printed. Exit codes: 0 done (also "no baseline there", which is said on stderr), 2 bad input, 3 the
source could not be read or written.

Top-level imports stay light: this module is imported by `canary --help`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..github.client import GitHubClient, client_from_env
from .model import METRICS_FILE, BaselineError, BaselineLookup, parse_run, unfit_as_baseline
from ..history.index import METRICS
from .spec import ArtifactSpec, BaselineSpecError, BranchSpec, PathSpec, parse_baseline_spec

EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED = 0, 2, 3


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")

    def github_args(p) -> None:
        g = p.add_argument_group("GitHub (branch: and artifact: sources)")
        g.add_argument("--repo", help="owner/name (default: $GITHUB_REPOSITORY)")
        g.add_argument("--token", help="API token (default: $GITHUB_TOKEN or $GH_TOKEN; never printed)")
        g.add_argument("--api-url", help="REST API root (default: $GITHUB_API_URL or https://api.github.com)")
        g.add_argument("--default-branch", help="artifact: only artifacts from runs on this branch count "
                                                "(default: the repository's default branch)")

    def key_args(p, hardware_help: str) -> None:
        p.add_argument("--metrics", metavar="RUN", help="take the config name and hardware key from this "
                                                       "metrics.json (or run directory)")
        p.add_argument("--config", help="config name (run.config_name), e.g. dpo_smoke")
        p.add_argument("--hardware", help=hardware_help)

    p = sub.add_parser("pull", help="fetch a baseline's metrics.json into a directory")
    p.add_argument("source", help="path:<dir>, branch:<name> or artifact:<name>")
    key_args(p, "hardware key (default: this machine's, see `canary env`)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write metrics.json into")
    p.add_argument("--history", type=int, default=0, metavar="N",
                   help="also fetch up to N older runs into DIR/history/ (branch: and path: sources)")
    github_args(p)

    p = sub.add_parser("push", help="store a run's metrics.json as the baseline (branch: or path:)")
    p.add_argument("source", help="branch:<name> or path:<dir>")
    p.add_argument("run", help="metrics.json or a run directory of `canary run`")
    p.add_argument("--sha", "--commit", dest="sha", help="commit the run measured (default: the run's git_sha, "
                                                         "else $GITHUB_SHA, else `git rev-parse HEAD`)")
    p.add_argument("--keep-history", type=int, default=10, metavar="N",
                   help="full records (history/*.json) kept (default 10)")
    p.add_argument("--history-max", type=int, default=1000, metavar="N",
                   help="commits kept in the history index (default 1000)")
    p.add_argument("--history-days", type=float, default=365, metavar="D",
                   help="days of history kept in the index (default 365)")
    p.add_argument("--no-create-branch", action="store_true", help="fail instead of creating a missing branch")
    github_args(p)

    p = sub.add_parser("show", help="print what a source holds for a config (and hardware key)")
    p.add_argument("source", help="path:<dir>, branch:<name> or artifact:<name>")
    key_args(p, "hardware key (default: every hardware key the source has for the config)")
    p.add_argument("--history", type=int, default=0, metavar="N", help="also list up to N older runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    github_args(p)

    p = sub.add_parser("history", help="print the history index of a config: one line per commit")
    p.add_argument("--baseline", required=True, metavar="SPEC", help="path:<dir>, branch:<name> or artifact:<name>")
    p.add_argument("--config", required=True, help="config name (run.config_name), e.g. dpo_smoke")
    p.add_argument("--hardware", help="hardware key (default: the store's only one for the config)")
    p.add_argument("--metric", choices=METRICS, help="print only this metric")
    p.add_argument("--json", action="store_true", help="print the index as JSON")
    github_args(p)


def main(args) -> int:
    try:
        return {"pull": _pull, "push": _push, "show": _show,
                "history": _history}[args.baseline_command](args)
    except (UsageError, BaselineSpecError) as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    except BaselineError as exc:
        return _fail(str(exc), EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(f"canary baseline: error: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------------------------ helpers
def _client(args, spec) -> GitHubClient | None:
    if isinstance(spec, PathSpec):
        return None
    try:
        return client_from_env(args.repo, args.token, args.api_url, what=str(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _read_run(path: str) -> tuple[bytes, dict]:
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.is_file():
        raise UsageError(f"{path}: no metrics.json there (pass a metrics.json or a `canary run` directory)")
    raw = p.read_bytes()
    try:
        run = parse_run(raw, str(p))
    except BaselineError as exc:
        raise UsageError(str(exc)) from None
    if not run.config_name or not run.hardware_key:
        raise UsageError(f"{p}: has no run.config_name or env.hardware_key; is it a canary metrics.json?")
    return raw, run.metrics


def _key(args, *, need_hardware: bool) -> tuple[str, str | None]:
    config, hardware = _given_key(args, need_hardware=need_hardware)
    from .model import path_segment

    for what, value in (("config name", config), ("hardware key", hardware)):
        try:  # a name that is a path (`..`, `.`, empty) names no baseline: say so, not a traceback
            if value is not None:
                path_segment(value)
        except ValueError:
            raise UsageError(f"{what} {value!r} cannot name a baseline: use the run's config name (e.g. "
                             "dpo_smoke) and hardware key (see `canary env`)") from None
    return config, hardware


def _given_key(args, *, need_hardware: bool) -> tuple[str, str | None]:
    if args.metrics:
        _, metrics = _read_run(args.metrics)
        config, hardware = metrics["run"]["config_name"], metrics["env"]["hardware_key"]
        return args.config or config, args.hardware or hardware
    if not args.config:
        raise UsageError("say which baseline: --config NAME (and --hardware KEY), or --metrics RUN")
    hardware = args.hardware
    if hardware is None and need_hardware:
        from ..collect.env import fingerprint  # imports torch: only when the key must be measured

        hardware = fingerprint()["hardware_key"]
    return args.config, hardware


def _lookup(spec, client, config: str, hardware: str, args, history: int) -> BaselineLookup:
    from . import load_baseline

    return load_baseline(spec, config_name=config, hardware_key=hardware, client=client,
                         default_branch=getattr(args, "default_branch", None), history=history)


# --------------------------------------------------------------------------------------------- pull
def _pull(args) -> int:
    spec = parse_baseline_spec(args.source)
    if args.history < 0:
        raise UsageError("--history must be 0 or more")
    config, hardware = _key(args, need_hardware=True)
    client = _client(args, spec)
    try:
        lookup = _lookup(spec, client, config, hardware, args, args.history)
    finally:
        if client:
            client.close()
    if not lookup.found:
        print(f"canary baseline: {lookup.message}", file=sys.stderr)
        return EXIT_OK
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory; pass a directory to write metrics.json into")
    _write_pulled(out, [run.raw for run in lookup.runs])
    print(f"{lookup.message}\nwrote {out / METRICS_FILE}" +
          (f" and {len(lookup.runs) - 1} older run(s) in {out / 'history'}" if len(lookup.runs) > 1 else ""))
    return EXIT_OK


def _write_pulled(out: Path, raws: list[bytes]) -> None:
    """metrics.json and history/NNN.json under `out`. Each file is replaced by an atomic rename, so a
    symlink already there is replaced, never written through; a symlinked history/ is refused."""
    from ..results import write_atomic
    from .local import refuse_symlinks

    try:
        write_atomic(out / METRICS_FILE, raws[0])
        if len(raws) > 1:
            refuse_symlinks(out, out / "history" / METRICS_FILE)
        for i, raw in enumerate(raws[1:], 1):
            write_atomic(out / "history" / f"{i:03d}.json", raw)
    except OSError as exc:
        raise BaselineError(f"cannot write the baseline under {out}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------- push
def _push(args) -> int:
    spec = parse_baseline_spec(args.source)
    if args.keep_history < 1:
        raise UsageError("--keep-history must be at least 1")
    raw, metrics = _read_run(args.run)
    unfit = unfit_as_baseline(metrics)
    if unfit:
        raise UsageError(f"{args.run}: {unfit}; only completed runs with steps and no NaN/Inf can become a baseline")
    if isinstance(spec, ArtifactSpec):
        raise UsageError("artifact: baselines are written by uploading metrics.json with actions/upload-artifact "
                         f"under the name {spec.name!r} from a run on the default branch")
    if args.history_max < 1 or args.history_days <= 0:
        raise UsageError("--history-max must be at least 1 and --history-days more than 0")
    from ..history.mergebase import head_commit

    sha = (args.sha or (metrics.get("run") or {}).get("git_sha") or os.environ.get("GITHUB_SHA")
           or head_commit(Path.cwd()))
    if isinstance(spec, PathSpec):
        from .local import write_path_baseline

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = write_path_baseline(spec.path, raw, keep_history=args.keep_history, timestamp=stamp, commit_sha=sha)
        print(f"baseline written to {dest}")
        if sha:
            _index_push(args, spec, metrics, sha, history_file(stamp, sha), dest.parent, None)
        else:
            print("note: no commit known (pass --sha): the history index was not updated", file=sys.stderr)
        return EXIT_OK
    if not sha:
        raise UsageError("which commit does this baseline measure? pass --sha (the run has no git_sha)")
    client = _client(args, spec)
    if client.token_kind == "none":
        raise UsageError(f"writing to {spec} needs a token: pass --token or set GITHUB_TOKEN "
                         "(with `contents: write`)")
    from .branch import write_branch_baseline

    assert isinstance(spec, BranchSpec)
    with client:
        result = write_branch_baseline(client, spec.branch, raw, commit_sha=sha, keep_history=args.keep_history,
                                       default_branch=args.default_branch, create_branch=not args.no_create_branch)
        folder = result.path.rsplit("/", 1)[0]
        _index_push(args, spec, metrics, sha, result.history_path[len(folder) + 1:], None,
                    {t[len(folder) + 1:] for t in result.trimmed if t.startswith(folder + "/")}, client=client)
    notes = [f"created branch {result.branch!r}"] if result.created_branch else []
    if result.conflicts:
        notes.append(f"{result.conflicts} conflicting write(s) retried")
    if result.trimmed:
        notes.append(f"{len(result.trimmed)} old history entr{'y' if len(result.trimmed) == 1 else 'ies'} trimmed")
    print(f"baseline written to branch {result.branch!r}: {result.path} (commit {str(result.commit_sha)[:12]})"
          + (f"; {'; '.join(notes)}" if notes else ""))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def history_file(stamp: str, sha: str) -> str:
    """The name write_*_baseline give the run's full record, relative to its <config>/<hardware> folder."""
    from .model import HISTORY_DIR, path_segment

    return f"{HISTORY_DIR}/{stamp}-{path_segment(str(sha)[:12])}.json"


def _index_push(args, spec, metrics: dict, sha: str, file: str, folder: Path | None, trimmed: set[str] | None,
                client=None) -> None:
    """Add the pushed run to the history index (parent from git when the checkout has it)."""
    from ..history import index as ix
    from ..history.mergebase import parent_of
    from ..history.store import record_baseline

    if not ix.SHA.match(sha):
        print(f"note: commit {sha[:40]!r} is not a hex sha: the history index was not updated", file=sys.stderr)
        return
    present = (lambda f: (folder / f).is_file()) if folder is not None else (lambda f: f not in (trimmed or set()))
    idx = record_baseline(spec, metrics, sha=sha, parent=parent_of(sha, Path.cwd()), file=file,
                          keep=args.history_max, max_age_days=args.history_days, present=present, client=client)
    print(f"history index: {len(idx.entries)} commit(s) for {idx.config} on {idx.hardware_key}")


# ------------------------------------------------------------------------------------------ history
def _history(args) -> int:
    from ..history import index as ix
    from ..history.store import NoHistory, read_index

    spec = parse_baseline_spec(args.baseline)
    if spec.kind == "ref":
        raise UsageError(f"{spec} keeps no history; give the store baselines are pushed to (branch:, path:, artifact:)")
    for what, value in (("config name", args.config), ("hardware key", args.hardware)):
        try:
            if value is not None:
                from .model import path_segment

                path_segment(value)
        except ValueError:
            raise UsageError(f"{what} {value!r} cannot name a baseline (use e.g. dpo_smoke)") from None
    client = _client(args, spec)
    try:
        idx = read_index(spec, args.config, args.hardware, client=client,
                         default_branch=getattr(args, "default_branch", None))
    except NoHistory as exc:
        if args.json:
            print(json.dumps({"config": args.config, "hardware_key": args.hardware, "found": False,
                              "message": str(exc), "entries": [], "acks": []}, indent=1))
        else:
            print(f"canary baseline: {exc}", file=sys.stderr)
        return EXIT_OK
    finally:
        if client:
            client.close()
    if args.json:
        doc = {"found": True, **idx.to_json()}
        if args.metric:
            doc["metric"] = args.metric
            doc["series"] = [{"sha": e.sha, "timestamp": e.timestamp, "value": v} for e, v in idx.series(args.metric)]
        print(json.dumps(doc, indent=1))
        return EXIT_OK
    metrics = [args.metric] if args.metric else list(ix.METRICS)
    print(f"{spec}  config {idx.config}  hardware {idx.hardware_key}  {len(idx.entries)} commit(s), oldest first")
    print(f"  {'commit':<12} {'date':<20} " + " ".join(f"{m:>15}" for m in metrics))
    for e in idx.entries:
        cells = " ".join(f"{_fmt(e.values.get(m)):>15}" for m in metrics)
        ack = "  (acknowledged)" if idx.acked(e.sha) else ""
        print(f"  {e.sha[:12]:<12} {e.timestamp[:19]:<20} {cells}{ack}")
    return EXIT_OK


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.6g}"


# --------------------------------------------------------------------------------------------- show
def _describe(run) -> dict:
    m = run.metrics
    r = m.get("run") or {}
    step = ((m.get("summary") or {}).get("step_time_s") or {})
    return {"origin": run.origin, "config_name": run.config_name, "hardware_key": run.hardware_key,
            "status": m.get("status"), "git_sha": r.get("git_sha"), "started_at": r.get("started_at"),
            "steps_completed": r.get("steps_completed"), "step_time_median_s": step.get("median"),
            "sha256": run.digest}


def _show(args) -> int:
    spec = parse_baseline_spec(args.source)
    config, hardware = _key(args, need_hardware=False)
    client = _client(args, spec)
    lookups: list[BaselineLookup] = []
    try:
        if hardware:
            lookups.append(_lookup(spec, client, config, hardware, args, args.history))
        else:
            # Ask for an impossible key: the answer lists the hardware keys the source has.
            probe = _lookup(spec, client, config, "(any)", args, 0)
            for hw in probe.available_hardware:
                lookups.append(_lookup(spec, client, config, hw, args, args.history))
            if not probe.available_hardware:
                lookups.append(probe)
    finally:
        if client:
            client.close()
    if args.json:
        print(json.dumps([{"source": lk.source, "config_name": lk.config_name,
                           "hardware_key": None if lk.hardware_key == "(any)" else lk.hardware_key,
                           "found": lk.found, "message": lk.message,
                           "runs": [_describe(r) for r in lk.runs]} for lk in lookups], indent=2))
        return EXIT_OK
    for lk in lookups:
        if not lk.found:
            print(lk.message)
            continue
        print(f"{lk.source}  config {lk.config_name}  hardware {lk.hardware_key}")
        for i, run in enumerate(lk.runs):
            d = _describe(run)
            median = d["step_time_median_s"]
            timing = f"{median * 1000:.1f} ms/step" if isinstance(median, (int, float)) else "no timing"
            label = "current" if i == 0 else f"history {i}"
            print(f"  {label:<10} {str(d['git_sha'] or '-')[:12]:<12} {d['status'] or '-':<10} "
                  f"{d['steps_completed'] or 0:>5} steps  {timing:<16} {d['started_at'] or ''}  {d['origin']}")
    return EXIT_OK
