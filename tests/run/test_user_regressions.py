"""A regression that exists only in the user's code is caught.

The example user repository (examples/user-repo) is copied twice: as it ships (the PR's base) and with
one change a pull request might make to the team's own trainer or reward function. Both run through
`canary run` in fresh processes, as in CI, and `canary compare` must fail the change on the check
that fits it.

The extra forward pass's step-time failure is asserted where it is measured reliably, against the
base on the same runner, pair by pair (tests/action/test_ab.py): one stored run a side is at the
mercy of the shared machine (in one CI run the base happened to run 60% slow and hid the +56%).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "user-repo"

# (file, old text, new text): one pull request each.
CHANGES = {
    "extra_forward": ("acme_rlhf/trainers.py", "        loss, outputs = super().compute_loss(",
                      "        with torch.no_grad():  # a diagnostics pass: the same forward again\n"
                      "            super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)\n"
                      "        loss, outputs = super().compute_loss("),
    "loss_sign": ("acme_rlhf/trainers.py", "        return (loss, outputs) if return_outputs else loss",
                  "        loss = -loss  # a sign slip in a refactor\n"
                  "        return (loss, outputs) if return_outputs else loss"),
    "constant_reward": ("acme_rlhf/rewards.py", "    scores = []\n",
                        "    return [0.5 for _ in completions]  # disabled while the scorer is rewritten\n    scores = []\n"),
}


def user_repo(root: Path, change: str | None) -> Path:
    shutil.copytree(EXAMPLE, root)
    if change == "extra_forward":  # this PR also bumps the package's version
        pyproject = root / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    if change:
        file, old, new = CHANGES[change]
        text = (root / file).read_text()
        assert old in text, f"the example's {file} changed: update CHANGES[{change!r}]"
        text = text.replace(old, new)
        if "torch." in new and "import torch" not in text:
            text = "import torch\n" + text
        (root / file).write_text(text)
    return root


def canary(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "canary_runner.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """{change: comparison} for each change against the unchanged repository, per config."""
    work = tmp_path_factory.mktemp("user-regressions")
    runs = {}
    for config, changes in (("dpo", ("extra_forward", "loss_sign")), ("grpo", ("constant_reward",))):
        for change in (None, *changes):
            repo = user_repo(work / f"{config}-{change or 'base'}", change)
            # The DPO base and the slower PR are installed (`-e`, offline: the stack's setuptools builds it),
            # as the action's install input does; the others run from the workspace alone.
            install = ["--install", f"--no-build-isolation -e {repo}"] if change in (None, "extra_forward") \
                and config == "dpo" else []
            proc = canary("run", repo / "canary" / f"{config}.yaml", "-o", repo / "run", "--no-progress", *install,
                          cwd=work)
            assert proc.returncode == 0, proc.stderr[-2000:]
            runs[change or config] = repo / "run"
    out = {}
    for config, changes in (("dpo", ("extra_forward", "loss_sign")), ("grpo", ("constant_reward",))):
        for change in changes:
            cmp_path = work / f"{change}.json"
            proc = canary("compare", runs[change], runs[config], "-o", cmp_path, cwd=work)
            assert proc.returncode in (0, 1), proc.stderr[-2000:]
            out[change] = json.loads(cmp_path.read_text())
    return out


def failed(comparison: dict) -> dict[str, str]:
    return {c["id"]: c["reason"] for c in comparison["checks"] if c["status"] == "fail"}


def test_the_changed_package_version_is_in_the_env_diff_and_the_diagnosis(verdicts):
    c = verdicts["extra_forward"]
    changes = {e["field"]: (e["baseline"], e["current"]) for e in c["environment"]["changes"]}
    assert changes["packages.acme-rlhf"] == ("0.1.0", "0.2.0")
    assert "acme-rlhf 0.1.0 -> 0.2.0" in json.dumps(c["diagnosis"])


def test_broken_dpo_loss_in_the_subclass_fails_health_checks(verdicts):
    c = verdicts["loss_sign"]
    assert c["verdict"] == "fail"
    fails = failed(c)
    assert "invariant.dpo.initial_loss" in fails  # -ln 2 at step 1: caught with or without a baseline
    assert {"rl.dpo.margins", "rl.dpo.reward_accuracy"} & set(fails)


def test_constant_user_reward_trips_reward_collapse(verdicts):
    c = verdicts["constant_reward"]
    assert c["verdict"] == "fail"
    fails = failed(c)
    assert "rl.grpo.reward_func_collapse" in fails
    assert "brevity" in fails["rl.grpo.reward_func_collapse"]


def test_the_same_regression_through_canary_exec_of_the_teams_own_script(tmp_path):
    """train.py, unmodified, under `canary exec`: the PR's sign slip in the subclass fails the comparison."""
    runs = {}
    for change in (None, "loss_sign"):
        repo = user_repo(tmp_path / (change or "base"), change)
        out = tmp_path / f"run-{change or 'base'}"
        proc = canary("exec", "-o", out, "--max-steps", "12", "--", sys.executable, repo / "train.py",
                      "--out", tmp_path / "trainer-out", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[change] = out
    proc = canary("compare", runs["loss_sign"], runs[None], "-o", tmp_path / "cmp.json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    c = json.loads((tmp_path / "cmp.json").read_text())
    assert c["current"]["training_type"] == "dpo"  # AcmeDPOTrainer is a DPOTrainer: the DPO checks apply
    fails = failed(c)
    assert "invariant.dpo.initial_loss" in fails and {"rl.dpo.margins", "rl.dpo.reward_accuracy"} & set(fails)
