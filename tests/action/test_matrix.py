"""The aggregating half of a matrix workflow (mode aggregate) against the fake GitHub: the matrix's
comparison artifacts, downloaded into the workspace, become one sticky comment and one check run with a
row per config; a bad artifact is named and left out. And the single-config report is reachable: PNG
plots beside report.md, the comment linking the run's artifacts, not a path on the runner.
No training here: the matrix's comparisons are the report fixtures, the single run is the shared seed run."""

from __future__ import annotations

import json

from canary_runner import action_matrix
from canary_runner.report import COMMENT_LIMIT
from canary_runner.report_matrix import matrix_marker
from report.cases import matrix_cases
from report.mdcheck import tables, visible_text

from .conftest import PR_NUMBER, pr_event
from .test_entrypoint import copy_run, only_check_run, our_comments

RUN_ID = 4242  # GITHUB_RUN_ID in the harness
RUN_URL = f"https://github.com/octo-org/canary-app/actions/runs/{RUN_ID}"


def download(workspace, fake) -> dict[str, str]:
    """What actions/download-artifact (pattern canary-*, path canary-artifacts) leaves: a folder per artifact;
    the fake lists the same artifacts as this run's. Two bad ones: corrupt JSON and a schema violation."""
    urls = {}
    for name, comparison in matrix_cases().items():
        folder = workspace / "canary-artifacts" / name
        folder.mkdir(parents=True)
        (folder / "comparison.json").write_text(json.dumps(comparison))
        (folder / "metrics.json").write_text("{}")
        art = fake.add_artifact(name, b"PK", head_branch="feature", created_at="2026-11-29T12:00:00Z",
                                event="pull_request")
        art["workflow_run"]["id"] = RUN_ID
        urls[name] = f"{RUN_URL}/artifacts/{art['id']}"
    for name, text in (("canary-corrupt", '{"schema_version": 1, "verdict": '),
                       ("canary-wrong", json.dumps({"schema_version": 1, "verdict": "maybe"}))):
        (workspace / "canary-artifacts" / name).mkdir()
        (workspace / "canary-artifacts" / name / "comparison.json").write_text(text)
    return urls


def test_matrix_is_one_sticky_comment_and_one_check_with_a_row_per_config(run_action, fake):
    urls = download(run_action.workspace, fake)
    inputs = {"mode": "aggregate", "comparisons": "canary-artifacts"}
    result = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs=inputs)
    assert result.returncode == 1, result.log  # configs failed: fail-on fail
    assert result.outputs["verdict"] == "fail"
    assert "sft_embedded/perf.step_time" in result.outputs["failed-checks"].split(",")

    comments = our_comments(fake)
    assert len(comments) == 1
    body = comments[0]["body"]
    assert body.startswith(matrix_marker() + "\n") and len(body) <= COMMENT_LIMIT
    rows = tables(body)[0]
    configs = rows.column("Config")
    for name in ("dpo_embedded", "grpo_embedded", "dpo_embedded_bf16", "ppo_embedded", "dpo_embedded_resume",
                 "sft_embedded", "canary-corrupt/comparison.json", "canary-wrong/comparison.json"):
        assert name in configs, (name, configs)
    assert body.count("<details><summary>") >= 6
    # Each config's section links its own artifact (from this run's artifacts API); the footer the run.
    for url in urls.values():
        assert url in body
    assert RUN_URL in body and "canary-artifacts/" not in visible_text(body).split("---")[-1]
    # The bad artifacts are named, left out, and said in the log.
    warnings = result.commands("warning")
    assert any("canary-corrupt/comparison.json" in w and "not valid JSON" in w for w in warnings), warnings
    assert any("canary-wrong/comparison.json" in w and "schema" in w for w in warnings), warnings

    check = only_check_run(fake)
    assert check["conclusion"] == "failure" and check["name"] == "rlhf-canary / matrix"
    assert "configs failed" in check["output"]["title"]
    assert "sft_embedded" in check["output"]["summary"]
    assert "rlhf-canary matrix" in result.summary
    assert (run_action.workspace / result.outputs["report-path"]).is_file()

    # The next push updates the same comment: one per matrix, whatever the configs' own comments.
    again = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs=inputs)
    assert again.returncode == 1, again.log
    assert len(our_comments(fake)) == 1 and fake.calls("PATCH", r"/issues/comments/")


def test_aggregate_needs_comparisons_and_nothing_to_train(run_action, fake):
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"mode": "aggregate", "comparisons": "nowhere"})
    assert result.returncode == 2 and "matches no file" in result.log
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"mode": "aggregate", "config": "dpo_embedded", "comparisons": "x"})
    assert result.returncode == 2 and "trains nothing" in result.log
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "dpo_embedded", "comparisons": "x"})
    assert result.returncode == 2 and "mode aggregate only" in result.log
    assert not fake.comments.get(PR_NUMBER)


def test_no_readable_comparison_is_reported_not_a_traceback(run_action, fake):
    folder = run_action.workspace / "arts" / "canary-x"
    folder.mkdir(parents=True)
    (folder / "comparison.json").write_text("[" * 100_000)  # nested past any recursion limit
    big = run_action.workspace / "arts" / "canary-big"
    big.mkdir()
    with open(big / "comparison.json", "wb") as f:
        f.truncate(action_matrix.MAX_COMPARISON_BYTES + 1)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"mode": "aggregate", "comparisons": "arts"})
    assert result.returncode == 3 and result.outputs["verdict"] == "error", result.log
    assert "Traceback" not in result.log
    shown = visible_text(our_comments(fake)[0]["body"])
    assert "canary-x/comparison.json" in shown and "canary-big/comparison.json" in shown and "MiB" in shown


def test_single_report_has_its_plots_and_links_the_artifacts_not_a_runner_path(run_action, fake, seed_run):
    copy_run(seed_run, run_action.workspace / "twin")
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "path:twin", "output-dir": "out"})
    assert result.returncode in (0, 1), result.log
    out = run_action.workspace / "out"
    pngs = sorted(p.relative_to(out).as_posix() for p in (out / "plots").glob("*.png"))
    assert pngs, "no plots in the output directory"
    markdown = (out / "report.md").read_text()
    for png in pngs:
        assert f"]({png})" in markdown  # relative: they travel together in the artifact
    body = our_comments(fake)[0]["body"]
    assert f"{RUN_URL}#artifacts" in body and f"({RUN_URL})" in body
    assert "out/report.md" not in body and str(run_action.workspace) not in body
    assert "out/report.md" not in json.dumps(only_check_run(fake)["output"])
