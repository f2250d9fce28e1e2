"""Equivalence classes, trained for real: every shipped class agrees on the embedded workload of each
training type it applies to, and parts, at the right step, on a deliberately broken trainer."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from canary_runner import cli, equivalence, plugins, report
from canary_runner.config import SHIPPED_EQUIVALENCE, load_config

REPO = Path(__file__).resolve().parents[2]

# Where each shipped class applies (the others say why not, in their skip reason).
APPLIES = {
    "sft": set(SHIPPED_EQUIVALENCE),
    "dpo": set(SHIPPED_EQUIVALENCE),
    "reward": set(SHIPPED_EQUIVALENCE) - {"lora_merge"},
    "grpo": {"grad_accumulation", "attention", "resume", "lora_merge"},
    "rloo": {"grad_accumulation", "attention", "resume", "lora_merge"},
    "ppo": {"attention", "lora_merge"},
}

BROKEN = '''\
"""Trainers with the bugs equivalence classes exist for."""
from trl import DPOTrainer


class SummedUnderAccumulation(DPOTrainer):
    """Sums the micro-batch losses instead of averaging them: k times the gradient under accumulation k."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        k = self.args.gradient_accumulation_steps
        return (out[0] * k, out[1]) if return_outputs else out * k


class NotAveragedAcrossRanks(DPOTrainer):
    """Sums the ranks' losses where it should average them: world-size times the gradient."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        n = self.accelerator.num_processes
        return (out[0] * n, out[1]) if return_outputs else out * n


class FreshOptimizerOnResume(DPOTrainer):
    """Resumes the weights but starts the optimizer (Adam's moments) from scratch."""

    def _load_optimizer_and_scheduler(self, checkpoint):
        return None
'''


def config(root: Path, name: str, body: str) -> Path:
    path = root / "canary" / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A user repository holding the broken trainers (the workspace marker is its pyproject)."""
    root = tmp_path_factory.mktemp("user-repo")
    (root / "bugs").mkdir()
    (root / "bugs" / "__init__.py").write_text("")
    (root / "bugs" / "trainers.py").write_text(BROKEN)
    (root / "pyproject.toml").write_text('[project]\nname = "bugs"\nversion = "0.1.0"\n')
    (root / "canary").mkdir()
    return root


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(plugins.WORKSPACE_ENV, "")


def run_classes(capsys, out: Path, *argv) -> tuple[int, list[dict], str]:
    code = cli.main(["equivalence", *map(str, argv), "-o", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    found = json.loads((out / "equivalence.json").read_text()) if (out / "equivalence.json").exists() else []
    return code, found, err


def by_name(found: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in found}


@pytest.mark.parametrize("training_type", sorted(APPLIES))
def test_every_shipped_class_agrees_where_it_applies(training_type, tmp_path, capsys):
    code, found, err = run_classes(capsys, tmp_path, f"{training_type}_embedded", "--class", "all",
                                   "--set", "train.max_steps=6")
    results = by_name(found)
    assert set(results) == set(SHIPPED_EQUIVALENCE)
    for name, res in results.items():
        if name in APPLIES[training_type]:
            assert res["status"] == "pass", (name, res["summary"])
        else:
            assert res["status"] == "skip" and f"not for {training_type}" in res["summary"], (name, res)
    assert code == 0, err
    if "data_parallel" in APPLIES[training_type]:  # the variant really ran as two processes
        assert (tmp_path / "equivalence" / "data_parallel" / "variant-2" / "ranks" / "rank1" / "metrics.json").exists()


@pytest.mark.parametrize("cls, trainer, sets, first_step", [
    ("grad_accumulation", "SummedUnderAccumulation", [], 1),
    ("data_parallel", "NotAveragedAcrossRanks", [], 1),
])
def test_a_broken_trainer_parts_at_the_right_step(cls, trainer, sets, first_step, workspace, tmp_path, capsys):
    path = config(workspace, f"broken_{cls}", f"""\
        name: broken_{cls}
        training_type: dpo
        train: {{max_steps: 6, warmup_steps: 1, per_device_batch_size: 8, learning_rate: 5.0e-4}}
        trainer: {{class: "bugs.trainers:{trainer}"}}
        dpo: {{}}
    """)
    code, found, err = run_classes(capsys, tmp_path, path, "--class", cls, *sets)
    res = by_name(found)[cls]
    assert res["status"] == "fail", res["summary"]
    assert res["first_step"] == first_step
    assert code == 1
    assert f"at step {first_step}" in err


def test_a_resume_that_restarts_the_optimizer_fails_the_verdict_without_a_baseline(workspace, tmp_path, capsys):
    """`canary run` runs the config's classes after the canary; `canary compare` with no baseline fails on
    the broken class, at the first step after the resumed update (steps 1-3, checkpoint, resume: step 4
    uses the restored weights, its update the fresh optimizer, so step 5 is the first to differ)."""
    path = config(workspace, "broken_resume", """\
        name: broken_resume
        training_type: dpo
        train: {max_steps: 6, warmup_steps: 1, per_device_batch_size: 8, learning_rate: 5.0e-4}
        trainer: {class: "bugs.trainers:FreshOptimizerOnResume"}
        dpo: {}
        equivalence: [resume, attention]
    """)
    code = cli.main(["run", str(path), "-o", str(tmp_path / "run"), "--no-progress"])
    capsys.readouterr()
    assert code == 0  # the canary itself ran fine; the verdict is compare's
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    results = by_name(record["equivalence"])
    assert results["attention"]["status"] == "pass"
    assert results["resume"]["status"] == "fail" and results["resume"]["first_step"] == 5

    out = tmp_path / "comparison.json"
    assert cli.main(["compare", str(tmp_path / "run"), "-o", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "fail"
    chk = next(c for c in doc["checks"] if c["id"] == "equivalence.resume")
    assert chk["status"] == "fail" and chk["step"] == 5
    curves = chk["details"]["curves"]
    assert [v["label"] for v in curves["variants"]] == ["this canary", "3 steps, checkpoint, resume"]

    comment = report.render(doc, "comment")
    section = comment.split("#### Equivalence", 1)[1]
    assert "resume" in section and "step 5" in section and "```mermaid" in section
    assert "attention" in section


def test_a_user_class_is_plain_overrides(tmp_path, capsys):
    """A declared class: variants are config overrides. Two learning rates agree at step 1 (no update yet)
    and part at step 2; batch 8 and batch 2 x accumulation 4 agree throughout."""
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""\
        name: user_classes
        training_type: dpo
        train: {max_steps: 4, warmup_steps: 1, per_device_batch_size: 8, learning_rate: 5.0e-4}
        dpo: {}
        equivalence:
          - name: learning_rate
            variants: [{train.learning_rate: 5.0e-4}, {train.learning_rate: 1.0e-3}]
          - name: micro_batches
            variants:
              - {train.per_device_batch_size: 8}
              - {train.per_device_batch_size: 2, train.gradient_accumulation_steps: 4}
    """))
    code, found, _ = run_classes(capsys, tmp_path / "out", path)
    results = by_name(found)
    assert results["learning_rate"]["status"] == "fail" and results["learning_rate"]["first_step"] == 2
    assert results["micro_batches"]["status"] == "pass"
    assert code == 1


@pytest.mark.parametrize("body, words", [
    ("equivalence: [grad_acumulation]", ["'grad_acumulation' is not a shipped class", "variants"]),
    ("equivalence: [{name: x, variants: [{train.max_stpes: 3}, {}]}]", ["equivalence[0] (x) variants[0]",
                                                                        "train.max_stpes", "unknown field"]),
    ("equivalence: [{name: x, variants: [{}]}]", ["at least two"]),
    ("equivalence: [resume, resume]", ["listed more than once"]),
])
def test_bad_classes_are_exit_2_before_anything_trains(body, words, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: c\ntraining_type: dpo\ndpo: {{}}\n{body}\n")
    for argv in (["run", str(path), "-o", str(tmp_path / "run")], ["equivalence", str(path), "-o", str(tmp_path / "e")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(w in err for w in words), err
        assert not (tmp_path / "run" / "metrics.json").exists()
    assert cli.main(["equivalence", "dpo_embedded", "--class", "bogus"]) == 2
    assert "not a shipped class" in capsys.readouterr().err


def test_curves_agree_within_tolerance_and_report_the_first_and_worst_step():
    a = {"step": [1, 2, 3, 4], "loss": [1.0, 0.9, 0.8, float("nan")]}
    b = {"step": [1, 2, 3, 4], "loss": [1.0, 0.9 + 5e-4, 0.85, float("nan")]}
    d = equivalence.compare_curves(a, b, ["loss"], rtol=1e-3, atol=1e-5)["loss"]
    assert d["first_step"] == 3 and d["worst_step"] == 3 and not d["agree"]
    assert d["max_abs"] == pytest.approx(0.05)
    same = equivalence.compare_curves(a, a, ["loss"], rtol=0, atol=0)["loss"]
    assert same["agree"] and same["max_abs"] == 0  # NaN agrees with NaN at the same step
    c = {"step": [1, 2, 3, 4], "loss": [1.0, 0.9, 0.8, 0.7]}
    assert equivalence.compare_curves(a, c, ["loss"], 1e-3, 1e-5)["loss"]["first_step"] == 4


def test_a_class_that_cannot_apply_says_why():
    cfg = load_config(REPO / "configs" / "dpo_embedded.yaml", ["train.per_device_batch_size=1",
                                                                "equivalence=[grad_accumulation, data_parallel]"])
    plans = {p.cls.name: p for p in equivalence.plan(cfg)}
    assert "cannot be split" in plans["grad_accumulation"].skip
    assert "odd" in plans["data_parallel"].skip
