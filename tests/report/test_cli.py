"""`canary report`: formats, files, plots, and clear exit-2 messages for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from canary_runner import cli, report

from .conftest import LINKS, fixture_path, load_fixture
from .mdcheck import parse, walk


def run(argv, capsys):
    code = cli.main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_comment_to_stdout(capsys):
    code, out, err = run([fixture_path("handmade-fail"), "--format", "comment", "--run-url", LINKS["run_url"],
                          "--artifact-url", LINKS["artifact_url"], "--report-path", LINKS["report_path"]], capsys)
    assert code == 0 and err == ""
    assert out == report.render_comment(load_fixture("handmade-fail"), **LINKS)


def test_default_format_is_comment(capsys):
    code, out, _ = run([fixture_path("handmade-pass")], capsys)
    assert code == 0 and out.startswith(report.marker("dpo_embedded"))


def test_summary_to_file(tmp_path, capsys):
    target = tmp_path / "out" / "summary.md"
    code, out, err = run([fixture_path("handmade-warn"), "-f", "summary", "-o", target], capsys)
    assert code == 0 and out == "" and "summary report" in err
    assert target.read_text() == report.render_summary(load_fixture("handmade-warn"))


def test_check_json(tmp_path, capsys):
    code, out, _ = run([fixture_path("handmade-fail"), "--format", "check", "--config-path", "ci/dpo.yaml"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["conclusion"] == "failure" and data["annotations"][0]["path"] == "ci/dpo.yaml"
    assert len(data["summary"]) <= report.CHECK_LIMIT


def test_markdown_writes_report_and_plots_next_to_comparison(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    src = tmp_path / "cmp" / "comparison.json"
    src.parent.mkdir()
    src.write_text(fixture_path("handmade-crashed").read_text())
    code, _, err = run([src, "--format", "markdown"], capsys)
    assert code == 0, err
    md = (tmp_path / "cmp" / "report.md").read_text()
    pngs = sorted(p.name for p in (tmp_path / "cmp").glob("*.png"))
    assert pngs == ["curve-loss.png", "curve-rewards-margins.png", "curve-step-time-s.png"]
    images = [t.attrGet("src") for t in walk(parse(md)) if t.type == "image"]
    assert images == ["curve-loss.png", "curve-rewards-margins.png", "curve-step-time-s.png"]
    for p in (tmp_path / "cmp").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_with_plots_dir_and_output_elsewhere(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, _, err = run([fixture_path("handmade-fail"), "-f", "markdown", "-o", tmp_path / "r" / "report.md",
                        "--plots-dir", tmp_path / "r" / "plots"], capsys)
    assert code == 0, err
    md = (tmp_path / "r" / "report.md").read_text()
    assert "![loss](plots/curve-loss.png)" in md
    assert (tmp_path / "r" / "plots" / "curve-loss.png").is_file()


def test_markdown_without_plots_uses_mermaid(tmp_path, capsys):
    code, _, _ = run([fixture_path("handmade-fail"), "-f", "markdown", "-o", tmp_path / "r.md", "--no-plots"], capsys)
    assert code == 0
    assert "```mermaid" in (tmp_path / "r.md").read_text()
    assert not list(tmp_path.glob("*.png"))


def test_plots_for_comment_only_when_asked(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    src = tmp_path / "comparison.json"
    src.write_text(fixture_path("handmade-pass").read_text())
    run([src, "-f", "comment", "-o", tmp_path / "c.md"], capsys)
    assert not list(tmp_path.glob("*.png"))
    run([src, "-f", "comment", "-o", tmp_path / "c.md", "--plots-dir", tmp_path / "p"], capsys)
    assert len(list((tmp_path / "p").glob("*.png"))) == 3


def test_directory_argument(tmp_path, capsys):
    (tmp_path / "comparison.json").write_text(fixture_path("handmade-pass").read_text())
    code, out, _ = run([tmp_path, "-f", "summary"], capsys)
    assert code == 0 and "passed" in out


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ("[]", "not a canary comparison.json"),
    ('{"schema_version": 99}', "schema_version 99 is not supported"),
    ('{"schema_version": 1, "verdict": "pass"}', "does not match the comparison schema"),
    (b"\xff\xfe\x00", "not valid JSON"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, content, message):
    path = tmp_path / "comparison.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    code, out, err = run([path, "-f", "comment"], capsys)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
    assert err.startswith("canary: error: ")


def test_unwritable_output_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run([fixture_path("handmade-pass"), "-o", blocker / "sub" / "c.md"], capsys)
    assert code == 2 and "cannot write the report" in err


def test_bad_format_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["report", str(fixture_path("handmade-pass")), "--format", "html"])
    assert e.value.code == 2


def test_imports_stay_light():
    """The CLI imports report_cli to build its parser; rendering needs neither torch, TRL, HTTP nor matplotlib."""
    code = (
        "import sys, canary_runner.report_cli as rc, canary_runner.report as r;"
        "r.render_comment(r.load_comparison(sys.argv[1]));"
        "bad = [m for m in ('torch', 'trl', 'transformers', 'requests', 'urllib3', 'matplotlib', 'canary_runner.github')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(fixture_path("handmade-fail"))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_markdown_without_matplotlib_falls_back_to_mermaid(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = run([fixture_path("handmade-fail"), "-f", "markdown", "-o", tmp_path / "r.md"], capsys)
    assert code == 0 and "matplotlib is not installed" in err
    assert "```mermaid" in (tmp_path / "r.md").read_text()
