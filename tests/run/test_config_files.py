"""Config files that cannot be used say why, with exit 2 and no traceback: not UTF-8, unreadable,
a key given twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary_runner.cli import main
from canary_runner.config import ConfigError, load_config, load_yaml


def run_exit_2(capsys, path, *fragments: str) -> None:
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("canary: error: ") and "Traceback" not in err
    for f in fragments:
        assert f in err, err


def test_a_config_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("training_type: dpo\ndpo: {}\ndescription: caf\xe9\n".encode("latin-1"))
    run_exit_2(capsys, path, str(path), "not a UTF-8 text file", "save the config as UTF-8")


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux /proc")
def test_a_config_that_cannot_be_read(capsys):
    # Root reads any file it may open; /proc/self/mem is a file whose read fails for anyone (EIO).
    run_exit_2(capsys, "/proc/self/mem", "/proc/self/mem", "cannot be read")


@pytest.mark.parametrize("text, key, line", [
    ("training_type: dpo\ndpo: {}\ntrain:\n  max_steps: 3\n  max_steps: 30\n", "max_steps", 5),
    ("training_type: dpo\ntraining_type: sft\ndpo: {}\n", "training_type", 2),
    ("training_type: dpo\ndpo: {beta: 0.1, beta: 0.5}\n", "beta", 2),
])
def test_a_key_given_twice_is_an_error(tmp_path, capsys, text, key, line):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"duplicate key '{key}'" in str(e.value) and f"line {line}" in str(e.value)
    run_exit_2(capsys, path, "duplicate key")


def test_load_yaml_otherwise_reads_like_safe_load():
    assert load_yaml("a: 1\nb: [1, 2]\nc: {d: null}\n") == {"a": 1, "b": [1, 2], "c": {"d": None}}
    assert load_yaml("- {a: 1}\n- {a: 2}\n") == [{"a": 1}, {"a": 2}]  # the same key in two mappings is fine
