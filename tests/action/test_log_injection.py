"""Text from a run or an artifact never runs a workflow command in the action's log.

A finished run handed to the action (the `metrics:` input: a fork PR's artifact in the two-workflow
pattern) carries names and messages with every line break a reader may split on, each followed by a
workflow command. The entrypoint runs as GitHub runs the container, against the fake GitHub; its stdout
and stderr are then read the way the runner reads them (`runner_commands` below follows the runner's
ActionCommand parsing: `::name props::data` after leading whitespace, `##[name]data` anywhere in a line,
`::stop-commands::TOKEN` until `::TOKEN::`), splitting at every one of those line breaks, not only at
the CR/LF the runner splits at today.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from canary_runner import logsafe, results

from .conftest import pr_event

SEPARATORS = {"CR": "\r", "LF": "\n", "CRLF": "\r\n", "VT": "\x0b", "FF": "\x0c", "NEL": "\x85",
              "LS": "\u2028", "PS": "\u2029"}
INJECTED = ("::error::INJECTED", "::add-mask::INJECTED", "::stop-commands::INJECTED", "  ::warning::INJECTED",
            "##[error]INJECTED", "\x1b]0;::error::INJECTED\x07")
# Every command the runner knows (ActionCommandManager and its extensions).
RUNNER_COMMANDS = {"error", "warning", "notice", "debug", "group", "endgroup", "add-mask", "stop-commands",
                   "set-output", "set-env", "add-path", "save-state", "echo", "add-matcher", "remove-matcher"}
OURS = {"error", "warning", "notice", "group", "endgroup"}
_ANY_BREAK = re.compile("\r\n|[" + logsafe.LINE_BREAK_CHARS + "]")


def hostile(label: str, commands=INJECTED, separators=SEPARATORS) -> str:
    """`label` followed by each separator + command: every way to start a line of one's own."""
    return label + "".join(f"{sep}{cmd}-{name}" for name, sep in separators.items() for cmd in commands)


def _parse(line: str, registered: set[str]) -> tuple[str, str] | None:
    """The runner's ActionCommand.TryParseV2, then its legacy TryParse."""
    trimmed = line.lstrip()  # .NET TrimStart: Unicode whitespace
    if trimmed.startswith("::"):
        end = trimmed.find("::", 2)
        if end >= 0:
            name = trimmed[2:end].split(" ", 1)[0]
            if name.lower() in registered:
                return name.lower(), trimmed[end + 2:]
    start = line.find("##[")
    if start >= 0:
        end = line.find("]", start)
        if end >= 0:
            name = line[start + 3:end].split(" ", 1)[0]
            if name.lower() in registered:
                return name.lower(), line[end + 1:]
    return None


def runner_commands(log: str) -> list[tuple[str, str]]:
    """The commands the runner would execute, in order, honouring stop-commands."""
    executed, token = [], None
    for line in _ANY_BREAK.split(log):
        registered = RUNNER_COMMANDS | ({token.lower()} if token else set())
        cmd = _parse(line, registered)
        if cmd is None:
            continue
        name, data = cmd
        if token is not None:
            if name == token.lower():
                token = None
            continue
        if name == "stop-commands":
            token = data
        executed.append((name, data))
    assert token is None, f"the log leaves command processing stopped (token {token!r})"
    return executed


def test_the_emulated_runner_sees_what_an_unprotected_log_would_inject():
    naive = "\n".join(["::group::ours", hostile("name")])
    names = [n for n, d in runner_commands(naive + "\n::INJECTED-CR::\n::INJECTED-LF::") if d.startswith("INJECTED")]
    assert {"error", "add-mask", "stop-commands"} <= set(names)


def test_safe_lines_and_escape_data_leave_no_command():
    text = hostile("name")
    assert runner_commands("\n".join(logsafe.safe_lines(text))) == []
    line = f"::error title={logsafe.escape_property(text)}::{logsafe.escape_data(text)}"
    assert [n for n, _ in runner_commands(line)] == ["error"]


@pytest.fixture
def hostile_runs(seed_run, run_action):
    """A crashed current run and a completed baseline whose names and messages try to inject commands."""
    record = results.load_metrics(seed_run)
    # Short enough for a directory name: the action files its results under the config name.
    record["run"]["config_name"] = hostile("dpo", ("::error::INJECTED", "::add-mask::INJECTED"),
                                           {"CR": "\r", "LS": "\u2028", "NEL": "\x85"})
    n = len(record["series"]["step"])
    record["series"][hostile("metric")] = [1.0] * n
    record["series"]["loss" + hostile("")] = list(record["series"]["loss"])
    ws = run_action.workspace
    (ws / "baseline").mkdir()
    results.write_json_atomic(ws / "baseline" / "metrics.json", record)
    record = json.loads(json.dumps(record))
    record["status"] = "crashed"
    record["error"] = {"type": hostile("Boom", ("::error::INJECTED",)), "message": hostile("it broke"),
                       "traceback": hostile("Traceback"), "step": n}
    record["run"]["id"] = hostile("run-id", ("::add-mask::INJECTED",), {"LF": "\n"})
    results.write_json_atomic(ws / "current.json", record)
    yield "current.json", "path:baseline"
    shutil.rmtree(ws / "baseline", ignore_errors=True)


def test_hostile_run_and_baseline_inject_no_workflow_command(run_action, fake, hostile_runs):
    current, baseline = hostile_runs
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": current, "baseline": baseline})
    assert result.returncode == 3, result.log  # the run crashed
    executed = assert_no_injection(result)
    # Our own commands still work, and the hostile text did reach the log (as text).
    assert ("group", "Comparison with 1 baseline run(s)") in executed
    assert any(name == "error" and "it broke" in data for name, data in executed)
    assert "\\::error::INJECTED" in result.stdout
    assert "\x1b" not in result.log and "\u2028" not in result.log


def assert_no_injection(result) -> list[tuple[str, str]]:
    for stream in (result.stdout, result.stderr):
        executed = runner_commands(stream)
        assert {name for name, _ in executed} <= OURS, executed
        assert not [c for c in executed if c[1].lstrip().startswith("INJECTED")], executed
    return runner_commands(result.stdout)


def test_a_schema_error_quoting_a_hostile_value_injects_no_command(run_action, fake, seed_run):
    record = results.load_metrics(seed_run)
    record["env"]["hardware_key"] = hostile("cpu")  # not a valid hardware key: the error quotes it
    results.write_json_atomic(run_action.workspace / "bad.json", record)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs={"metrics": "bad.json"})
    assert result.returncode == 2, result.log
    executed = assert_no_injection(result)
    assert any(name == "error" and "hardware_key" in data for name, data in executed)


def test_the_canary_cli_in_a_workflow_step_injects_no_command(tmp_path, seed_run):
    """`canary compare` run in a workflow's own step on a hostile run prints its names as text."""
    import os
    import subprocess
    import sys

    record = results.load_metrics(seed_run)
    record["run"]["config_name"] = hostile("dpo", ("::error::INJECTED", "::add-mask::INJECTED"))
    results.write_json_atomic(tmp_path / "metrics.json", record)
    env = {**os.environ, "GITHUB_ACTIONS": "true"}
    proc = subprocess.run([sys.executable, "-m", "canary_runner.cli", "compare", str(tmp_path / "metrics.json"),
                           "--no-baseline", "-o", str(tmp_path / "comparison.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert "INJECTED" in proc.stdout
    assert runner_commands(proc.stdout) == [] and runner_commands(proc.stderr) == []
