"""The user's own code in the run: plug points resolve from the config's repository, and every bad one
is exit 2 with a message naming the field, the string and the reason (never a traceback)."""

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from canary_runner import cli, plugins
from canary_runner.collect.collector import StepCollector
from canary_runner.config import load_config
from canary_runner.runner import build_trainer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "user-repo"


def make_repo(root: Path, package: str, files: dict[str, str], config: str) -> Path:
    """A tiny user repository: a package, a pyproject (the workspace marker) and canary/c.yaml."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    (root / "pyproject.toml").write_text(f'[project]\nname = "{package}"\nversion = "0.1.0"\n')
    (root / "canary").mkdir()
    (root / "canary" / "c.yaml").write_text(textwrap.dedent(config))
    return root / "canary" / "c.yaml"


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main(["run", *map(str, argv), "--no-progress"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


SFT = """\
    name: user_sft
    training_type: sft
    train: {max_steps: 2, warmup_steps: 1, per_device_batch_size: 2, max_length: 64}
    sft: {}
"""


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    """Each test's workspace goes first on sys.path; give the old path and environment back."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(plugins.WORKSPACE_ENV, "")  # recorded, so teardown restores the environment


def test_example_repository_plug_points_are_used(tmp_path, monkeypatch):
    """The shipped example: trainer subclass, callback, model hook and a dataset file relative to the
    repository (the working directory is elsewhere on purpose)."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(repo / "canary" / "dpo.yaml", ["train.max_steps=2", "train.warmup_steps=1"])
    plugins.use_workspace(plugins.workspace_of(repo / "canary" / "dpo.yaml"))
    collector = StepCollector(tmp_path / "steps.jsonl", 1, 60.0, deadline_from=time.perf_counter())
    trainer = build_trainer(cfg, tmp_path / "run", collector)
    try:
        assert type(trainer).__name__ == "AcmeDPOTrainer"
        assert type(trainer).__module__ == "acme_rlhf.trainers"
        assert trainer.model.config._attn_implementation == "sdpa"  # model.init ran
        assert any(type(cb).__name__ == "LogExamplesSeen" for cb in trainer.callback_handler.callbacks)
        assert len(trainer.train_dataset) == 128  # data/preferences.jsonl, found from the workspace
    finally:
        collector.close()


def test_example_callback_logs_reach_the_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", str(EXAMPLE / "canary" / "dpo.yaml"), "-o", str(tmp_path / "run"), "--no-progress",
                     "--set", "train.max_steps=3", "--set", "train.warmup_steps=1"])
    assert code == 0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["series"]["acme/examples_seen"] == [8.0, 16.0, 24.0]  # the user callback ran before the collector
    assert record["config"]["trainer"]["class"] == "acme_rlhf.trainers:AcmeDPOTrainer"


@pytest.mark.parametrize("field, files, value, expected", [
    ("trainer.class", {}, "nopkg_xyz.mod:Trainer", "trainer.class: 'nopkg_xyz.mod:Trainer': module 'nopkg_xyz' not found"),
    ("trainer.class", {"pk1/t.py": "class Plain:\n    pass\n"}, "pk1.t:Plain",
     "trainer.class: 'pk1.t:Plain' is Plain, not a subclass of trl.trainer.sft_trainer.SFTTrainer"),
    ("trainer.class", {"pk2/t.py": "from trl import DPOTrainer\n"}, "pk2.t:DPOTrainer",
     "is DPOTrainer, not a subclass of trl.trainer.sft_trainer.SFTTrainer"),
    ("trainer.class", {"pk3/t.py": "X = 1\n"}, "pk3.t:Missing", "trainer.class: 'pk3.t:Missing': pk3.t has no attribute 'Missing'"),
    ("trainer.class", {"pk4/t.py": "raise ImportError('needs flash-attn')\n"}, "pk4.t:T",
     "trainer.class: 'pk4.t:T': importing pk4.t raised ImportError: needs flash-attn"),
    ("trainer.callbacks", {"pk5/cb.py": "def log_it():\n    pass\n"}, "[pk5.cb:log_it]",
     "trainer.callbacks[0]: 'pk5.cb:log_it' is not a transformers.TrainerCallback"),
    ("model.init", {"pk6/h.py": "def hook(model, tok):\n    raise ValueError('no kernel for this GPU')\n"}, "pk6.h:hook",
     "model.init: 'pk6.h:hook' raised ValueError: no kernel for this GPU"),
    ("dataset.name", {"pk7/d.py": "def rows():\n    return [1, 2]\n"}, "pk7.d:rows",
     "dataset.name: 'pk7.d:rows' gave a list, not a datasets.Dataset"),
])
def test_bad_plug_points_are_bad_input(tmp_path, capsys, field, files, value, expected):
    package = next(iter(files), "pk0/x").split("/")[0]
    config = make_repo(tmp_path / "repo", package, files, SFT)
    code, err = run_cli(capsys, config, "-o", tmp_path / "run", "--set", f"{field}={value}")
    assert code == 2
    assert expected in err
    assert not (tmp_path / "run" / "metrics.json").exists()  # no training attempted


def test_dataset_file_missing_column_is_named(tmp_path, capsys):
    config = make_repo(tmp_path / "repo", "pk8", {"data/p.jsonl": '{"prompt": "a", "chosen": "b"}\n' * 8}, """\
        name: user_dpo
        training_type: dpo
        dataset: {name: data/p.jsonl}
        train: {max_steps: 2, warmup_steps: 1, per_device_batch_size: 2, max_length: 64}
        dpo: {}
    """)
    code, err = run_cli(capsys, config, "-o", tmp_path / "run")
    assert code == 2
    assert "dataset 'data/p.jsonl' is missing column(s) rejected" in err.replace(str(tmp_path / "repo") + "/", "")


def test_dataset_from_code_and_user_reward(tmp_path, capsys):
    """GRPO on a dataset built by the user's function, scored by the user's reward beside a built-in one."""
    config = make_repo(tmp_path / "repo", "pk9", {
        "pk9/data.py": """\
            import datasets

            def prompts():
                return datasets.Dataset.from_list([{"prompt": f"Count to {i}."} for i in range(16)])
        """,
        "pk9/rewards.py": """\
            def short(completions, **_):
                return [1.0 / (1 + len(str(c))) for c in completions]
        """}, """\
        name: user_grpo
        training_type: grpo
        dataset: {name: "pk9.data:prompts"}
        train: {max_steps: 2, warmup_steps: 1, per_device_batch_size: 4, max_length: 64}
        grpo: {num_generations: 4, max_completion_length: 8, reward_funcs: ["pk9.rewards:short", length]}
    """)
    code, err = run_cli(capsys, config, "-o", tmp_path / "run")
    assert code == 0, err
    series = json.loads((tmp_path / "run" / "metrics.json").read_text())["series"]
    assert "rewards/short/mean" in series and "rewards/length/mean" in series


def test_import_string_syntax_is_checked_with_the_config(tmp_path, capsys):
    config = make_repo(tmp_path / "repo", "pk10", {}, SFT)
    code, err = run_cli(capsys, config, "--set", "trainer.class=my_trainer.py")
    assert code == 2 and "trainer.class: Value error, 'my_trainer.py' is not an import string" in err
    code, err = run_cli(capsys, config, "--set", "training_type=grpo", "--set", "sft=null",
                        "--set", "grpo.reward_funcs=[lenght]")
    assert code == 2 and "'lenght' is neither a built-in reward (length, format, digits, lowercase) nor an import string" in err


def test_failing_install_is_bad_input_and_nothing_trains(tmp_path):
    """pip's own last lines are in the error; exit 2; no run directory content."""
    (tmp_path / "not-a-project").mkdir()  # a folder without pyproject.toml or setup.py
    proc = subprocess.run([sys.executable, "-m", "canary_runner.cli", "run", "sft_embedded", "-o", str(tmp_path / "run"),
                           "--install", f"-e {tmp_path / 'not-a-project'}"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "canary: error: install line '-e " in proc.stderr and "failed (pip exit 1)" in proc.stderr
    assert "does not appear to be a Python project" in proc.stderr  # pip's reason
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_unsplittable_install_line(tmp_path, capsys):
    code = cli.main(["run", "sft_embedded", "-o", str(tmp_path / "run"), "--install", "-r 'requirements.txt"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be split into pip arguments" in err


def test_fp16_on_the_cpu_is_refused_not_run_as_fp32(tmp_path, capsys):
    """accelerate drops fp16 on the CPU silently: such a canary would measure fp32 and call it fp16."""
    code, err = run_cli(capsys, "sft_embedded", "-o", tmp_path / "run", "--set", "train.precision=fp16")
    assert code == 2
    assert "train.precision fp16 needs a CUDA device: on the CPU it silently runs in fp32" in err
    assert not (tmp_path / "run" / "metrics.json").exists()
