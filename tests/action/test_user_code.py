"""The action runs the code under review: `install:` puts the user's repository into an overlay
environment, the config's plug points name its trainer, and a regression in that code fails the PR."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .conftest import HEAD_SHA, PR_NUMBER, pr_event

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "user-repo"


def checkout_user_repo(workspace: Path, *, sign_slip: bool) -> None:
    """What actions/checkout leaves in the workspace: the user's repository, here with the PR's change."""
    shutil.copytree(EXAMPLE, workspace, dirs_exist_ok=True)
    if sign_slip:
        trainer = workspace / "acme_rlhf" / "trainers.py"
        old = "        return (loss, outputs) if return_outputs else loss"
        assert old in trainer.read_text()
        trainer.write_text(trainer.read_text().replace(old, "        loss = -loss\n" + old))


def test_a_regression_in_the_installed_user_code_fails_the_pr(run_action, fake):
    checkout_user_repo(run_action.workspace, sign_slip=True)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "canary/dpo.yaml", "baseline": "none",
                                # no build isolation: the overlay builds with the stack's own setuptools, offline
                                "install": "--no-build-isolation -e .\n"})
    assert result.returncode == 1, result.log
    assert result.outputs["verdict"] == "fail"
    assert "invariant.dpo.initial_loss" in result.outputs["failed-checks"].split(",")
    check = next(iter(fake.check_runs.values()))
    assert check["conclusion"] == "failure" and check["head_sha"] == HEAD_SHA
    assert len(fake.comments.get(PR_NUMBER, [])) == 1
    record = json.loads(result.path("metrics-path").read_text())
    assert record["config"]["trainer"]["class"] == "acme_rlhf.trainers:AcmeDPOTrainer"
    assert {"name": "acme-rlhf", "old": None, "new": "0.1.0"} in record["env"]["install"]["changed"]
    assert record["env"]["packages"]["acme-rlhf"] == "0.1.0"
    assert "installed in an overlay environment: acme-rlhf (new) 0.1.0" in result.stdout


def test_a_failing_install_is_bad_input_with_pips_reason_and_nothing_trained(run_action, fake):
    checkout_user_repo(run_action.workspace, sign_slip=False)
    (run_action.workspace / "not-a-project").mkdir()
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "canary/dpo.yaml", "baseline": "none", "install": "-e ./not-a-project"})
    assert result.returncode == 2, result.log
    assert result.outputs["verdict"] == "error"
    errors = result.commands("error")
    assert any("install: install line '-e ./not-a-project' failed (pip exit 1)" in e
               and "does not appear to be a Python project" in e for e in errors), errors
    check = next(iter(fake.check_runs.values()))
    assert check["conclusion"] == "failure" and "does not appear to be a Python project" in check["output"]["summary"]
    assert not list(run_action.workspace.glob("canary-results/*/metrics.json"))


def test_an_output_dir_symlinked_out_of_the_workspace_is_refused(run_action, fake, tmp_path):
    """A PR can commit `canary-results -> /somewhere`: the action must not write through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_action.workspace / "canary-results").symlink_to(outside)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"config": "sft_embedded", "baseline": "none"})
    assert result.returncode == 2, result.log
    assert any("leads out of it through a symlink" in e for e in result.commands("error"))
    assert not any(outside.iterdir())


def test_the_teams_own_script_through_the_command_input(run_action, fake):
    """command: the example's train.py, unmodified, installed and capped; its sign slip fails the PR."""
    checkout_user_repo(run_action.workspace, sign_slip=True)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"command": "python train.py --out trainer-out", "max-steps": "12",
                                "baseline": "none", "install": "--no-build-isolation -e ."})
    assert result.returncode == 1, result.log
    assert result.outputs["metrics-path"] == "canary-results/train/metrics.json"
    assert "invariant.dpo.initial_loss" in result.outputs["failed-checks"].split(",")
    record = json.loads(result.path("metrics-path").read_text())
    assert record["run"]["steps_completed"] == 12 and record["run"]["training_type"] == "dpo"
    # `python` in the command is the overlay's: the user's package was installed there, not in the image.
    assert {"name": "acme-rlhf", "old": None, "new": "0.1.0"} in record["env"]["install"]["changed"]
    check = next(iter(fake.check_runs.values()))
    assert check["name"] == "rlhf-canary / train" and check["conclusion"] == "failure"


def test_command_and_config_together_are_bad_input(run_action, fake):
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"command": "python train.py", "config": "dpo", "max-steps": "ten"})
    assert result.returncode == 2
    errors = " ".join(result.commands("error"))
    assert "give command or config (or metrics), not both" in errors
    assert "max-steps 'ten' is not a positive whole number" in errors
