"""End to end: entrypoint.py run as GitHub runs the container, real training on the embedded model, the
fake GitHub on loopback validating every request against GitHub's OpenAPI description.

Trained runs are shared to keep the suite short: `seed_run` (one real dpo_embedded run) is the baseline or
the finished run of the cases that do not need a fresh one; the cases that are about training (first
run, pass, NaN, crash, baseline update) train for real.
"""

from __future__ import annotations

import io
import json
import math
import statistics
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from werkzeug import Response

from canary_runner import results
from canary_runner.report import marker

from .conftest import HEAD_SHA, MAIN_SHA, MERGE_SHA, PR_NUMBER, pr_event, push_event, workflow_run_event

BRANCH = "canary-baselines"
CONFIG = "dpo_embedded"
MARKER = marker(CONFIG)
BOT = "github-actions[bot]"
# On a shared 2-core test machine timing and memory swing with whatever else runs; the pass cases
# judge everything else (loss curve, DPO invariants, stability) and only report these.
LOOSE_THRESHOLDS = """\
version: 1
checks:
  perf.step_time: {severity: info}
  perf.tokens_per_s: {severity: info}
  memory.cpu_rss_anon_peak: {severity: info}
  memory.cpu_rss_anon_rise: {severity: info}
"""


# ------------------------------------------------------------------------------------------ helpers
def copy_run(src: Path, dest: Path, *, time_factor: float = 1.0, steady: bool = False) -> Path:
    """Another run of the same config: a new run id, step (and phase) times scaled by `time_factor`.
    `steady` replaces the step times with the run's median and a 1% wobble, so a verdict on timing
    does not depend on how loaded this machine was when the seed run trained."""
    record = results.load_metrics(src)
    series = record["series"]
    phases = sorted(k for k in series if k.endswith("_time_s") and k != "step_time_s")
    for key in ["step_time_s", *phases]:
        values = series[key]
        if steady:
            median = statistics.median(v for v in values if isinstance(v, (int, float)))
            values = [median * (1 + 0.01 * math.sin(i)) if isinstance(v, (int, float)) else v for i, v in enumerate(values)]
        series[key] = [v * time_factor if isinstance(v, (int, float)) else v for v in values]
    record["summary"] = results.summarize(series, phases)
    record["run"]["id"] = f"{CONFIG}-copy-{uuid.uuid4().hex[:8]}"
    out = dest / "metrics.json" if dest.suffix != ".json" else dest
    results.write_json_atomic(out, record)
    return out


def hardware_key(metrics: Path) -> str:
    return json.loads(metrics.read_text())["env"]["hardware_key"]


def seed_branch(fake, metrics: Path) -> str:
    path = f"{CONFIG}/{hardware_key(metrics)}/metrics.json"
    fake.put_file(BRANCH, path, metrics.read_bytes())
    return path


def our_comments(fake, number: int = PR_NUMBER) -> list[dict]:
    return [c for c in fake.comments.get(number, []) if c["user"]["login"] == BOT]


def only_check_run(fake) -> dict:
    assert len(fake.check_runs) == 1, fake.check_runs
    return next(iter(fake.check_runs.values()))


def no_check_or_status_on_the_merge_commit(fake) -> None:
    for r in fake.calls("POST", r"/(check-runs|statuses/)"):
        assert MERGE_SHA not in r.path and (r.json or {}).get("head_sha") != MERGE_SHA


@pytest.fixture
def twin(seed_run, tmp_path) -> Path:
    """A second run of dpo_embedded with the seed's numbers: a baseline that the seed run passes against."""
    return copy_run(seed_run, tmp_path / "workspace" / "twin")  # path: baselines lie in the workspace


@pytest.fixture
def loose(run_action) -> str:
    (run_action.workspace / "thresholds.yaml").write_text(LOOSE_THRESHOLDS)
    return "thresholds.yaml"


# ----------------------------------------------------------------------------------- real training
def test_pr_first_run_without_a_baseline(run_action, fake):
    started = []
    fake.fault("POST", r"/check-runs$", action=lambda: started.append(time.time()))
    result = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs={"config": CONFIG})
    assert result.returncode == 0, result.log
    out = result.outputs
    assert out["verdict"] == "no-baseline" and out["failed-checks"] == ""
    assert out["metrics-path"] == f"canary-results/{CONFIG}/metrics.json"
    assert result.path("metrics-path").is_file() and result.path("report-path").is_file()
    assert result.path("comparison-path").is_file()
    assert any("does not exist" in n for n in result.commands("notice"))

    # The check run was opened in_progress on the PR head before training started, then completed.
    first = fake.calls("POST", r"/check-runs$")[0].json
    assert first["status"] == "in_progress" and first["head_sha"] == HEAD_SHA
    run_started = results.load_metrics(result.path("metrics-path"))["run"]["started_at"]
    from datetime import datetime
    assert started[0] < datetime.fromisoformat(run_started).timestamp()
    check = only_check_run(fake)
    assert check["status"] == "completed" and check["conclusion"] == "neutral" and check["head_sha"] == HEAD_SHA
    assert check["details_url"] == "https://github.com/octo-org/canary-app/actions/runs/4242"
    no_check_or_status_on_the_merge_commit(fake)

    comments = our_comments(fake)
    assert len(comments) == 1 and comments[0]["body"].startswith(MARKER)
    assert CONFIG in result.summary and len(result.summary) > 200
    assert (result.workspace / out["report-path"]).read_text().strip()


def test_pr_pass_against_the_branch_baseline_then_a_rerun_updates_the_same_comment(run_action, fake, seed_run, loose):
    seed_branch(fake, copy_run(seed_run, run_action.root / "base"))
    impostor = fake.add_comment(PR_NUMBER, f"{MARKER}\nI typed the marker myself", "mallory")
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": CONFIG, "thresholds": loose})
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "pass", result.summary
    check = only_check_run(fake)
    assert check["conclusion"] == "success" and check["head_sha"] == HEAD_SHA
    first = our_comments(fake)
    assert len(first) == 1 and first[0]["body"].startswith(MARKER)

    # Rerun the job (same PR, attempt 2): the comment is edited in place, never duplicated.
    rerun = run_action(event_name="pull_request", event=pr_event(fake.repo),
                       inputs={"metrics": result.outputs["metrics-path"], "thresholds": loose},
                       env={"GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.returncode == 0, rerun.log
    after = our_comments(fake)
    assert len(after) == 1 and after[0]["id"] == first[0]["id"]
    assert "attempts/2" in after[0]["body"]
    assert len(fake.calls("POST", r"/issues/\d+/comments$")) == 1
    assert len(fake.calls("PATCH", r"/issues/comments/\d+$")) == 1
    assert impostor["body"] == f"{MARKER}\nI typed the marker myself"


def test_pr_regression_nan_from_a_huge_learning_rate(run_action, fake, seed_run):
    ws = run_action.workspace
    (ws / "canaries").mkdir()
    (ws / "canaries" / "dpo_nan.yaml").write_text(f"""\
# A PR that sets the learning rate to 1e20 without gradient clipping.
name: {CONFIG}
training_type: dpo
model: {{name: "embedded:tiny-llama"}}
dataset: {{name: "embedded:preference"}}
train:
  max_steps: 6
  warmup_steps: 1
  per_device_batch_size: 8
  learning_rate: 1.0e20
  max_grad_norm: null
dpo: {{beta: 0.1}}
""")
    base = copy_run(seed_run, ws / "base")  # path: baselines lie in the workspace
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "canaries/dpo_nan.yaml", "baseline": f"path:{base.parent}"})
    assert result.returncode == 1, result.log
    assert result.outputs["verdict"] == "fail"
    failed = result.outputs["failed-checks"].split(",")
    assert "stability.nan_inf" in failed
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert any("file=canaries/dpo_nan.yaml" in e for e in errors), result.stdout
    check = only_check_run(fake)
    assert check["conclusion"] == "failure"
    assert {a["path"] for a in check["annotations"]} == {"canaries/dpo_nan.yaml"}
    assert any(a["annotation_level"] == "failure" for a in check["annotations"])
    assert "NaN" in our_comments(fake)[0]["body"] or "nan" in our_comments(fake)[0]["body"].lower()


def test_push_to_main_updates_the_baseline_branch_despite_a_409(run_action, fake, seed_run, loose):
    path = seed_branch(fake, copy_run(seed_run, run_action.root / "base"))
    # Another job commits to the branch between our read of the file's sha and our write: 409.
    fake.fault("PUT", r"/metrics\.json$", status=409, body={"message": f"{path} does not match"})
    result = run_action(event_name="push", event=push_event(fake.repo),
                        inputs={"config": CONFIG, "mode": "update-baseline", "thresholds": loose})
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "pass"
    written = fake.files[BRANCH][path]
    assert written == result.path("metrics-path").read_bytes()
    history = [p for p in fake.files[BRANCH] if p.startswith(path.rsplit("/", 1)[0] + "/history/")]
    assert len(history) == 1 and history[0].endswith(f"-{MAIN_SHA[:12]}.json")
    assert len(fake.calls("PUT", r"/metrics\.json$")) == 2  # the 409, then the retry
    assert "Baseline updated" in result.summary and "1 conflicting write(s) retried" in result.summary
    check = only_check_run(fake)
    assert check["head_sha"] == MAIN_SHA and check["conclusion"] == "success"
    assert fake.comments == {}  # no PR, no comment


def test_a_crashed_run_still_completes_the_check_with_the_error(run_action, fake, seed_run):
    (run_action.workspace / "slow.yaml").write_text(f"""\
name: {CONFIG}
training_type: dpo
dpo: {{}}
train: {{max_steps: 100000, warmup_steps: 1, timeout_s: 1}}
""")
    base = copy_run(seed_run, run_action.workspace / "base")  # path: baselines lie in the workspace
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "slow.yaml", "baseline": f"path:{base.parent}"})
    assert result.returncode == 3, result.log
    assert result.outputs["verdict"] == "fail"
    assert any("timeout" in e for e in result.commands("error"))
    check = only_check_run(fake)
    assert check["status"] == "completed" and check["conclusion"] == "failure"
    assert "timeout" in (check["output"]["title"] + check["output"]["summary"]).lower()
    assert "timeout" in result.summary.lower()
    assert results.load_metrics(result.path("metrics-path"))["status"] == "timeout"


# ------------------------------------------------------------------- finished runs (metrics input)
def test_pr_much_slower_than_baseline_fails_but_fail_on_never_keeps_the_step_green(run_action, fake, seed_run):
    current = copy_run(seed_run, run_action.root / "current", steady=True)
    fast = copy_run(seed_run, run_action.workspace / "fast", time_factor=0.2, steady=True)  # main was 5x faster
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(current), "baseline": f"path:{fast.parent}", "fail-on": "never"})
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "fail"
    assert "perf.step_time" in result.outputs["failed-checks"].split(",")
    assert only_check_run(fake)["conclusion"] == "neutral"  # reported, not blocking
    assert our_comments(fake)[0]["body"].startswith(MARKER)


def test_fork_pr_with_a_read_only_token_reports_in_the_job_summary(run_action, fake, seed_run, twin):
    fake.denied |= {"checks", "comments", "statuses"}
    result = run_action(event_name="pull_request", event=pr_event(fake.repo, head_repo="mallory/canary-app"),
                        inputs={"metrics": str(seed_run), "baseline": f"path:{twin.parent}"})
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "pass"
    assert "job summary only" in result.log and "Traceback" not in result.log
    assert any("not published" in w or "job summary only" in w for w in result.commands("warning"))
    assert CONFIG in result.summary and "refused" in result.summary
    assert fake.check_runs == {} and fake.comments == {} and fake.statuses == []
    # Tried each channel once, then fell back: check run, pending status, comment, final status.
    assert len(fake.calls("POST", r"/check-runs$")) == 1
    assert len(fake.calls("POST", r"/statuses/")) == 2


def test_a_502_then_success_is_retried(run_action, fake, seed_run, twin):
    fake.fault("POST", r"/check-runs$", status=502, body={"message": "Bad Gateway"})
    fake.fault("POST", r"/issues/\d+/comments$", status=502, body={"message": "Bad Gateway"})
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": f"path:{twin.parent}"})
    assert result.returncode == 0, result.log
    assert "got 502" in result.log  # a POST that may have landed is looked for, then posted again
    assert only_check_run(fake)["conclusion"] == "success"
    assert len(our_comments(fake)) == 1
    assert len(fake.calls("POST", r"/check-runs$")) == 2 and len(fake.calls("POST", r"/comments$")) == 2


def test_a_403_rate_limit_waits_for_retry_after(run_action, fake, seed_run, twin):
    fake.fault("PATCH", r"/check-runs/\d+$", status=403,
               body={"message": "API rate limit exceeded for installation.", "documentation_url": "https://docs.github.com"},
               headers={"retry-after": "1", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1750000000"})
    t0 = time.monotonic()
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": f"path:{twin.parent}"})
    assert result.returncode == 0, result.log
    assert time.monotonic() - t0 >= 1.0
    assert "rate limit" in result.log
    check = only_check_run(fake)
    assert check["status"] == "completed" and check["conclusion"] == "success"
    assert len(fake.calls("PATCH", r"/check-runs/\d+$")) == 2


def test_workflow_run_reports_a_fork_pr_found_from_the_event(run_action, fake, seed_run, twin):
    fake.pulls = [{"number": 9, "head": {"sha": HEAD_SHA, "ref": "feature", "user": {"login": "mallory"}}}]
    result = run_action(event_name="workflow_run",
                        event=workflow_run_event(fake.repo, head_repo="mallory/canary-app"),
                        inputs={"metrics": str(seed_run), "baseline": f"path:{twin.parent}"},
                        env={"GITHUB_SHA": MAIN_SHA, "GITHUB_REF": "refs/heads/main"})
    assert result.returncode == 0, result.log
    assert len(our_comments(fake, 9)) == 1
    assert only_check_run(fake)["head_sha"] == HEAD_SHA
    assert fake.calls("GET", r"/pulls$")[0].query["head"] == "mallory:feature"


def test_workflow_run_may_not_update_the_baseline_for_a_pr(run_action, fake, seed_run):
    result = run_action(event_name="workflow_run",
                        event=workflow_run_event(fake.repo, head_repo="mallory/canary-app"),
                        inputs={"metrics": str(seed_run), "mode": "update-baseline"},
                        env={"GITHUB_SHA": MAIN_SHA, "GITHUB_REF": "refs/heads/main"})
    assert result.returncode == 2
    assert any("only from runs on the default branch" in e for e in result.commands("error"))
    assert fake.calls("PUT", "/contents/") == []


def test_artifact_baseline_from_the_default_branch(run_action, fake, blob_server, seed_run, twin):
    fake.blob_base = blob_server.url_for("").rstrip("/")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metrics.json", twin.read_bytes())
    art = fake.add_artifact("canary-baseline", buf.getvalue(), head_branch="main", created_at="2025-01-03T00:00:00Z")
    blob_server.expect_request(f"/artifact-{art['id']}.zip").respond_with_handler(
        lambda request: Response(fake.artifact_zips[art["id"]], content_type="application/zip"))
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "artifact:canary-baseline"})
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "pass"
    assert (result.workspace / f"canary-results/{CONFIG}/baseline/baseline-0.json").read_bytes() == twin.read_bytes()


def test_nightly_schedule_updates_a_path_baseline(run_action, fake, seed_run):
    # A schedule payload names no repository: the default branch comes from the API.
    result = run_action(event_name="schedule", event={"schedule": "17 3 * * *"},
                        inputs={"metrics": str(seed_run), "mode": "update-baseline", "baseline": "path:baselines"})
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "no-baseline"
    stored = result.workspace / "baselines" / CONFIG / hardware_key(seed_run) / "metrics.json"
    assert stored.read_bytes() == seed_run.read_bytes()
    assert len(list(stored.parent.glob("history/*.json"))) == 1
    assert fake.calls("GET", r"^/repos/[^/]+/[^/]+$")
    assert only_check_run(fake)["head_sha"] == MAIN_SHA and fake.comments == {}

    # The next night compares with it.
    again = run_action(event_name="schedule", event={"schedule": "17 3 * * *"},
                       inputs={"metrics": str(copy_run(seed_run, run_action.root / "night2")),
                               "mode": "update-baseline", "baseline": "path:baselines"})
    assert again.returncode == 0 and again.outputs["verdict"] == "pass", again.log
    assert len(list(stored.parent.glob("history/*.json"))) == 2


def test_workflow_dispatch_without_a_comment(run_action, fake, seed_run, twin):
    event = {"inputs": {"config": "dpo", "tier": "perf"}, "ref": "refs/heads/main",
             "repository": {"full_name": fake.repo, "default_branch": "main"}}
    result = run_action(event_name="workflow_dispatch", event=event,
                        inputs={"metrics": str(seed_run), "baseline": f"path:{twin.parent}", "comment": "false",
                                "check-name": "canary (manual)"})
    assert result.returncode == 0, result.log
    check = only_check_run(fake)
    assert check["name"] == "canary (manual)" and check["head_sha"] == MAIN_SHA
    assert fake.calls("GET", "/comments") == [] and fake.comments == {}
