"""The GitHub Action: inputs and event -> run -> baseline -> compare -> report -> publish -> outputs.

GitHub runs the container with the action's inputs as `INPUT_<NAME>` variables (upper-cased, hyphens
kept: `INPUT_GITHUB-TOKEN`), the event payload at `$GITHUB_EVENT_PATH`, and two files to append to:
`$GITHUB_OUTPUT` (step outputs) and `$GITHUB_STEP_SUMMARY` (the job summary). Workflow commands
(`::error::`, `::warning::`, `::group::`) go to standard output.

What this module guarantees, in order of importance:
- bad inputs stop before any training, with one `::error::` per problem, and exit 2;
- the check run is opened `in_progress` before training and always completed, also when the run or this
  action crashed (conclusion failure, with the error);
- the report is written to a file and to the job summary before anything is published, so a GitHub API
  that refuses (fork PRs, read-only tokens, outages) loses nothing; every refusal is said in the log;
- the token is read once, removed from the environment (training code never sees it), never printed;
- the exit code follows the verdict and `fail-on`: 0 pass, 1 regression, 2 bad input, 3 crashed.

Stdlib and light imports only at the top: torch is imported by the runner, only when training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import logsafe

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_CRASHED = 0, 1, 2, 3
MODES = ("pr", "update-baseline", "run-only", "aggregate")
FAIL_ON = ("fail", "warn", "never")
TIERS = ("smoke", "perf", "nightly")
DEFAULT_BASELINE = "branch:canary-baselines"
SUMMARY_LIMIT_BYTES = 1 << 20  # GitHub: 1 MiB per step summary
TOKEN_INPUTS = ("INPUT_GITHUB-TOKEN", "INPUT_GITHUB_TOKEN")

# The action's inputs and their defaults; tests check that action.yml declares the same.
INPUT_DEFAULTS: dict[str, str] = {
    "config": "",
    "tier": "",
    "baseline": DEFAULT_BASELINE,
    "mode": "pr",
    "metrics": "",
    "thresholds": "",
    "github-token": "",  # action.yml: ${{ github.token }}
    "comment": "true",
    "check-name": "",
    "comment-author": "",  # who the sticky comment is written by; default: found from the token
    "install": "",  # the code under review: one pip argument set per line, into an overlay environment
    "command": "",  # a training script run unmodified under `canary exec` (instead of config)
    "max-steps": "",  # command only: cap every Trainer's max_steps
    "max-pairs": "10",  # baseline ref:...: the most A/B pairs before an undecided answer (a warning)
    "budget": "",  # baseline ref:...: seconds the A/B loop may take; empty: no time limit
    "fail-on": "fail",
    "output-dir": "",
    "comparisons": "",  # mode aggregate: the matrix's downloaded comparison.json files (a directory or a glob)
}
OUTPUTS = ("verdict", "metrics-path", "comparison-path", "report-path", "failed-checks")

log = logging.getLogger("canary_runner.action")


class InputError(Exception):
    """One or more bad inputs (exit 2). `problems` holds one user-facing line each."""

    def __init__(self, *problems: str):
        self.problems = [p for p in problems if p]
        super().__init__("; ".join(self.problems))


# ============================================================================ workflow commands and files
# Text from a run, an artifact or a PR is data: encoded inside our commands, neutralised in the log
# (canary_runner.logsafe says how and why).
escape_data, escape_property = logsafe.escape_data, logsafe.escape_property


class Workflow:
    """Talks to the runner: workflow commands on stdout, $GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY.

    `stream` is the raw stdout: the only place a command is written to. Everything else this process
    prints goes through `logsafe.SafeStream` (installed by `main`), which no text can turn into a command."""

    def __init__(self, env: dict[str, str] | os._Environ, stream: TextIO | None = None):
        self.out = stream or sys.stdout
        self.output_file = env.get("GITHUB_OUTPUT") or None
        self.summary_file = env.get("GITHUB_STEP_SUMMARY") or None
        self.summary_bytes = 0
        self.outputs: dict[str, str] = {}

    def command(self, name: str, message: str = "", **props: Any) -> None:
        props_text = ",".join(f"{k}={escape_property(v)}" for k, v in props.items() if v not in (None, ""))
        logsafe.flush_streams(sys.stdout, sys.stderr)  # a partial log line first: the log keeps its order
        self.out.write(f"::{name}{' ' + props_text if props_text else ''}::{escape_data(message)}\n")
        self.out.flush()

    def error(self, message: str, **props: Any) -> None:
        self.command("error", message, **props)

    def warning(self, message: str, **props: Any) -> None:
        self.command("warning", message, **props)

    def notice(self, message: str, **props: Any) -> None:
        self.command("notice", message, **props)

    def group(self, title: str) -> None:
        self.command("group", title)

    def endgroup(self) -> None:
        self.command("endgroup")

    def set_output(self, name: str, value: Any) -> None:
        """Append `name` to $GITHUB_OUTPUT with the heredoc syntax: safe for any value, multiline included."""
        value = "" if value is None else str(value)
        self.outputs[name] = value
        if not self.output_file:
            log.info("output %s=%s", name, value)
            return
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
        while delimiter in value:
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
        try:
            with open(self.output_file, "a", encoding="utf-8") as fh:
                fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        except OSError as exc:
            log.warning("could not write step output %s to $GITHUB_OUTPUT: %s", name, exc)

    def append_summary(self, markdown: str) -> bool:
        """Append to the job summary, within GitHub's 1 MiB per step (cut at a line, saying so)."""
        if not self.summary_file:
            return False
        data = markdown if markdown.endswith("\n") else markdown + "\n"
        room = SUMMARY_LIMIT_BYTES - self.summary_bytes
        if len(data.encode("utf-8")) > room:
            note = "\n… (cut to fit GitHub's 1 MiB job summary limit; the full report is in the run's files)\n"
            budget = max(0, room - len(note.encode("utf-8")))
            cut = data.encode("utf-8")[:budget].decode("utf-8", "ignore")
            data = (cut[: cut.rfind("\n") + 1] if "\n" in cut else "") + note
            if len(data.encode("utf-8")) > room:
                return False
        try:
            with open(self.summary_file, "a", encoding="utf-8") as fh:
                fh.write(data)
        except OSError as exc:
            log.warning("could not write the job summary: %s", exc)
            return False
        self.summary_bytes += len(data.encode("utf-8"))
        return True


# ====================================================================================== inputs
@dataclass
class Inputs:
    config: str = ""
    tier: str = ""
    baseline: str = DEFAULT_BASELINE
    mode: str = "pr"
    metrics: str = ""
    thresholds: str = ""
    token: str | None = field(default=None, repr=False)
    comment: bool = True
    check_name: str = ""
    comment_author: str = ""
    install: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    max_steps: int | None = None
    max_pairs: int = 10
    budget: float | None = None
    fail_on: str = "fail"
    output_dir: str = ""
    comparisons: str = ""

    def __repr__(self) -> str:  # never show the token, even by accident
        return (f"Inputs(config={self.config!r}, tier={self.tier!r}, baseline={self.baseline!r}, mode={self.mode!r}, "
                f"metrics={self.metrics!r}, token={'***' if self.token else None})")


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _input(env, name: str) -> str:
    for key in (f"INPUT_{name.upper()}", f"INPUT_{name.upper().replace('-', '_')}"):
        value = env.get(key)
        if value is not None and value.strip():
            return value.strip()
    return INPUT_DEFAULTS[name]


def read_inputs(env) -> Inputs:
    """Read and check the inputs' own values (not yet whether files exist). Raises InputError."""
    problems = []
    mode = _input(env, "mode").lower()
    if mode not in MODES:
        problems.append(f"mode {mode!r} is not one of {', '.join(MODES)}")
    tier = _input(env, "tier").lower()
    if tier and tier not in TIERS:
        problems.append(f"tier {tier!r} is not one of {', '.join(TIERS)}")
    fail_on = _input(env, "fail-on").lower()
    if fail_on not in FAIL_ON:
        problems.append(f"fail-on {fail_on!r} is not one of {', '.join(FAIL_ON)}")
    comment_text = _input(env, "comment").lower()
    if comment_text not in _TRUE | _FALSE:
        problems.append(f"comment {comment_text!r} is not a boolean (true or false)")
    baseline = _input(env, "baseline")
    if baseline.lower() != "none":
        from .baselines.spec import BaselineSpecError, parse_baseline_spec

        try:
            spec = parse_baseline_spec(baseline)
            if spec.kind == "path":  # read and written only inside the workspace
                from .baselines.local import confine

                confine(spec.path, Path.cwd())
        except BaselineSpecError as exc:
            problems.append(f"baseline: {exc}; or none for no baseline")
    config, metrics = _input(env, "config"), _input(env, "metrics")
    command, max_steps = _command(_input(env, "command"), problems), _max_steps(_input(env, "max-steps"), problems)
    comparisons = _input(env, "comparisons")
    if mode == "aggregate":
        if not comparisons:
            problems.append("mode aggregate reports on a matrix's comparisons: set comparisons to the directory its "
                            "artifacts were downloaded into (actions/download-artifact), or a glob of comparison.json files")
        if config or metrics or command or _input(env, "install"):
            problems.append("mode aggregate trains nothing: config, metrics, command and install belong to the matrix's "
                            "jobs; give only comparisons")
    elif comparisons:
        problems.append("comparisons is read by mode aggregate only (the job after a matrix); set mode: aggregate, "
                        "or remove comparisons")
    if not config and not metrics and not command and mode != "aggregate":
        problems.append("config is empty: name a training type (sft, dpo, ppo, grpo, rloo), a shipped config, "
                        "or a config file (or pass command: with your training script, or metrics: with a "
                        "metrics.json to report on)")
    if command and (config or metrics):
        problems.append("command runs your training script instead of a config: give command or config (or "
                        "metrics), not both")
    if max_steps is not None and not command:
        problems.append("max-steps caps the Trainers of command; a config sets train.max_steps itself")
    if mode == "run-only" and metrics:
        problems.append("mode run-only trains and reports nothing, so a metrics input has nothing to do")
    if baseline.lower().startswith("ref:") and (mode != "pr" or metrics or command):
        problems.append(f"baseline {baseline} measures the base in this job beside a config's run: it needs mode pr "
                        "and a config (not metrics or command); use branch:/artifact:/path: otherwise")
    if mode == "update-baseline" and baseline.lower() == "none":
        problems.append("mode update-baseline stores the run as the baseline: set baseline to branch:<name>, "
                        "path:<dir> or artifact:<name>")
    install_text = _input(env, "install")
    if install_text:
        from .userenv import InstallError, parse_lines

        try:
            parse_lines(install_text)
        except InstallError as exc:
            problems.append(f"install: {exc}")
        if metrics:
            problems.append("install has nothing to install into: metrics is given, so nothing is trained")
    max_pairs, budget = _max_pairs(_input(env, "max-pairs"), problems), _budget(_input(env, "budget"), problems)
    token = _input(env, "github-token") or None
    if problems:
        raise InputError(*problems)
    return Inputs(config=config, tier=tier, baseline=baseline, mode=mode, metrics=metrics,
                  thresholds=_input(env, "thresholds"), token=token, comment=comment_text in _TRUE,
                  check_name=_input(env, "check-name"), comment_author=_input(env, "comment-author"),
                  install=install_text.splitlines() if install_text else [], command=command, max_steps=max_steps,
                  max_pairs=max_pairs, budget=budget, fail_on=fail_on, output_dir=_input(env, "output-dir"),
                  comparisons=comparisons)


def _command(text: str, problems: list[str]) -> list[str]:
    """The command input as an argv list (split like a shell would, never run by one)."""
    import shlex

    try:
        return shlex.split(text)
    except ValueError as exc:
        problems.append(f"command {text!r} cannot be split into arguments: {exc}")
        return []


def _max_steps(text: str, problems: list[str]) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        problems.append(f"max-steps {text!r} is not a positive whole number")
        return None
    return int(text)


# The A/B loop decides after 3 pairs at the earliest (ab.Plan.min_pairs): fewer could never decide.
MIN_PAIRS = 3


def _max_pairs(text: str, problems: list[str]) -> int:
    if not text.isdigit() or int(text) < MIN_PAIRS:
        problems.append(f"max-pairs {text!r} is not a whole number of at least {MIN_PAIRS} (the A/B loop of "
                        f"baseline ref:... decides after {MIN_PAIRS} pairs at the earliest); give e.g. 10")
        return int(INPUT_DEFAULTS["max-pairs"])
    return int(text)


def _budget(text: str, problems: list[str]) -> float | None:
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        problems.append(f"budget {text!r} is not a positive number of seconds; give e.g. 600 (the A/B loop of "
                        "baseline ref:... starts no pair that would end past it), or leave it empty for no limit")
        return None
    return seconds


def resolve_config(config: str, tier: str) -> Path:
    """A training type with a tier, a shipped config name, or a file path -> the config file."""
    from .cli import configs_dir, resolve_config_path
    from .config import TRAINING_TYPES

    shipped = sorted(p.stem for p in configs_dir().glob("*.yaml"))
    if config.lower() in TRAINING_TYPES:
        kind, tier = config.lower(), tier or "smoke"
        path = configs_dir() / f"{kind}_{tier}.yaml"
        if not path.is_file():
            have = [n for n in shipped if n.startswith(f"{kind}_")]
            raise InputError(f"there is no shipped {tier} config for training type {kind!r} "
                             f"(shipped for {kind}: {', '.join(have) or 'none'}); name one of those or a config file")
        return path
    path = resolve_config_path(config)
    if not path.is_file():
        raise InputError(f"config {config!r} not found: it is not a file in the workspace ({Path.cwd()}), "
                         f"not a shipped config ({', '.join(shipped)}), and not a training type "
                         f"({', '.join(TRAINING_TYPES)})")
    return path


def workspace_relative(path: Path | str) -> str:
    """`path` relative to the workspace (the working directory) when inside it, else as given."""
    p = Path(path)
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(p)


# ====================================================================================== the action
@dataclass
class Outcome:
    """What happened; becomes the outputs, the exit code and the check conclusion."""

    verdict: str = "error"
    run_status: str | None = None  # completed | crashed | timeout | interrupted (None: no run)
    metrics_path: str = ""
    comparison_path: str = ""
    report_path: str = ""
    failed_checks: list[str] = field(default_factory=list)
    bad_input: bool = False
    error: str = ""  # the action's own failure, if any
    # update-baseline: why the run was not stored. "refused" (the token, the spec or the workspace do
    # not allow the write: a usage problem, exit 2) or "outage" (GitHub failed: exit 3); "" if stored.
    store_failure: str = ""


class Action:
    def __init__(self, env, wf: Workflow):
        self.env = env
        self.wf = wf
        self.inputs: Inputs | None = None
        self.ctx = None
        self.client = None
        self.publisher = None
        self.cfg = None
        self.config_path: Path | None = None
        self.metrics_input: Path | None = None
        self.config_name = ""
        self.tier = "smoke"
        self.out_dir = Path(".")
        self.outcome = Outcome()
        self.started = False  # the check run was opened
        self.pr_number: int | None = None
        self.ab_comparison: Path | None = None  # baseline ref:...: written by canary ab
        self.baseline_selection: dict | None = None  # which record a PR's baseline is, and why (history index)

    # -------------------------------------------------------------------------------- main flow
    def execute(self) -> int:
        try:
            self.prepare()
        except InputError as exc:
            return self.bad_input(exc.problems)
        try:
            self.start()
            if self.inputs.mode == "aggregate":
                self.aggregate()
                return self._end()
            record = self.obtain_run()
            if self.inputs.mode == "run-only":
                self.finish_run_only(record)
            else:
                self.compare_report_publish(record)
        except InputError as exc:
            return self.bad_input(exc.problems)
        except Exception as exc:  # the action's own failure: still complete the check, write what we can
            self.crashed(exc)
        finally:
            if self.client is not None:
                self.client.close()
        return self._end()

    def _end(self) -> int:
        self.write_outputs()
        return self.exit_code()

    # -------------------------------------------------------------------------------- prepare
    def prepare(self) -> None:
        from .baselines.spec import parse_baseline_spec
        from .github.context import ContextError, load_context

        self.inputs = inp = read_inputs(self.env)
        for key in TOKEN_INPUTS:  # training and child processes never see the token
            os.environ.pop(key, None)
        problems = []
        if inp.mode == "aggregate":
            self.config_name = "matrix"  # the output directory's and the default check name's
        elif inp.metrics:
            self.metrics_input = Path(inp.metrics)
            record = self._load_metrics(self.metrics_input)
            self.config_name = str(record["run"]["config_name"])
            self.tier = str(record["run"].get("tier") or "smoke")
            if inp.config:
                self.wf.warning(f"metrics is given, so config {inp.config!r} is not run; reporting on "
                                f"{workspace_relative(self.metrics_input)} ({self.config_name})")
        elif inp.command:
            from .exec.cli import default_name

            self.config_name, self.tier = default_name(inp.command), inp.tier or "smoke"
        else:
            from .config import TRAINING_TYPES, ConfigError, load_config

            self.config_path = resolve_config(inp.config, inp.tier)
            try:
                self.cfg = load_config(self.config_path)
            except ConfigError as exc:
                raise InputError(str(exc)) from None
            self.config_name, self.tier = self.cfg.name, self.cfg.tier
            if inp.tier and inp.config.lower() not in TRAINING_TYPES and inp.tier != self.cfg.tier:
                self.wf.warning(f"tier {inp.tier!r} is ignored: config {workspace_relative(self.config_path)} sets "
                                f"tier {self.cfg.tier!r} (tier picks a shipped config only when config is a "
                                "training type)")
        if inp.thresholds and not Path(inp.thresholds).is_file():
            problems.append(f"thresholds file {inp.thresholds!r} not found in the workspace ({Path.cwd()})")
        self.spec = None if inp.baseline.lower() == "none" else parse_baseline_spec(inp.baseline)
        if (self.spec is None or self.spec.kind != "ref") and (
                inp.budget is not None or inp.max_pairs != int(INPUT_DEFAULTS["max-pairs"])):
            # Not an error: one workflow may pick ref:base for pull requests and a stored baseline otherwise.
            self.wf.warning(f"max-pairs and budget limit the A/B loop of baseline ref:...; with baseline "
                            f"{inp.baseline} they are ignored")
        self.out_dir = Path(inp.output_dir or f"canary-results/{self.config_name}")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            problems.append(f"output-dir {inp.output_dir!r} exists and is not a directory")
        elif _leaves_workspace(self.out_dir):
            # A symlink committed in the PR (canary-results -> /etc) must not carry our writes out.
            problems.append(f"output-dir {str(self.out_dir)!r} is inside the workspace but leads out of it through "
                            "a symlink; remove the symlink or set output-dir to a plain directory")

        if self.env.get("GITHUB_REPOSITORY"):
            try:
                self.ctx = load_context(self.env)
            except ContextError as exc:
                problems.append(str(exc))
        else:
            log.info("GITHUB_REPOSITORY is not set (not running in GitHub Actions): nothing will be published")
        if problems:
            raise InputError(*problems)
        if self.ctx is not None and inp.mode != "run-only":
            self._make_client()
        if inp.mode == "update-baseline":
            self._check_may_store_baseline()

    def _load_metrics(self, path: Path) -> dict:
        from .results import MetricsFileError, load_metrics

        try:
            return load_metrics(path)
        except MetricsFileError as exc:
            raise InputError(f"metrics: {exc}") from None

    def _make_client(self) -> None:
        from .github.client import GitHubClient

        token = self.inputs.token
        if not token:
            self.wf.warning("github-token is empty: baselines on GitHub are read anonymously and nothing is "
                            "published (no comment, check run or status); the report is in the job summary")
        try:
            self.client = GitHubClient(token, api_url=self.ctx.api_url, repo=self.ctx.repository)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def _default_branch(self) -> str | None:
        if self.ctx.default_branch:
            return self.ctx.default_branch
        if self.client is not None:
            from .github.client import GitHubError

            try:
                return self.client.get_json(self.client.repo_path()).get("default_branch")
            except GitHubError as exc:
                log.warning("could not read the repository's default branch: %s", exc)
        return None

    def _check_may_store_baseline(self) -> None:
        """Baselines come from the default branch only: a PR (or a run triggered by one) must never
        overwrite what every other PR is compared with."""
        ctx = self.ctx
        if ctx is None:
            return  # a local run: the user asked for it explicitly
        default = self._default_branch()
        if ctx.event_name == "workflow_run":
            ok = (ctx.triggering_event in ("push", "schedule", "workflow_dispatch") and default is not None
                  and ctx.head_ref == default and not ctx.is_fork and ctx.pr_number is None)
            where = f"a workflow_run triggered by {ctx.triggering_event or 'an unknown event'} on {ctx.head_ref!r}"
        else:
            ok = (not ctx.is_pull_request and default is not None and ctx.ref == f"refs/heads/{default}")
            where = f"a {ctx.event_name or 'unknown'} run on {ctx.ref or 'an unknown ref'}"
        if not ok:
            raise InputError(f"mode update-baseline stores baselines only from runs on the default branch "
                             f"({default or 'unknown'}); this is {where}. Use mode: pr here.")

    # ---------------------------------------------------------------------------------- start
    def _resolve_pull_request_head(self) -> None:
        """`issue_comment`: GITHUB_SHA is the default branch's head, so the PR's head commit (where the
        check goes) comes from the pulls API. Without it nothing may be posted on a commit."""
        from .github.client import GitHubError, PermissionDenied
        from .github.publish import get_pull_request

        number = self.ctx.pr_number
        try:
            pr = get_pull_request(self.client, number)
        except PermissionDenied as exc:
            raise InputError(f"{self.ctx.event_name} on #{number}: the token may not read the pull request "
                             f"({exc.status} {exc.message}); grant pull-requests: read") from None
        except GitHubError as exc:
            raise RuntimeError(f"{self.ctx.event_name} on #{number}: could not read the pull request's head "
                               f"commit ({exc}); nothing was posted") from None
        self.ctx = self.ctx.with_pull_request(pr)
        log.info("%s on #%s: the PR's head is %s", self.ctx.event_name, number, self.ctx.sha[:12])

    def _pr_number(self) -> int | None:
        ctx = self.ctx
        if ctx.pr_number is not None:
            return ctx.pr_number
        if ctx.event_name == "workflow_run" and ctx.triggering_event in ("pull_request", "pull_request_target") \
                and self.client is not None and self.inputs.token:
            from .github.publish import find_pull_request

            head_owner = (ctx.head_repository or "").split("/", 1)[0] or None
            number = find_pull_request(self.client, ctx.sha, head_owner, ctx.head_ref)
            if number is None:
                log.warning("no open pull request has head %s (%s:%s): no comment will be posted",
                            ctx.sha[:12], head_owner, ctx.head_ref)
            return number
        return None

    def start(self) -> None:
        inp = self.inputs
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx is None or inp.mode == "run-only" or self.client is None or not inp.token:
            if inp.mode == "run-only":
                log.info("mode run-only: nothing is published; the report goes to the job summary")
            return
        from .github.publish import Publisher, describe_causes
        from .report import marker

        if self.ctx.head_sha_pending:
            self._resolve_pull_request_head()
        self.pr_number = self._pr_number() if inp.mode in ("pr", "aggregate") else None
        check_name = inp.check_name or f"rlhf-canary / {self.config_name}"
        if inp.mode == "aggregate":  # one sticky comment for the whole matrix (per check name, if one is set)
            from .report_matrix import matrix_marker

            sticky = matrix_marker(inp.check_name or None)
        else:
            sticky = marker(self.config_name)
        self.publisher = Publisher(self.client, head_sha=self.ctx.sha, check_name=check_name,
                                   pr_number=self.pr_number, marker=sticky,
                                   login=inp.comment_author or None, details_url=self.ctx.run_url)
        what = f"reporting on {_md_line(self.config_name)}" if self.metrics_input else \
            "reporting on the matrix" if inp.mode == "aggregate" else \
            f"training {_md_line(self.config_name)} ({_md_line(self.tier)} tier)"
        result = self.publisher.start(f"The canary is {what}.")
        self.started = True
        if not (result.check and result.check.ok):
            how = "a pending commit status" if result.status and result.status.ok else "the job summary only"
            self.wf.warning(f"no check run: {describe_causes(result.causes)}; reporting via {how}")

    # ---------------------------------------------------------------------------------- the run
    def obtain_run(self) -> dict:
        if self.metrics_input is not None:
            record = self._load_metrics(self.metrics_input)
            self.outcome.metrics_path = workspace_relative(self.metrics_input if self.metrics_input.is_file()
                                                           else self.metrics_input / "metrics.json")
            self.outcome.run_status = record.get("status")
            return record
        if self.spec is not None and self.spec.kind == "ref":  # base and head measured here, pair by pair
            t0 = time.monotonic()
            return self.finish_training(self.run_ab(), t0)
        if self.inputs.command or self.inputs.install:  # in a child process (and an overlay environment)
            t0 = time.monotonic()
            return self.finish_training(self.run_child(), t0)
        return self.train()

    def train(self) -> dict:
        from .quiet import quiet_libraries
        from .runner import SetupError

        cfg = self.cfg
        self.wf.group(f"Training {self.config_name} ({cfg.training_type}, {cfg.tier} tier, {cfg.train.max_steps} steps)")
        t0 = time.monotonic()
        try:
            quiet_libraries()
            every = max(1, cfg.train.max_steps // 10)

            def on_step(rec: dict) -> None:
                step = rec.get("step", 0)
                if step % every == 0 or step == cfg.train.max_steps:
                    loss = rec.get("loss")
                    loss_text = f"{loss:.4g}" if isinstance(loss, float) else str(loss)
                    ms = (rec.get("step_time_s") or 0) * 1000
                    log.info("step %s/%s  loss %s  %.0f ms/step", step, cfg.train.max_steps, loss_text, ms)

            rel_config = workspace_relative(self.config_path)
            from .plugins import use_workspace, workspace_of

            use_workspace(workspace_of(self.config_path))  # the config's import strings resolve there
            try:
                from .distributed import run_canary

                record, _ = run_canary(cfg, self.out_dir, config_path=rel_config, on_step=on_step)
            except SetupError as exc:
                if _hub_unreachable(exc):  # not the config's fault: a network failure, exit 3
                    raise RuntimeError(f"{rel_config}: the run could not start, a network failure: {exc}. "
                                       "The config may be right: give the runner access to the Hub, or "
                                       "pre-fill its cache and set HF_HUB_OFFLINE=1") from None
                raise InputError(f"{rel_config}: {exc}") from None
        finally:
            self.wf.endgroup()
        return self.finish_training(record, t0)

    def finish_training(self, record: dict, t0: float) -> dict:
        status = record.get("status")
        self.outcome.run_status = status
        self.outcome.metrics_path = workspace_relative(self.out_dir / "metrics.json")
        steps = (record.get("run") or {}).get("steps_completed")
        log.info("run %s: %s steps in %.1fs -> %s", status, steps, time.monotonic() - t0, self.outcome.metrics_path)
        if status != "completed":
            err = record.get("error") or {}
            self.wf.error(f"the canary run {status} after {steps} step(s): {err.get('type') or ''}: "
                          f"{err.get('message') or ''}".rstrip(": "), title=f"rlhf-canary: run {status}")
        return record

    def run_child(self) -> dict:
        """Train in a child process: `canary exec` for the command input, `canary run` for a config
        with the install input. With install, the child runs in an overlay environment holding the
        code under review (its `bin/` first on PATH, so the command's `python` is the overlay's). The
        child's output is logged as data; its exit 2 is this action's bad input."""
        from contextlib import nullcontext

        from . import userenv
        from .results import MetricsFileError, load_metrics

        inp = self.inputs
        what = f"command {' '.join(inp.command)!r}" if inp.command else workspace_relative(self.config_path)
        self.wf.group(f"Training {self.config_name} ({what})")
        try:
            with userenv.overlay(inp.install) if inp.install else nullcontext() as overlay:
                python, env = sys.executable, _child_env()
                if overlay is not None:
                    log.info("installed in an overlay environment: %s", userenv.describe(overlay.changed))
                    python, env = str(overlay.python), overlay.env(env)
                if inp.command:
                    cmd = [python, "-m", "canary_runner.cli", "exec", "-o", str(self.out_dir), "--name",
                           self.config_name, "--tier", self.tier,
                           *(["--max-steps", str(inp.max_steps)] if inp.max_steps else []), "--", *inp.command]
                else:
                    cmd = [python, "-m", "canary_runner.cli", "run", str(self.config_path), "-o", str(self.out_dir),
                           "--no-progress"]
                code, tail = _run_logged(cmd, env=env)
        except userenv.InstallError as exc:
            raise InputError(f"install: {exc}") from None
        finally:
            self.wf.endgroup()
        if code == EXIT_BAD_INPUT:
            prefixes = ("canary: error: ", "canary exec: error: ")
            errors = [line.split("error: ", 1)[1] for line in tail if line.startswith(prefixes)]
            raise InputError(*(errors or [f"{what}: the run refused its input (exit 2)"]))
        try:
            return load_metrics(self.out_dir)
        except MetricsFileError as exc:
            raise RuntimeError(f"the run left no usable record (exit {code}): {exc}; "
                               f"its last output: {' | '.join(tail[-5:])}") from None

    def base_ref(self) -> str:
        """The commit `ref:base` names: the pull request's base (from the event), else the default
        branch's head; any other `ref:X` as given."""
        ref = self.spec.ref
        if ref != "base":
            return ref
        payload = self.ctx.event if self.ctx is not None else {}
        sha = ((payload.get("pull_request") or {}).get("base") or {}).get("sha")
        if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{40}", sha):
            return sha
        branch = self._default_branch() if self.ctx is not None else None
        if not branch:
            raise InputError("baseline ref:base: this event has no pull request base and the default branch is "
                             "unknown; name the ref (ref:main, ref:<sha>)")
        return f"origin/{branch}"

    def run_ab(self) -> dict:
        """`canary ab` in a child process: the base commit as a worktree, the workspace as the head, run
        alternately; its comparison.json is this run's comparison. Returns the last head run's record."""
        from .results import MetricsFileError, load_metrics

        inp = self.inputs
        base = self.base_ref()
        rel = workspace_relative(self.config_path)
        if Path(rel).is_absolute():  # a shipped config: the same name on both sides
            rel = self.config_path.stem
        self.wf.group(f"A/B of {self.config_name}: base {base[:12]} vs head (this checkout), pair by pair")
        cmd = [sys.executable, "-m", "canary_runner.cli", "ab", rel, "--base", base, "--head", ".",
               "-o", str(self.out_dir), f"--pairs={inp.max_pairs}", *(f"--install={line}" for line in inp.install)]
        if inp.budget is not None:
            cmd.append(f"--budget={inp.budget!r}")
        if inp.tier:
            cmd.append(f"--tier={inp.tier}")
        try:
            code, tail = _run_logged(cmd, env=_child_env())
        finally:
            self.wf.endgroup()
        if code == EXIT_BAD_INPUT:
            errors = [line.split("error: ", 1)[1] for line in tail if line.startswith("canary ab: error: ")]
            raise InputError(*(errors or [f"baseline {self.spec}: the A/B run refused its input (exit 2)"]))
        comparison = self.out_dir / "comparison.json"
        if not comparison.is_file():
            raise RuntimeError(f"canary ab wrote no comparison (exit {code}): {' | '.join(tail[-5:])}")
        self.ab_comparison = comparison
        doc = json.loads(comparison.read_text())
        head_runs = [Path(p) for p in (doc.get("current") or {}).get("paths") or []]
        try:
            record = load_metrics(head_runs[-1])
        except (IndexError, MetricsFileError) as exc:
            raise RuntimeError(f"canary ab left no head run record (exit {code}): {exc}") from None
        # The head's last run stands for this run (outputs, stored artifacts); every run stays in its pair's folder.
        last = head_runs[-1] if head_runs[-1].is_file() else head_runs[-1] / "metrics.json"
        self.out_dir.joinpath("metrics.json").write_bytes(last.read_bytes())
        return record

    # ------------------------------------------------------------------------------ baseline
    def fetch_baseline(self, record: dict) -> list[Path]:
        """The baseline's metrics.json, saved under the output dir (not named metrics.json, so an
        upload of the output dir never passes the old baseline off as a new one)."""
        if self.spec is None:
            log.info("baseline: none")
            return []
        from .baselines import BaselineError, load_baseline

        hardware = str((record.get("env") or {}).get("hardware_key") or "")
        if self._pull_request_base() is not None and self.spec.kind in ("branch", "path"):
            picked = self.fetch_merge_base_baseline(hardware)
            if picked is not None:
                return picked
        try:
            lookup = load_baseline(self.spec, config_name=self.config_name, hardware_key=hardware,
                                   client=self.client, default_branch=self.ctx.default_branch if self.ctx else None,
                                   workspace=Path.cwd())
        except BaselineError as exc:
            self.wf.warning(f"baseline {self.spec} could not be read, comparing without one: {exc}",
                            title="rlhf-canary: no baseline")
            return []
        except ValueError as exc:  # a GitHub source outside GitHub Actions
            self.wf.warning(f"baseline {self.spec} needs GitHub (GITHUB_REPOSITORY and a token): {exc}")
            return []
        log.info("%s", lookup.message)
        if not lookup.found:
            self.wf.notice(lookup.message, title="rlhf-canary: no baseline yet")
            return []
        newest_run = lookup.latest.metrics.get("run")
        if self.baseline_selection is not None and isinstance(newest_run, dict) and newest_run.get("git_sha"):
            sha = str(newest_run["git_sha"])[:12]
            self.baseline_selection["text"] = self.baseline_selection["text"].replace(
                "the newest record", f"the newest record ({sha})", 1)
        return self._save_baselines(lookup.runs)

    def _save_baselines(self, runs) -> list[Path]:
        from .results import write_atomic

        folder = self.out_dir / "baseline"
        paths = []
        for i, run in enumerate(runs):
            path = folder / f"baseline-{i}.json"
            write_atomic(path, run.raw)
            paths.append(path)
        # A baseline that compare cannot use (newer schema, corrupt, never trained...) is left out
        # with the reason: the baseline-free checks still run and the PR is not failed for it.
        from .compare.loading import usable_baselines

        paths, problems = usable_baselines(Path(self.outcome.metrics_path), paths)
        for why in problems:
            self.wf.warning(f"baseline {self.spec} is not usable, comparing without it: {why}",
                            title="rlhf-canary: no usable baseline")
        return paths

    def _pull_request_base(self) -> str | None:
        """The PR's base commit (the base branch's head when the event fired), on pull_request events."""
        from .github.context import PR_EVENTS

        if self.ctx is None or self.ctx.event_name not in PR_EVENTS:
            return None
        sha = ((self.ctx.event.get("pull_request") or {}).get("base") or {}).get("sha")
        return sha if isinstance(sha, str) and sha else None

    def fetch_merge_base_baseline(self, hardware: str) -> list[Path] | None:
        """A PR's baseline from the store's history index: the record of the merge base, or of its
        newest ancestor that has one (see history/mergebase.py). None: the store has no index, so the
        newest record is used as before (said in the report)."""
        from .baselines import BaselineError
        from .github.client import GitHubError
        from .history import store
        from .history.mergebase import select_for_pull_request

        try:
            index = store.read_index(self.spec, self.config_name, hardware, client=self.client, workspace=Path.cwd())
        except store.NoHistory:
            self.baseline_selection = {"method": "newest", "via": "newest", "commit": None, "merge_base": None,
                                       "distance": None, "text": "baseline: the newest record; the store has no "
                                       "history index to find the merge base's record by"}
            return None
        except (BaselineError, ValueError) as exc:
            self.wf.warning(f"baseline {self.spec}: the history index could not be read, comparing without a "
                            f"baseline: {exc}", title="rlhf-canary: no baseline")
            return []
        newest = index.entries[-1] if index.entries else None
        try:
            sel = select_for_pull_request(index.entries, base=self._pull_request_base(), head=self.ctx.sha,
                                          repo=Path.cwd(), client=self.client,
                                          has_record=lambda e: e is newest or store.full_record_path(e) is not None)
        except (GitHubError, ValueError) as exc:
            self.wf.warning(f"baseline {self.spec}: the PR's merge base could not be found, so no record can be "
                            f"shown to be from an ancestor; comparing without a baseline: {exc}",
                            title="rlhf-canary: no baseline")
            return []
        self.baseline_selection = sel.to_json()
        log.info("%s (merge base via %s)", sel.text, sel.via)
        if sel.entry is None:
            self.wf.notice(sel.text, title="rlhf-canary: no baseline for the merge base")
            return []
        try:
            run = store.read_full_record(self.spec, index, sel.entry, client=self.client, workspace=Path.cwd())
        except BaselineError as exc:
            self.wf.warning(f"baseline {self.spec}: {sel.text}, but its record could not be read, comparing "
                            f"without a baseline: {exc}", title="rlhf-canary: no baseline")
            self.baseline_selection["text"] += " (its record could not be read)"
            return []
        if run.config_name != self.config_name or run.hardware_key != hardware:
            self.wf.warning(f"baseline {self.spec}: the record of {sel.entry.sha[:12]} is for "
                            f"{run.config_name!r} on {run.hardware_key}, not this run's; comparing without a baseline",
                            title="rlhf-canary: no baseline")
            return []
        return self._save_baselines([run])

    # ------------------------------------------------------------------------------- compare
    def compare(self, current: Path, baselines: list[Path]) -> Path:
        out = self.out_dir / "comparison.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "canary_runner.cli", "compare", str(current), *map(str, baselines),
               "-o", str(out)]
        if not baselines:
            cmd.append("--no-baseline")
        if self.inputs.thresholds:
            cmd += ["--thresholds", self.inputs.thresholds]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
        self.wf.group(f"Comparison with {len(baselines)} baseline run(s)" if baselines else "Comparison (no baseline)")
        for line in logsafe.safe_lines((proc.stdout + proc.stderr).rstrip("\n")):  # names and reasons from the runs
            log.info("%s", line)
        self.wf.endgroup()
        if proc.returncode not in (0, 1) or not out.is_file():
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            if baselines:
                # Something in the baseline that the checks in fetch_baseline let through: compare
                # without it rather than fail the run under test (if the run itself is the problem,
                # the comparison without a baseline fails too, and that is reported).
                self.wf.warning(f"baseline {self.spec} is not usable, comparing without it: compare with it "
                                f"failed (exit {proc.returncode}): {last[0]}", title="rlhf-canary: no usable baseline")
                return self.compare(current, [])
            raise RuntimeError(f"canary compare failed (exit {proc.returncode}): {last}")
        return out

    # ----------------------------------------------------------------------- report and publish
    def compare_report_publish(self, record: dict) -> None:
        from . import report

        inp = self.inputs
        current = Path(self.outcome.metrics_path)
        if self.ab_comparison is not None:  # A/B compared the base runs already
            comparison_path = self.ab_comparison
        else:
            comparison_path = self.compare(current, self.fetch_baseline(record))
            if self.baseline_selection is not None:
                self._note_selection(comparison_path)
        self.outcome.comparison_path = workspace_relative(comparison_path)
        comparison = report.load_comparison(comparison_path)
        self.outcome.verdict = comparison["verdict"]
        self.outcome.failed_checks = [c["id"] for c in comparison.get("checks") or [] if c.get("status") == "fail"]

        from .action_matrix import artifacts_page

        # The comment and the check link the run and its artifacts (report.md and its plots, uploaded by the
        # workflow's next step), never a path on the runner; only the job summary, read beside it, names the path.
        links = {"run_url": self.ctx.run_url if self.ctx else None, "artifact_url": artifacts_page(self.ctx)}
        report_path = self.out_dir / "report.md"
        rel_report = workspace_relative(report_path)
        _write_text(report_path, report.render_markdown(comparison, plots=self._write_plots(comparison), **links))
        self.outcome.report_path = rel_report
        self.wf.append_summary(report.render_summary(comparison, report_path=rel_report, **links))
        self.annotate(comparison)

        stored = None
        if inp.mode == "update-baseline":
            stored = self.store_baseline(record)

        if self.publisher is not None:
            check = report.render_check(comparison, config_path_override=self._annotation_path(), **links)
            body = None
            if inp.mode == "pr" and inp.comment:
                body = report.render_comment(comparison, **links)
            summary, title = check["summary"], check["title"]
            if stored:
                summary = f"{summary}\n\n{stored}"
            if self.outcome.store_failure:
                title = f"Baseline not stored ({title})"
            result = self.publisher.finish(self.conclusion(), title, summary, text=check["text"],
                                           annotations=check["annotations"], comment_body=body)
            self.note_publish(result)
        log.info("verdict: %s", self.outcome.verdict)

    def _write_plots(self, comparison: dict) -> list[tuple[str, str]]:
        """PNG plots of the curves in <output-dir>/plots, for report.md in the uploaded artifact:
        [(metric, path relative to report.md)]. None without matplotlib or a writable directory (said)."""
        if not comparison.get("curves"):
            return []
        try:
            from .plots import write_plots

            written = write_plots(comparison, self.out_dir / "plots")
        except ImportError:
            log.info("matplotlib is not installed: report.md draws its curves as Mermaid charts")
            return []
        except OSError as exc:
            self.wf.warning(f"no PNG plots for report.md: {exc}")
            return []
        from urllib.parse import quote

        return [(metric, quote(path.relative_to(self.out_dir).as_posix())) for metric, path in written]

    # ------------------------------------------------------------------------ the matrix (aggregate)
    def aggregate(self) -> None:
        """mode aggregate: the comparisons a matrix's jobs uploaded (downloaded into the workspace) as one
        report: one sticky comment, one check run, the job summary and report.md, with a row per config.
        A comparison that cannot be read is named and left out; none readable is the action's failure."""
        from .action_matrix import NoComparisons, artifacts_page, read_entries, run_artifact_urls
        from .report_matrix import matrix_title, matrix_verdict, render_matrix, render_matrix_check

        inp = self.inputs
        urls = run_artifact_urls(self.client if inp.token else None, self.ctx) if self.ctx else {}
        try:
            entries = read_entries(inp.comparisons, Path.cwd(), urls)
        except NoComparisons as exc:
            raise InputError(str(exc)) from None
        for e in entries:
            if e.comparison is None:
                self.wf.warning(f"{e.source}: left out of the matrix report: {e.error}",
                                title="rlhf-canary: comparison not read")
        readable = [e for e in entries if e.comparison is not None]
        self.outcome.verdict = matrix_verdict(entries) if readable else "error"
        if not readable:
            self.outcome.error = f"none of the {len(entries)} comparisons under {inp.comparisons} could be read"
            self.wf.error(self.outcome.error, title="rlhf-canary: nothing to report")
        self.outcome.failed_checks = [f"{e.config_name}/{c.get('id')}" for e in readable
                                      for c in e.comparison.get("checks") or [] if c.get("status") == "fail"]
        name = inp.check_name or None
        links = {"run_url": self.ctx.run_url if self.ctx else None, "artifacts_url": artifacts_page(self.ctx)}
        report_path = self.out_dir / "report.md"
        _write_text(report_path, render_matrix(entries, "markdown", name=name, **links))
        self.outcome.report_path = workspace_relative(report_path)
        self.wf.append_summary(render_matrix(entries, "summary", name=name, **links))
        if self.publisher is not None:
            check = render_matrix_check(entries, **links)
            body = render_matrix(entries, "comment", name=name, **links) if inp.comment else None
            result = self.publisher.finish(self.conclusion(), check["title"], check["summary"],
                                           annotations=check["annotations"], comment_body=body)
            self.note_publish(result)
        log.info("%s", matrix_title(entries))

    def _note_selection(self, comparison_path: Path) -> None:
        """Which record the baseline is (the merge base's, an ancestor's, or the newest), in the comparison."""
        from .results import write_atomic

        doc = json.loads(comparison_path.read_text(encoding="utf-8"))
        doc["baseline_selection"] = self.baseline_selection
        write_atomic(comparison_path, json.dumps(doc, indent=1) + "\n")

    def _annotation_path(self) -> str | None:
        if self.config_path is not None:
            rel = workspace_relative(self.config_path)
            return rel if not Path(rel).is_absolute() else None
        return None

    def annotate(self, comparison: dict) -> None:
        """One ::error:: per failed check and one ::warning:: per warned check, on the config file."""
        from .report import annotations

        path = self._annotation_path()
        notes = annotations(comparison, path or "")
        for n in notes[:50]:
            level = {"failure": "error", "warning": "warning"}.get(n["annotation_level"], "notice")
            self.wf.command(level, n["message"], title=f"rlhf-canary {self.config_name}: {n.get('title', '')}",
                            file=path, line=1 if path else None)
        if len(notes) > 50:
            self.wf.warning(f"{len(notes) - 50} more findings in the report ({self.outcome.report_path})")

    def store_baseline(self, record: dict) -> str | None:
        """update-baseline: file the run as the new baseline. A crashed run or one with NaN/Inf is not
        stored (it would make every later comparison meaningless); that is said, loudly."""
        metrics_file = Path(self.outcome.metrics_path)
        from .baselines import unfit_as_baseline

        why = unfit_as_baseline(record)
        if why:
            self.wf.error(f"baseline not updated: {why}", title="rlhf-canary: baseline not updated")
            self.wf.append_summary(f"\n> **Baseline not updated**: {_md_line(why)}.\n")
            return f"**Baseline not updated**: {why}."
        from .baselines import ArtifactSpec, BaselineError, BranchSpec, PathSpec

        raw = metrics_file.read_bytes()
        spec = self.spec
        try:
            if isinstance(spec, BranchSpec):
                if self.client is None or not self.inputs.token:
                    raise BaselineError("writing to a branch needs github-token with contents: write")
                from .baselines.branch import write_branch_baseline

                res = write_branch_baseline(self.client, spec.branch, raw, commit_sha=self.ctx.sha,
                                            default_branch=self._default_branch())
                extra = f" ({res.conflicts} conflicting write(s) retried)" if res.conflicts else ""
                text = f"Baseline updated: {_md_line(res.path)} on branch {_md_line(spec.branch)}{extra}."
                folder = res.path.rsplit("/", 1)[0] + "/"
                trimmed = {t.removeprefix(folder) for t in res.trimmed}
                text += self._index_baseline(record, res.history_path.removeprefix(folder),
                                             lambda f: f not in trimmed)
            elif isinstance(spec, PathSpec):
                from .baselines.local import write_path_baseline

                sha = self.ctx.sha if self.ctx else None
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                dest = write_path_baseline(spec.path, raw, commit_sha=sha, timestamp=stamp, workspace=Path.cwd())
                text = f"Baseline updated: {_md_line(workspace_relative(dest))}."
                if sha:
                    from .baselines.cli import history_file

                    text += self._index_baseline(record, history_file(stamp, sha),
                                                 lambda f: (dest.parent / f).is_file())
            else:
                assert isinstance(spec, ArtifactSpec)
                text = (f"Baseline ready: upload {_md_line(self.outcome.metrics_path)} with actions/upload-artifact "
                        f"as {_md_line(spec.name)} to make it the baseline.")
        except BaselineError as exc:
            # Not a crash: the run and its report are fine; the write was refused or GitHub failed.
            kind = _store_failure_kind(exc)
            self.outcome.store_failure = kind
            self.outcome.verdict = "error"
            what = ("GitHub failed while writing it (an outage: rerun the job)" if kind == "outage" else
                    "the write was refused (fix the token's permissions or the baseline input)")
            self.wf.error(f"baseline not stored: {what}: {exc}", title="rlhf-canary: baseline not stored")
            self.wf.append_summary(f"\n> **Baseline not stored**: {_md_line(what)}: {_md_line(str(exc))}\n")
            return f"**Baseline not stored**: {what}; see the job log."
        log.info("%s", _md_plain(text))
        self.wf.append_summary(f"\n> {text}\n")
        return text

    def _index_baseline(self, record: dict, file: str, present) -> str:
        """Add the stored baseline to the store's history index; a failure there is a warning (the
        baseline itself is stored), said in the text returned."""
        from .baselines import BaselineError
        from .history.mergebase import parent_of
        from .history.store import record_baseline

        sha = self.ctx.sha
        try:
            idx = record_baseline(self.spec, record, sha=sha, parent=parent_of(sha, Path.cwd()), file=file,
                                  present=present, client=self.client, workspace=Path.cwd())
        except (BaselineError, ValueError) as exc:
            self.wf.warning(f"the baseline is stored but the history index was not updated: {exc}",
                            title="rlhf-canary: history not updated")
            return " The history index was not updated (see the job log)."
        return f" History: {len(idx.entries)} commit(s)."

    def finish_run_only(self, record: dict) -> None:
        self.outcome.verdict = "not-compared" if record.get("status") == "completed" else "fail"
        r = record.get("run") or {}
        median = ((record.get("summary") or {}).get("step_time_s") or {}).get("median")
        timing = f"{median * 1000:.1f} ms/step (median)" if isinstance(median, (int, float)) else "no timing"
        text = (f"## rlhf-canary: {_md_line(self.config_name)} ran ({_md_line(record.get('status'))})\n\n"
                f"{_md_line(r.get('steps_completed'))} of {_md_line(r.get('steps_planned'))} steps, {timing}. "
                f"Mode run-only: not compared and nothing published; {_md_line(self.outcome.metrics_path)} is the "
                f"result for a later step or workflow to compare.\n")
        report_path = self.out_dir / "report.md"
        _write_text(report_path, text)
        self.outcome.report_path = workspace_relative(report_path)
        self.wf.append_summary(text)

    def note_publish(self, result) -> None:
        where = ", ".join(f"{c.channel} {c.outcome}" for c in (result.comment, result.check, result.status) if c)
        log.info("published: %s", where or "nothing")
        from .github.publish import describe_causes

        why = describe_causes(result.causes)
        if result.summary_only:
            self.wf.warning(f"nothing was published on the PR or commit: {why}; the verdict is in the job "
                            "summary only", title="rlhf-canary: not published")
            self.wf.append_summary(f"\n> Nothing was published on the PR or commit: {why}. This summary is "
                                   "the report.\n")
        elif result.fell_back:
            self.wf.warning(f"rlhf-canary published via {', '.join(result.published)}, not via "
                            f"{', '.join(result.fell_back)}: {why}")

    # -------------------------------------------------------------------------- failure paths
    def bad_input(self, problems: list[str]) -> int:
        for p in problems:
            self.wf.error(p, title="rlhf-canary: bad input")
        self.wf.append_summary("## rlhf-canary: bad input\n\n" + "\n".join(f"- {_md_line(p)}" for p in problems)
                               + "\n\nNothing was compared. Fix the action's inputs (see docs/action.md).\n")
        self.outcome.verdict = "error"
        self.outcome.bad_input = True
        if self.publisher is not None and self.started:
            self._finish_check_failure("Bad input", "\n".join(f"- {_md_line(p)}" for p in problems))
        self.write_outputs()
        return EXIT_BAD_INPUT

    def crashed(self, exc: BaseException) -> None:
        tb = traceback.format_exc()
        message = f"{type(exc).__name__}: {exc}"
        self.outcome.error = message
        self.outcome.verdict = "error"
        log.error("%s", tb)
        self.wf.error(f"rlhf-canary failed: {message}", title="rlhf-canary: action error")
        text = (f"## rlhf-canary: the action failed\n\n{_md_line(message)}\n\n"
                + (f"The run's metrics are in {_md_line(self.outcome.metrics_path)}.\n" if self.outcome.metrics_path
                   else ""))
        try:
            report_path = self.out_dir / "report.md"
            if not self.outcome.report_path:
                _write_text(report_path, text)
                self.outcome.report_path = workspace_relative(report_path)
        except OSError:
            pass
        self.wf.append_summary(text)
        if self.publisher is not None and self.started:
            from .report import code_block

            self._finish_check_failure("The canary action failed", code_block(message[:60000], "text"))

    def _finish_check_failure(self, title: str, summary: str) -> None:
        try:
            result = self.publisher.finish(self.conclusion(), title, summary)
            self.note_publish(result)
        except Exception as exc:  # never let reporting a failure fail
            log.warning("could not complete the check run: %s", exc)

    # ------------------------------------------------------------------------ verdict and exit
    @property
    def run_crashed(self) -> bool:
        return self.outcome.run_status not in (None, "completed")

    def blocking(self) -> bool:
        """Does the verdict fail the step under `fail-on`?"""
        v, fail_on = self.outcome.verdict, self.inputs.fail_on if self.inputs else "fail"
        return (fail_on == "fail" and v == "fail") or (fail_on == "warn" and v in ("fail", "warn"))

    def conclusion(self) -> str:
        """The check run's conclusion, from the exit code so the two always agree: failure when the
        step fails, success only for a clean pass, neutral for everything reported but not blocking."""
        if self.exit_code() != EXIT_OK:
            return "failure"
        o = self.outcome
        clean = not (o.error or o.store_failure or self.run_crashed)
        return "success" if clean and o.verdict == "pass" else "neutral"

    def exit_code(self) -> int:
        """0 pass, 1 regression (under fail-on), 2 bad input or usage (a refused baseline write
        included), 3 the run crashed or the action could not finish (an outage while storing the
        baseline included). `fail-on: never` turns 1 and 3 into 0, never 2."""
        o = self.outcome
        if o.bad_input or o.store_failure == "refused":
            return EXIT_BAD_INPUT
        never = self.inputs is not None and self.inputs.fail_on == "never"
        if o.error or self.run_crashed or o.store_failure:
            return EXIT_OK if never else EXIT_CRASHED
        return EXIT_REGRESSION if self.blocking() else EXIT_OK

    def write_outputs(self) -> None:
        if self.wf.outputs:
            return  # written already (bad input after a partial run writes once)
        o = self.outcome
        for name, value in (("verdict", o.verdict), ("metrics-path", o.metrics_path),
                            ("comparison-path", o.comparison_path), ("report-path", o.report_path),
                            ("failed-checks", ",".join(o.failed_checks))):
            self.wf.set_output(name, value)


# =================================================================================== helpers
def _md_line(text: Any, max_chars: int = 4000) -> str:
    """Untrusted text as one line of inert markdown (no HTML, links, images, code, @mentions): for the
    job summary and the check run, which GitHub renders."""
    from .report import escape_md

    return str(escape_md("" if text is None else text, max_chars))


def _md_plain(markdown: str) -> str:
    """`_md_line`'s text back as plain text, for the log."""
    import html
    import re

    return re.sub(r"\\(.)", r"\1", html.unescape(markdown)).replace("\u200b", "")


def _hub_unreachable(exc: BaseException) -> bool:
    """A SetupError over a HubUnreachable (raised `from None`, so it is the `__context__`)."""
    from .workload.sources import HubUnreachable

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, HubUnreachable):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _store_failure_kind(exc: BaseException) -> str:
    """"outage" when GitHub failed or throttled under a baseline write, else "refused". Baseline errors
    are raised `from None` over the API error, which stays their `__context__`."""
    from .github.client import is_outage

    seen: BaseException | None = exc
    while seen is not None:
        if is_outage(seen):
            return "outage"
        seen = seen.__cause__ or seen.__context__
    return "refused"


def _write_text(path: Path, text: str) -> None:
    from .results import write_atomic

    write_atomic(path, text)  # 0644: the next step (upload-artifact) runs as another user


def _leaves_workspace(path: Path) -> bool:
    """A path that lies in the workspace (the working directory) as written, but not once symlinks are
    followed. (An absolute path outside the workspace is the workflow's own choice and allowed.)"""
    workspace = Path.cwd()
    written = Path(os.path.abspath(path))
    if not written.is_relative_to(workspace):
        return False
    return not written.resolve().is_relative_to(workspace.resolve())


# ----------------------------------------------------------------------- workspace file modes
# GitHub runs a container action as root, and the runner's own user (uid 1001 on hosted runners, any uid
# on self-hosted ones) must afterwards read and delete what the action wrote into the workspace: the next
# step uploads it, the next job's checkout cleans it. So the action runs with umask 0, and on its way out
# opens up what it created that still has closed modes (mkstemp's 0600, write_atomic's 0644, mkdtemp's
# 0700): directories rwx and files rw for everyone. What was there before is never touched, and no
# symlink is followed: the walk goes by directory descriptors (os.fwalk) and changes modes through
# descriptors opened with O_NOFOLLOW.


def _workspace_to_open_up(env) -> Path | None:
    """The workspace, when running as an action (GITHUB_WORKSPACE names a directory other than /)."""
    raw = env.get("GITHUB_WORKSPACE")
    if not raw or not os.path.isdir(raw) or os.path.realpath(raw) == "/":
        return None
    return Path(raw)


def _snapshot(root: Path) -> set[tuple[str, int]]:
    """Every entry under `root` by path and inode: a file replaced by a rename counts as a new file."""
    seen = set()
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False, onerror=lambda e: None):
        for name in dirnames + filenames:
            try:
                seen.add((os.path.join(dirpath, name), os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_ino))
            except OSError:
                pass
    return seen


def _opened_mode(mode: int) -> int:
    """Directories rwx for all; files rw for all (x for all when the owner has x); no set-id bits."""
    if stat.S_ISDIR(mode):
        return stat.S_IMODE(mode) | 0o777
    opened = (stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID)) | 0o666
    return opened | 0o111 if mode & stat.S_IXUSR else opened


def _open_up(root: Path, before: set[tuple[str, int]]) -> int:
    """Open up the modes of what was created under `root` since `before` (see above). Returns how many
    entries could not be changed; never raises."""
    failed = 0

    def fix(fd: int, path: str) -> None:
        nonlocal failed
        st = os.fstat(fd)
        if (path, st.st_ino) in before or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            return
        mode = _opened_mode(st.st_mode)
        if mode != stat.S_IMODE(st.st_mode):
            try:
                os.fchmod(fd, mode)
            except OSError:
                failed += 1

    try:
        for dirpath, _dirs, filenames, dirfd in os.fwalk(root, follow_symlinks=False, onerror=lambda e: None):
            if dirpath != str(root):
                fix(dirfd, dirpath)
            for name in filenames:  # symlinks to files are listed here: O_NOFOLLOW refuses them
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dirfd)
                except OSError:  # a symlink (ELOOP), gone, or unreadable: not ours to open up
                    continue
                try:
                    fix(fd, os.path.join(dirpath, name))
                finally:
                    os.close(fd)
    except OSError:
        failed += 1
    return failed


def _run_logged(cmd: list[str], env: dict[str, str], keep: int = 40) -> tuple[int, list[str]]:
    """Run `cmd`, logging each line of its output as data (never as a workflow command), with SIGTERM
    and SIGINT passed on. Returns the exit code and the last `keep` lines."""
    import collections
    import signal

    tail: collections.deque[str] = collections.deque(maxlen=keep)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env=env)
    previous = {s: signal.signal(s, lambda signum, _f: proc.send_signal(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("%s", line)
        return proc.wait(), list(tail)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in TOKEN_INPUTS}


class _TokenFilter(logging.Filter):
    """Last line of defence: a log record that somehow holds the token is redacted."""

    def __init__(self, token: str | None):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if self.token:
            msg = record.getMessage()
            if self.token in msg:
                record.msg, record.args = msg.replace(self.token, "***"), None
        return True


class _SafeFormatter(logging.Formatter):
    """A log message never becomes a workflow command, whatever text it carries (see logsafe)."""

    def format(self, record: logging.LogRecord) -> str:
        return logsafe.safe_text(super().format(record))


def _setup_logging(token: str | None) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_SafeFormatter("%(message)s"))
    handler.addFilter(_TokenFilter(token))
    root = logging.getLogger("canary_runner")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def main(env=None) -> int:
    """The action's entry point (entrypoint.py). Returns the exit code."""
    env = os.environ if env is None else env
    workspace = _workspace_to_open_up(env)
    before = _snapshot(workspace) if workspace else set()
    previous_umask = os.umask(0)  # children (pip, git, training) too: see "workspace file modes"
    try:
        return _main(env)
    finally:
        os.umask(previous_umask)
        if workspace and _open_up(workspace, before):
            print("::warning::rlhf-canary: some files it wrote in the workspace could not be made removable by "
                  "the runner's user", flush=True)


def _main(env) -> int:
    token = next((env[k] for k in TOKEN_INPUTS if env.get(k)), None)
    # Everything this process prints (logging, print, warnings, tracebacks, libraries) goes through
    # SafeStream; only Workflow writes commands, to the raw stdout.
    raw_out, raw_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = logsafe.SafeStream(raw_out), logsafe.SafeStream(raw_err)
    try:
        _setup_logging(token)
        logging.captureWarnings(True)  # warnings through the same safe handler
        logging.getLogger("py.warnings").handlers[:] = logging.getLogger("canary_runner").handlers
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        wf = Workflow(env, stream=raw_out)
        try:
            return Action(env, wf).execute()
        except KeyboardInterrupt:
            wf.error("rlhf-canary was interrupted", title="rlhf-canary: action error")
            return EXIT_CRASHED
        except Exception as exc:  # a failure outside the flow's own handling: said once, no bare traceback
            log.error("%s", traceback.format_exc())
            wf.error(f"rlhf-canary failed: {type(exc).__name__}: {exc}", title="rlhf-canary: action error")
            return EXIT_CRASHED
    finally:
        logsafe.flush_streams(sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = raw_out, raw_err


if __name__ == "__main__":
    sys.exit(main())
