"""`canary baseline` refuses config names and hardware keys that are paths, with exit 2 and a message."""

from __future__ import annotations

import pytest

from canary_runner.cli import main


@pytest.mark.parametrize("args", [["--config", ".."], ["--config", "."], ["--config", "dpo_embedded", "--hardware", ".."],
                                  ["--config", "dpo_embedded", "--hardware", "..", "--history", "3"]])
@pytest.mark.parametrize("command", ["show", "pull"])
def test_dot_dot_names_are_usage_errors(tmp_path, capsys, args, command):
    argv = ["baseline", command, f"path:{tmp_path}", *args]
    if command == "pull":
        argv += ["-o", str(tmp_path / "out"), "--hardware", ".."] if "--hardware" not in args else ["-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot name a baseline" in err and "Traceback" not in err
