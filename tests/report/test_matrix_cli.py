"""`canary report A.json B.json ...`: several comparisons (a matrix of configs) as one report."""

from __future__ import annotations

import json

from canary_runner import cli
from canary_runner.report_matrix import matrix_marker

from .cases import matrix_cases
from .conftest import LINKS
from .mdcheck import tables, visible_text


def write_matrix(tmp_path) -> list[str]:
    paths = []
    for name, raw in matrix_cases().items():
        path = tmp_path / name / "comparison.json"
        path.parent.mkdir()
        path.write_text(json.dumps(raw))
        paths.append(str(path))
    return paths


def run(argv, capsys):
    code = cli.main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_several_comparisons_make_one_comment(tmp_path, capsys):
    paths = write_matrix(tmp_path)
    code, out, err = run([*paths, "--format", "comment", "--run-url", LINKS["run_url"]], capsys)
    assert code == 0, err
    assert out.startswith(matrix_marker() + "\n") and out.count("rlhf-canary:") == 1  # one marker, no config's
    rows = tables(out)[0]
    assert len(rows.rows) == 6
    assert rows.rows[0][0] == "❌" and rows.rows[-1][0] == "✅"  # worst first
    assert "Step time" in visible_text(out) and LINKS["run_url"] in out
    code, named, _ = run([*paths, "--matrix-name", "gpu nightly"], capsys)
    assert code == 0 and named.startswith(matrix_marker("gpu nightly") + "\n") and named != out.split("\n", 1)[0]


def test_check_and_summary_formats(tmp_path, capsys):
    paths = write_matrix(tmp_path)
    code, out, _ = run([*paths, "--format", "check"], capsys)
    check = json.loads(out)
    assert code == 0 and check["conclusion"] == "failure"
    assert check["title"].startswith("❌ rlhf-canary matrix: 4 of 6 configs failed")
    assert len(check["summary"]) <= 65_535 and "sft_embedded" in check["summary"]
    assert all(a["title"].split(":")[0] in {"sft_embedded", "dpo_embedded_bf16", "ppo_embedded",
                                            "dpo_embedded_resume", "grpo_embedded", "dpo_embedded"}
               for a in check["annotations"])
    out_file = tmp_path / "summary.md"
    code, _, err = run([*paths, "--format", "summary", "-o", out_file], capsys)
    assert code == 0 and "6 configs" in err and "<!--" not in out_file.read_text()


def test_a_bad_file_among_several_is_named_exit_2(tmp_path, capsys):
    paths = write_matrix(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, err = run([*paths[:2], bad], capsys)
    assert code == 2 and out == "" and str(bad) in err and "not valid JSON" in err


def test_hostile_config_names_stay_inert_in_the_matrix():
    from canary_runner.report_matrix import MatrixEntry, render_matrix

    from .conftest import load_fixture
    from .mdcheck import inertness_problems

    entries = [MatrixEntry("canary-hostile", load_fixture("handmade-hostile"), artifact_url=LINKS["artifact_url"]),
               MatrixEntry("canary-pass", load_fixture("handmade-pass")),
               MatrixEntry("<img src=x> [x](http://evil.example) @org/team", error="not valid JSON `rm -rf` **b**")]
    text = render_matrix(entries, "comment", run_url=LINKS["run_url"])
    marker, _, body = text.partition("\n")
    assert marker == matrix_marker() and "<!-- rlhf-canary:" not in body  # no config's marker, no forged one
    assert inertness_problems(body, links={LINKS["run_url"], LINKS["artifact_url"]}) == []
    assert "@org/team" in visible_text(body).replace("\u200b", "")  # shown, as text
