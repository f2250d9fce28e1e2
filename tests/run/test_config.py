"""Config loading: strict, overridable, and every bad file is a clear exit-2 error naming file and field."""

import pytest

from canary_runner.cli import main
from canary_runner.config import ConfigError, load_config


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_configs_are_valid(configs_dir):
    paths = sorted(configs_dir.glob("*.yaml"))
    names = {p.stem for p in paths}
    for t in ("sft", "dpo", "ppo", "grpo", "rloo"):
        for tier in ("smoke", "perf", "nightly"):
            assert f"{t}_{tier}" in names
    for t in ("sft", "dpo", "ppo", "grpo", "rloo", "reward"):
        assert f"{t}_embedded" in names and f"{t}_embedded_gpu" in names
    for p in paths:
        cfg = load_config(p)
        assert cfg.name == p.stem
        assert cfg.section is not None


def test_overrides_parse_yaml_scalars(configs_dir):
    cfg = load_config(configs_dir / "dpo_embedded.yaml",
                      ["train.max_steps=7", "train.learning_rate=1e-3", "train.deterministic=true",
                       "model.lora.r=4", "dpo.beta=0.5"])
    assert cfg.train.max_steps == 7
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.train.deterministic is True
    assert cfg.model.lora.r == 4 and cfg.dpo.beta == 0.5


def test_hash_changes_with_config(configs_dir):
    a = load_config(configs_dir / "dpo_embedded.yaml")
    b = load_config(configs_dir / "dpo_embedded.yaml", ["train.max_steps=8"])
    assert a.hash() != b.hash() and a.hash() == load_config(configs_dir / "dpo_embedded.yaml").hash()


@pytest.mark.parametrize("text, expected", [
    ("training_type: dpo\ndpo: {}\ntrain:\n  max_stpes: 3\n", ["train.max_stpes", "unknown field"]),
    ("training_type: dpo\ndpo: {}\ntrain:\n  learning_rate: fast\n", ["train.learning_rate", "valid number", "'fast'"]),
    ("training_type: dpo\n", ["'dpo:' section is missing"]),
    ("training_type: dpo\ndpo: {}\nsft: {}\n", ["also has section", "sft"]),
    ("training_type: ddpo\n", ["training_type", "'sft'"]),
    ("training_type: [dpo\n", ["not valid YAML", "line 2"]),
    ("- a\n- b\n", ["expected a mapping"]),
    ("training_type: dpo\ndpo: {}\ntrain:\n  max_steps: 3\n  warmup_steps: 3\n", ["warmup_steps (3) must be below max_steps (3)"]),
])
def test_bad_config_is_a_clear_exit_2(tmp_path, capsys, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value)
    for fragment in expected:
        assert fragment in str(e.value)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("canary: error: ") and "Traceback" not in err
    assert str(path) in err


def test_missing_file_and_bad_override(tmp_path, capsys, configs_dir):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["run", str(configs_dir / "dpo_embedded.yaml"), "--set", "train.max_steps"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["run", str(configs_dir / "dpo_embedded.yaml"), "--set", "train.max_steps=-1"]) == 2
    assert "train.max_steps" in capsys.readouterr().err


def test_unknown_trl_argument_is_exit_2(tmp_path, capsys, configs_dir):
    code = main(["run", str(configs_dir / "dpo_embedded.yaml"), "--set", "dpo.extra_args.not_a_dpo_arg=1",
                 "-o", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not_a_dpo_arg" in err and "DPOConfig" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "metrics.json").exists()  # nothing ran: no record that could pass for a run


@pytest.mark.parametrize("setting", ["sft.extra_args.max_length=[1,2]", "sft.extra_args.packing=[1]"])
def test_a_trl_argument_of_the_wrong_type_is_exit_2(tmp_path, capsys, configs_dir, setting):
    # TRL's dataclass takes any value: without the check, a list for an int crashed mid-run (exit 3)
    # and a list for a bool ran as True.
    code = main(["run", str(configs_dir / "sft_embedded.yaml"), "--set", setting, "-o", str(tmp_path / "r"),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    key = setting.split(".")[2].split("=")[0]
    assert f"sft.extra_args: {key}=" in err and "SFTConfig" in err and "Traceback" not in err, err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_unknown_embedded_model_and_dataset_are_exit_2(tmp_path, capsys, configs_dir):
    cfg = str(configs_dir / "sft_embedded.yaml")
    assert main(["run", cfg, "--set", "model.name=embedded:nope", "-o", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "unknown embedded model 'embedded:nope'" in capsys.readouterr().err
    assert main(["run", cfg, "--set", "dataset.name=embedded:nope", "-o", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "unknown embedded dataset 'embedded:nope'" in capsys.readouterr().err
