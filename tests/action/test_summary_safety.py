"""Everything the action writes to the job summary and the check run is inert markdown, on every path:
the report, and the action's own messages (bad input, a failed baseline write, the action's failure)
that quote text from a run or an artifact."""

from __future__ import annotations

from canary_runner import results
from report.mdcheck import inertness_problems, visible_text

from .conftest import pr_event

HOSTILE = ("![pixel](https://evil.example/p.png) [click](https://evil.example/x) @everyone <img src=x onerror=1> "
           "<!-- rlhf-canary:config=other --> `code` **bold** https://evil.example")


def test_a_schema_error_quoting_a_hostile_value_renders_inert(run_action, fake, seed_run):
    record = results.load_metrics(seed_run)
    record["env"]["hardware_key"] = HOSTILE  # not a valid hardware key: the schema error quotes it
    results.write_json_atomic(run_action.workspace / "bad.json", record)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs={"metrics": "bad.json"})
    assert result.returncode == 2, result.log
    assert "bad input" in result.summary and "hardware_key" in result.summary
    assert inertness_problems(result.summary) == []
    assert "@everyone" in visible_text(result.summary).replace("\u200b", "")  # shown, as text
    assert "<!--" not in result.summary
