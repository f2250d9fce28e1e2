"""`canary history render|ack|notify|accept`: the trend page, acknowledgements and issue notifications.

    canary history render --baseline branch:canary-baselines --config dpo_smoke --config sft_smoke -o site/
    canary history ack 1a2b3c4 --reason "bigger batch: slower steps" --baseline branch:canary-baselines --config dpo_smoke
    canary history notify --baseline branch:canary-baselines --config dpo_smoke
    canary history accept --event "$GITHUB_EVENT_PATH" --baseline branch:canary-baselines --config dpo_smoke

GitHub access: --repo or $GITHUB_REPOSITORY, $GITHUB_TOKEN (or $GH_TOKEN), $GITHUB_API_URL. Exit codes:
0 done, 1 refused (accept: not a trusted `/canary accept`), 2 bad input, 3 the store or GitHub failed.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_FAILED = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input (exit 2)."""


class Failed(Exception):
    """The store or GitHub could not be read or written (exit 3)."""


def _say(message: str) -> None:
    print(f"canary history: {message}", file=sys.stderr)


def _common(p, *, many_configs: bool = False) -> None:
    p.add_argument("--baseline", required=True, metavar="SPEC",
                   help="the store the baselines are pushed to: path:DIR, branch:NAME or artifact:NAME")
    if many_configs:
        p.add_argument("--config", action="append", default=[], metavar="NAME",
                       help="a config to include (repeatable; default: every config of a path: store)")
    else:
        p.add_argument("--config", required=True, metavar="NAME", help="config name, e.g. dpo_smoke")
    p.add_argument("--hardware", metavar="KEY",
                   help="hardware key (default: the store's only one for the config)")
    p.add_argument("--repo", help="owner/name (default: $GITHUB_REPOSITORY)")


# ------------------------------------------------------------------------------------------ helpers
def _repo(args) -> str:
    return args.repo or os.environ.get("GITHUB_REPOSITORY") or ""


def _client(args, spec, *, need: bool = False):
    """A GitHub client for branch:/artifact: stores (or when `need`: issues, comments)."""
    from ..baselines.spec import PathSpec
    from ..github.client import client_from_env

    if isinstance(spec, PathSpec) and not need:
        return None
    try:
        return client_from_env(_repo(args), what="GitHub" if need else str(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _spec(text: str):
    from ..baselines.spec import BaselineSpecError, parse_baseline_spec

    try:
        spec = parse_baseline_spec(text)
    except BaselineSpecError as exc:
        raise UsageError(str(exc)) from None
    if spec.kind == "ref":
        raise UsageError(f"{spec} keeps no history; give the store baselines are pushed to (branch:, path:, artifact:)")
    return spec


def _read(spec, config: str, hardware: str | None, client):
    """The config's index; a config the store has no history for is bad input (exit 2)."""
    from ..baselines.spec import BaselineSpecError
    from .store import HistoryError, NoHistory, read_index

    try:
        return read_index(spec, config, hardware, client=client, workspace=_workspace())
    except (NoHistory, BaselineSpecError) as exc:
        raise UsageError(str(exc)) from None
    except HistoryError as exc:
        raise Failed(str(exc)) from None


def _write(spec, index, update, client, message: str):
    from ..baselines.spec import BaselineSpecError
    from .store import HistoryError, update_index

    try:
        return update_index(spec, index.config, index.hardware_key, update, client=client, workspace=_workspace(),
                            message=message)
    except BaselineSpecError as exc:
        raise UsageError(str(exc)) from None
    except HistoryError as exc:
        raise Failed(str(exc)) from None


def _workspace() -> Path | None:
    """In a GitHub Actions job, path: stores are confined to the workspace, as for baselines."""
    ws = os.environ.get("GITHUB_WORKSPACE")
    return Path(ws) if ws and os.environ.get("GITHUB_ACTIONS") == "true" else None


def _path_configs(spec) -> list[str]:
    """Every config with an index in a path: store (`<dir>/<config>/<hw>/index.json`)."""
    from .index import INDEX_FILE

    root = Path(spec.path)
    return sorted({p.parent.parent.name for p in root.glob(f"*/*/{INDEX_FILE}")}) if root.is_dir() else []


def change_points(index, from_file: list[dict] | None = None) -> list[dict]:
    """The change points of `index`: from a `canary history analyze --json` document when given,
    else from the detector (canary_runner/history/detect.py)."""
    if from_file is not None:
        return [cp for cp in from_file if isinstance(cp, dict)]
    from .detect import detect

    return [{**cp.to_json(), "last_commit": cp.last_commit} for cp in detect(index)]


def _load_change_points(path: str | None) -> dict[str, list[dict]] | None:
    """{config: [change point, ...]} from one or several `analyze --json` documents (a list of them)."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--change-points {path}: cannot read JSON ({exc})") from None
    docs = data if isinstance(data, list) else [data]
    out: dict[str, list[dict]] = {}
    for doc in docs:
        if not (isinstance(doc, dict) and isinstance(doc.get("change_points"), list)):
            raise UsageError(f"--change-points {path}: expected the output of `canary history analyze --json` "
                             '({"config": ..., "change_points": [...]}) or a list of them')
        out.setdefault(str(doc.get("config", "")), []).extend(doc["change_points"])
    return out


def _dispatch(fn, args) -> int:
    try:
        return fn(args)
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_BAD_INPUT
    except Failed as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED


# ------------------------------------------------------------------------------------------- render
def add_render_arguments(p) -> None:
    _common(p, many_configs=True)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="where index.html and <config>.png go")
    p.add_argument("--change-points", metavar="FILE",
                   help="change points from `canary history analyze --json` (default: run the detector here)")
    p.add_argument("--no-png", action="store_true", help="only index.html")


def run_render(args) -> int:
    return _dispatch(_render, args)


def _render(args) -> int:
    from .page import ConfigHistory, write_site

    spec = _spec(args.baseline)
    client = _client(args, spec)
    configs = args.config or (_path_configs(spec) if spec.kind == "path" else [])
    if not configs:
        raise UsageError(f"no configs to render: {spec} has no <config>/<hardware>/index.json"
                         if spec.kind == "path" else f"name the configs to render with --config (for {spec})")
    given = _load_change_points(args.change_points)
    histories = []
    for config in configs:
        index = _read(spec, config, args.hardware, client)
        histories.append(ConfigHistory(index, change_points(index, given.get(config, []) if given is not None else None)))
    repo = _repo(args) or None
    if repo:
        from .page import REPO

        if not REPO.match(repo):
            raise UsageError(f"repository must look like 'owner/name', got {repo!r}")
    written = write_site(histories, Path(args.output), repo=repo, pngs=not args.no_png,
                         generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    for name, path in written.items():
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- ack
def add_ack_arguments(p) -> None:
    p.add_argument("sha", help="the commit on main whose shift is intended")
    p.add_argument("--reason", required=True, help="why the shift is intended (one line, at most 300 characters)")
    _common(p)
    p.add_argument("--metric", help="only this metric's shift (default: every metric at this commit)")
    p.add_argument("--by", default="", metavar="LOGIN", help="who acknowledges it (default: $GITHUB_ACTOR or $USER)")


def run_ack(args) -> int:
    return _dispatch(_ack, args)


def _ack(args) -> int:
    from .acks import AckError, add_ack
    from .index import new

    by = args.by or os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or ""
    try:  # check the input before touching the store
        ack = add_ack(new(args.config, ""), args.sha, args.reason, by=by, metric=args.metric)
    except AckError as exc:
        raise UsageError(str(exc)) from None
    spec = _spec(args.baseline)
    client = _client(args, spec)
    index = _read(spec, args.config, args.hardware, client)
    if not any(e.sha.startswith(ack.sha) or ack.sha.startswith(e.sha) for e in index.entries):
        newest = ", ".join(e.sha[:12] for e in index.entries[-3:]) or "none"
        raise UsageError(f"commit {ack.sha} has no entry in the history of {args.config} on {index.hardware_key} "
                         f"(newest: {newest}); give a commit of main that pushed a baseline")
    full = next(e.sha for e in index.entries if e.sha.startswith(ack.sha) or ack.sha.startswith(e.sha))
    _write(spec, index, lambda idx: add_ack(idx, full, args.reason, by=by, metric=args.metric), client,
           f"canary history: ack {full[:12]} for {args.config} [skip ci]")
    print(f"acknowledged {full[:12]} ({args.metric or 'every metric'}) in {args.config} on {index.hardware_key}: "
          f"{ack.reason}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------- notify
def add_notify_arguments(p) -> None:
    _common(p)
    p.add_argument("--label", default="canary-regression", help="label of the issues (default: canary-regression)")
    p.add_argument("--change-points", metavar="FILE",
                   help="change points from `canary history analyze --json` (default: run the detector here)")


def run_notify(args) -> int:
    return _dispatch(_notify, args)


def _notify(args) -> int:
    from ..github.client import GitHubError
    from .issues import sync_issues

    spec = _spec(args.baseline)
    client = _client(args, spec, need=True)
    store_client = client if spec.kind != "path" else None
    index = _read(spec, args.config, args.hardware, store_client)
    index = _settle_pr_acks(spec, index, client, store_client)
    given = _load_change_points(args.change_points)
    points = change_points(index, given.get(args.config, []) if given is not None else None)
    try:
        done = sync_issues(client, index, points, label=args.label, baseline=str(spec))
    except GitHubError as exc:
        raise Failed(f"cannot update the issues: {exc}") from None
    print(f"{args.config}: {len(points)} change point(s)")
    for d in done:
        print(f"  issue #{d.number} {d.action}: {d.metric} at {d.commit[:12]}")
    return EXIT_OK


def _settle_pr_acks(spec, index, client, store_client):
    """Acks recorded for a PR's head commit (`/canary accept`) move to the commit the PR's merge made on
    main, once merged, so the detector and the page find them on main's history."""
    from ..github.client import GitHubError
    from .acks import merged_commits, move_acks, pending

    waiting = pending(index)
    if not waiting:
        return index
    try:
        moves = merged_commits(client, waiting)
    except GitHubError as exc:
        _say(f"warning: cannot look up the pull requests of {len(waiting)} acknowledgement(s): {exc}")
        return index
    if not moves or spec.kind == "artifact":
        return index
    index = _write(spec, index, lambda idx: move_acks(idx, moves), store_client,
                   f"canary history: acks of merged pull requests moved to main for {index.config} [skip ci]")
    for head, merge in moves.items():
        print(f"acknowledgement of {head[:12]} moved to its merge commit {merge[:12]}")
    return index


# ------------------------------------------------------------------------------------------- accept
def add_accept_arguments(p) -> None:
    p.add_argument("--event", required=True, metavar="FILE", help="the issue_comment event payload ($GITHUB_EVENT_PATH)")
    p.add_argument("--baseline", required=True, metavar="SPEC", help="the store the baselines are pushed to")
    p.add_argument("--config", action="append", required=True, metavar="NAME",
                   help="config(s) the acknowledgement is recorded for (repeatable)")
    p.add_argument("--hardware", metavar="KEY", help="hardware key (default: the store's only one per config)")
    p.add_argument("--repo", help="owner/name (default: $GITHUB_REPOSITORY)")


def run_accept(args) -> int:
    return _dispatch(_accept, args)


def _accept(args) -> int:
    from ..github.client import GitHubError
    from .acks import FULL_SHA, Refused, add_ack, parse_accept_event

    try:
        event = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--event {args.event}: cannot read the event payload ({exc})") from None
    try:
        request = parse_accept_event(event)
    except Refused as exc:
        _say(f"refused: {exc}")
        return EXIT_REFUSED
    spec = _spec(args.baseline)
    client = _client(args, spec, need=True)
    try:
        pr = client.get_json(client.repo_path(f"pulls/{request.pr_number}"))
    except GitHubError as exc:
        raise Failed(f"cannot read pull request #{request.pr_number}: {exc}") from None
    head = str(((pr or {}).get("head") or {}).get("sha") or "")
    if not FULL_SHA.match(head):
        raise Failed(f"pull request #{request.pr_number} has no head commit sha in the API's answer")
    store_client = client if spec.kind != "path" else None
    recorded = []
    indexes = [_read(spec, config, args.hardware, store_client) for config in args.config]  # all found first
    for config, index in zip(args.config, indexes):
        _write(spec, index, lambda idx: add_ack(idx, head, request.reason, by=request.login, metric=request.metric),
               store_client, f"canary history: ack {head[:12]} for {config} (/canary accept by {request.login}) [skip ci]")
        recorded.append(f"{config} ({index.hardware_key})")
    print(f"acknowledged {head[:12]} of #{request.pr_number} for {', '.join(recorded)}: {request.reason}")
    try:
        client.post_json(client.repo_path(f"issues/{request.pr_number}/comments"), {
            "body": f"Recorded: the shift of {head[:12]} ({request.metric or 'every metric'}) is acknowledged as "
                    f"intended for {', '.join(f'`{c}`' for c in args.config)}, by @{request.login}."})
    except GitHubError as exc:  # the ack is stored; the reply is a courtesy
        _say(f"warning: acknowledged, but could not reply on #{request.pr_number}: {exc}")
    return EXIT_OK
