"""Run entrypoint.py the way GitHub runs the action's container, against the fake GitHub on loopback.

GitHub starts a Docker container action with: the workspace as the working directory, `INPUT_<NAME>`
for every input declared in action.yml (defaults applied, hyphens kept), the `GITHUB_*` and `RUNNER_*`
variables, the event payload in a file, and `$GITHUB_OUTPUT` / `$GITHUB_STEP_SUMMARY` files to append
to. `run_action` reproduces that in a subprocess, with `GITHUB_API_URL` pointing at the fake server,
which validates every request against GitHub's OpenAPI description.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

# The fake GitHub and its fixtures (fake, openapi, blob_server) come from tests/github.
from github.conftest import blob_server, fake, openapi  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "entrypoint.py"
HEAD_SHA = "1" * 40  # the PR's head commit: checks and statuses go here
MERGE_SHA = "2" * 40  # GITHUB_SHA on pull_request: the temporary merge commit (must not get the check)
MAIN_SHA = "3" * 40
PR_NUMBER = 7


def action_defaults(token: str) -> dict[str, str]:
    meta = yaml.safe_load((REPO / "action.yml").read_text())
    out = {}
    for name, spec in meta["inputs"].items():
        default = str(spec.get("default", ""))
        out[name] = token if default.strip() == "${{ github.token }}" else default
    return out


def parse_output_file(text: str) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT the way the runner does: `name<<DELIM` heredocs and `name=value` lines."""
    out, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        m = re.match(r"^([^=<]+)<<(.+)$", line)
        if m:
            name, delim, value = m[1], m[2], []
            while lines[i] != delim:
                value.append(lines[i])
                i += 1
            i += 1
            out[name] = "\n".join(value)
        else:
            name, _, value = line.partition("=")
            out[name] = value
    return out


@dataclass
class ActionResult:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    workspace: Path
    env: dict[str, str] = field(repr=False)

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    def commands(self, name: str) -> list[str]:
        """The messages of `::name ...::message` workflow commands, unescaped."""
        found = []
        for line in self.stdout.splitlines():
            m = re.match(rf"^::{name}(?: [^:]*)?::(.*)$", line)
            if m:
                found.append(m[1].replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%"))
        return found

    def path(self, output: str) -> Path:
        return self.workspace / self.outputs[output]


def pr_event(repo: str, *, head_repo: str | None = None, number: int = PR_NUMBER) -> dict:
    head_repo = head_repo or repo
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"sha": HEAD_SHA, "ref": "feature", "repo": {"full_name": head_repo},
                     "user": {"login": head_repo.split("/")[0]}},
            "base": {"sha": MAIN_SHA, "ref": "main", "repo": {"full_name": repo, "default_branch": "main"}},
        },
        "repository": {"full_name": repo, "default_branch": "main"},
    }


def push_event(repo: str) -> dict:
    return {"ref": "refs/heads/main", "before": "0" * 40, "after": MAIN_SHA,
            "repository": {"full_name": repo, "default_branch": "main"}}


def workflow_run_event(repo: str, *, head_repo: str, run_id: int = 555) -> dict:
    return {
        "action": "completed",
        "workflow_run": {"id": run_id, "name": "canary-fork-run", "event": "pull_request", "status": "completed",
                         "conclusion": "success", "head_sha": HEAD_SHA, "head_branch": "feature",
                         "head_repository": {"full_name": head_repo}, "repository": {"full_name": repo},
                         "pull_requests": []},
        "repository": {"full_name": repo, "default_branch": "main"},
    }


class ActionRunner:
    """Builds the container's environment and runs entrypoint.py in it."""

    def __init__(self, tmp_path: Path, *, repo: str, token: str, api_url: str):
        self.root = tmp_path
        self.repo = repo
        self.token = token
        self.api_url = api_url
        self.workspace = tmp_path / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.runs = 0

    def __call__(self, *, event_name: str, event: dict, inputs: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, timeout: float = 300) -> ActionResult:
        self.runs += 1
        files = self.root / f"runner-files-{self.runs}"
        files.mkdir()
        event_path = files / "event.json"
        event_path.write_text(json.dumps(event))
        output, summary = files / "output", files / "summary"
        output.touch()
        summary.touch()
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        is_pr = event_name.startswith("pull_request")
        base = {
            # What the image and the runner give every container.
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_REPOSITORY": self.repo,
            "GITHUB_REPOSITORY_OWNER": self.repo.split("/")[0],
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SHA": MERGE_SHA if is_pr else MAIN_SHA,
            "GITHUB_REF": f"refs/pull/{PR_NUMBER}/merge" if is_pr else "refs/heads/main",
            "GITHUB_REF_NAME": f"{PR_NUMBER}/merge" if is_pr else "main",
            "GITHUB_HEAD_REF": "feature" if is_pr else "",
            "GITHUB_BASE_REF": "main" if is_pr else "",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_RUN_NUMBER": "17",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_ACTOR": "octocat",
            "GITHUB_WORKFLOW": "canary",
            "GITHUB_JOB": "canary",
            "GITHUB_ACTION": "__org_rlhf-canary",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_API_URL": self.api_url,
            "GITHUB_GRAPHQL_URL": self.api_url + "/graphql",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_ENV": str(files / "env"),
            "GITHUB_PATH": str(files / "path"),
            "GITHUB_STATE": str(files / "state"),
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_NAME": "gpu-runner-1",
            "RUNNER_ENVIRONMENT": "self-hosted",
            "RUNNER_TEMP": str(self.root / "runner-temp"),
            "RUNNER_TOOL_CACHE": str(self.root / "toolcache"),
            "RUNNER_WORKSPACE": str(self.workspace.parent),
            # Offline, with the embedded model cache shared across the suite.
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "CANARY_CACHE_DIR": os.environ.get("CANARY_CACHE_DIR", str(REPO / ".cache" / "canary")),
            "TRL_EXPERIMENTAL_SILENCE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        values = action_defaults(self.token)
        values.update(inputs or {})
        for name, value in values.items():
            base[f"INPUT_{name.upper()}"] = value  # upper-cased, hyphens kept: as the runner does
        base.update(env or {})
        proc = subprocess.run([sys.executable, str(ENTRYPOINT)], cwd=self.workspace, env=base,
                              capture_output=True, text=True, timeout=timeout)
        result = ActionResult(proc.returncode, proc.stdout, proc.stderr, parse_output_file(output.read_text()),
                              summary.read_text(), self.workspace, base)
        # Whatever happened, the token must not be in the log.
        assert self.token not in result.log, "the token was printed"
        return result


@pytest.fixture
def run_action(tmp_path, fake):  # noqa: F811
    return ActionRunner(tmp_path, repo=fake.repo, token=fake.token, api_url=fake.url)


@pytest.fixture(scope="session")
def seed_run(tmp_path_factory) -> Path:
    """One real dpo_embedded run through the entrypoint in run-only mode (nothing published, so no
    server: the API URL points at a closed port). Later tests use it as a baseline or a finished run."""
    root = tmp_path_factory.mktemp("seed")
    runner = ActionRunner(root, repo="octo-org/canary-app", token="ghs_seedTokenNeverUsed000",
                          api_url="http://127.0.0.1:9")
    result = runner(event_name="push", event=push_event("octo-org/canary-app"),
                    inputs={"config": "dpo_embedded", "mode": "run-only", "output-dir": "seed"})
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "not-compared"
    metrics = result.path("metrics-path")
    assert metrics.is_file()
    return metrics
