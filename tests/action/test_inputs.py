"""The action's contract without training: action.yml, inputs, workflow commands, outputs, bad input."""

from __future__ import annotations

import io

import pytest
import yaml

from canary_runner import action
from canary_runner.action import INPUT_DEFAULTS, OUTPUTS, InputError, Workflow, escape_data, escape_property

from .conftest import REPO, parse_output_file, pr_event


def test_action_yml_declares_exactly_the_inputs_and_outputs_the_code_reads():
    meta = yaml.safe_load((REPO / "action.yml").read_text())
    assert meta["runs"] == {"using": "docker", "image": "docker://ghcr.io/org/rlhf-canary:1"}  # prebuilt, not built per job
    assert set(meta["inputs"]) == set(INPUT_DEFAULTS)
    for name, spec in meta["inputs"].items():
        expected = "${{ github.token }}" if name == "github-token" else INPUT_DEFAULTS[name]
        assert str(spec.get("default", "")) == expected, name
    assert set(meta["outputs"]) == set(OUTPUTS)


def test_dockerfile_uses_an_exec_form_python_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    entry = [line for line in text.splitlines() if line.startswith("ENTRYPOINT")]
    assert entry == ['ENTRYPOINT ["/opt/venv/bin/python", "/opt/rlhf-canary/entrypoint.py"]']
    assert "NVIDIA_VISIBLE_DEVICES=all" in text
    # torch from the CUDA index first, then the lock with torch already satisfied.
    assert text.index("TORCH_INDEX_URL\" \"torch==") < text.index("-r /tmp/requirements.lock")


@pytest.mark.parametrize("raw, data, prop", [
    ("50% slower", "50%25 slower", "50%25 slower"),
    ("line1\nline2\r\n", "line1%0Aline2%0D%0A", "line1%0Aline2%0D%0A"),
    ("a:b,c", "a:b,c", "a%3Ab%2Cc"),
    ("%0A is not a newline", "%250A is not a newline", "%250A is not a newline"),
    ("::error::injected", "::error::injected", "%3A%3Aerror%3A%3Ainjected"),
])
def test_workflow_command_escaping(raw, data, prop):
    assert escape_data(raw) == data
    assert escape_property(raw) == prop


def test_an_annotation_cannot_inject_a_second_command():
    out = io.StringIO()
    Workflow({}, out).error("bad\n::set-output name=verdict::pass", title="t: x, y", file="configs/a.yaml", line=1)
    text = out.getvalue()
    assert text.count("\n") == 1
    assert text == "::error title=t%3A x%2C y,file=configs/a.yaml,line=1::bad%0A::set-output name=verdict::pass\n"


def test_outputs_use_heredocs_that_survive_any_value(tmp_path):
    path = tmp_path / "out"
    wf = Workflow({"GITHUB_OUTPUT": str(path)}, io.StringIO())
    tricky = "line one\nghadelimiter_x\nverdict=pass\n"
    wf.set_output("verdict", "fail")
    wf.set_output("failed-checks", tricky)
    wf.set_output("empty", "")
    assert parse_output_file(path.read_text()) == {"verdict": "fail", "failed-checks": tricky, "empty": ""}


def test_step_summary_is_kept_under_one_mebibyte(tmp_path):
    path = tmp_path / "summary"
    wf = Workflow({"GITHUB_STEP_SUMMARY": str(path)}, io.StringIO())
    assert wf.append_summary("# head\n" + "row\n" * 400_000)
    assert not wf.append_summary("x" * (1 << 20))  # no room left for more than the note
    data = path.read_bytes()
    assert len(data) <= 1 << 20 and data.startswith(b"# head\n") and b"1 MiB" in data[-200:]


def test_inputs_hyphenated_names_and_defaults():
    env = {"INPUT_CONFIG": "dpo", "INPUT_GITHUB-TOKEN": "ghs_abc", "INPUT_CHECK-NAME": "  gate  ",
           "INPUT_FAIL-ON": "WARN", "INPUT_COMMENT": "False", "INPUT_TIER": ""}
    inp = action.read_inputs(env)
    assert (inp.config, inp.token, inp.check_name, inp.fail_on, inp.comment, inp.tier, inp.mode, inp.baseline) == \
        ("dpo", "ghs_abc", "gate", "warn", False, "", "pr", "branch:canary-baselines")
    assert "ghs_abc" not in repr(inp)
    # `docker run -e INPUT_GITHUB_TOKEN=...` by hand works too.
    assert action.read_inputs({"INPUT_CONFIG": "dpo", "INPUT_GITHUB_TOKEN": "t"}).token == "t"


def test_all_input_problems_are_reported_at_once():
    with pytest.raises(InputError) as err:
        action.read_inputs({"INPUT_MODE": "deploy", "INPUT_TIER": "huge", "INPUT_FAIL-ON": "sometimes",
                            "INPUT_COMMENT": "maybe", "INPUT_BASELINE": "git:main"})
    text = "\n".join(err.value.problems)
    for words in ("mode 'deploy'", "tier 'huge'", "fail-on 'sometimes'", "comment 'maybe'",
                  "unknown baseline source 'git'", "config is empty"):
        assert words in text


def test_training_type_and_tier_pick_a_shipped_config():
    assert action.resolve_config("dpo", "perf").name == "dpo_perf.yaml"
    assert action.resolve_config("grpo", "").name == "grpo_smoke.yaml"
    assert action.resolve_config("dpo_embedded", "").name == "dpo_embedded.yaml"
    with pytest.raises(InputError, match="no shipped smoke config for training type 'reward'"):
        action.resolve_config("reward", "smoke")
    with pytest.raises(InputError, match="not found"):
        action.resolve_config("configs/nope.yaml", "")


BAD_INPUTS = [
    ({"config": "dpo", "tier": "weekly"}, "tier 'weekly' is not one of smoke, perf, nightly"),
    ({"config": "dpo_embedded", "baseline": "s3:bucket"}, "unknown baseline source 's3'"),
    ({"config": "dpo_embedded", "baseline": "branch:bad..name"}, "invalid branch name"),
    ({"config": "configs/missing.yaml"}, "config 'configs/missing.yaml' not found"),
    ({"config": "dpo_embedded", "mode": "update-baseline", "baseline": "none"}, "mode update-baseline stores"),
    ({"config": "dpo_embedded", "mode": "update-baseline"}, "only from runs on the default branch"),
    ({"config": "dpo_embedded", "thresholds": "missing.yaml"}, "thresholds file 'missing.yaml' not found"),
    ({"metrics": "nowhere/metrics.json"}, "metrics: nowhere/metrics.json: no such file"),
]


@pytest.mark.parametrize("inputs, message", BAD_INPUTS, ids=[m[:30] for _, m in BAD_INPUTS])
def test_bad_inputs_fail_fast_with_an_error_annotation(run_action, fake, inputs, message):
    result = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs=inputs, timeout=60)
    assert result.returncode == 2, result.log
    errors = result.commands("error")
    assert any(message in e for e in errors), result.stdout
    assert "::error title=rlhf-canary%3A bad input::" in result.stdout
    assert "Traceback" not in result.log
    assert result.outputs["verdict"] == "error"
    assert "bad input" in result.summary
    # Nothing ran, and nothing was started on GitHub before the inputs were known to be good.
    assert not (result.workspace / "canary-results").exists()
    assert fake.calls("POST", "/check-runs") == [] and fake.calls("POST", "/statuses/") == []


def test_a_config_that_does_not_validate_is_bad_input(run_action, fake):
    (run_action.workspace / "canary.yaml").write_text("name: mine\ntraining_type: dpo\ndpo: {}\ntrain:\n  max_stpes: 3\n")
    result = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs={"config": "canary.yaml"},
                        timeout=60)
    assert result.returncode == 2
    assert any("train.max_stpes: unknown field" in e for e in result.commands("error"))


@pytest.mark.parametrize("verdict, run_status, fail_on, conclusion, code", [
    ("pass", "completed", "fail", "success", 0),
    ("warn", "completed", "fail", "neutral", 0),
    ("warn", "completed", "warn", "failure", 1),
    ("fail", "completed", "fail", "failure", 1),
    ("fail", "completed", "warn", "failure", 1),
    ("fail", "completed", "never", "neutral", 0),
    ("no-baseline", "completed", "warn", "neutral", 0),
    ("fail", "crashed", "fail", "failure", 3),
    ("fail", "timeout", "never", "neutral", 0),  # the check follows the step: not blocking under never
])
def test_verdict_and_fail_on_decide_the_check_and_the_exit_code(verdict, run_status, fail_on, conclusion, code):
    act = action.Action({}, Workflow({}, io.StringIO()))
    act.inputs = action.Inputs(config="dpo", fail_on=fail_on)
    act.outcome = action.Outcome(verdict=verdict, run_status=run_status)
    assert (act.conclusion(), act.exit_code()) == (conclusion, code)


def test_the_image_build_context_has_what_the_package_build_needs():
    """canary_runner/configs and canary_runner/templates are symlinks out of the package: the Dockerfile
    must copy their targets and .dockerignore must let them through, or the wheel ships without them."""
    dockerfile = (REPO / "Dockerfile").read_text()
    allowed = {line[1:].strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    links = [p for p in (REPO / "canary_runner").iterdir() if p.is_symlink()]
    for link in links:
        target = (link.parent / link.readlink()).resolve().relative_to(REPO).as_posix()
        assert f"COPY {target} /opt/rlhf-canary/{target}" in dockerfile, target
        assert target in allowed, target
    for path in ("pyproject.toml", "README.md", "requirements.lock", "entrypoint.py", "canary_runner"):
        assert path in allowed, path
