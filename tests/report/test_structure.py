"""What a reviewer reads, checked through a CommonMark/GFM parser: marker, headline, tables, sections."""

from __future__ import annotations

import math

import pytest

from canary_runner import report

from .conftest import LINKS, fixture_names, load_fixture
from .mdcheck import headings, parse, tables, visible_text

REGRESSION_HEADER = ["Check", "Baseline", "Current", "Change [95% CI]", "Threshold", "Status"]
HEALTH_HEADER = ["Check", "Baseline", "Current", "Limit", "Status", "Note"]


def comment(name, **kw):
    return report.render_comment(load_fixture(name), **{**LINKS, **kw})


def test_fail_comment_headline_and_marker():
    text = comment("handmade-fail")
    assert text.startswith("<!-- rlhf-canary:config=dpo_embedded -->\n")
    assert text.count("<!-- rlhf-canary:") == 1
    first = headings(text)[0]
    assert "failed" in first and "2 failed, 1 warned" in first and "dpo_embedded" in first


def test_fail_comment_regression_table_rows_and_columns():
    c = load_fixture("handmade-fail")
    regression, health = tables(comment("handmade-fail"))[:2]
    assert regression.header == REGRESSION_HEADER
    expected = [ch for ch in c["checks"] if ch["status"] != "skip" and ch["category"] not in ("rl_health", "invariant")]
    assert len(regression.rows) == len(expected)
    assert all(len(r) == len(REGRESSION_HEADER) for r in regression.rows)
    # Failed first, then warned, then passed; every check once.
    statuses = [s.split()[-1] for s in regression.column("Status")]
    assert statuses == sorted(statuses, key=lambda s: report.STATUS_ORDER[s])
    assert sorted(regression.column("Check")) == sorted(ch["title"] for ch in expected)
    step = regression.rows[regression.column("Check").index("Step time (median)")]
    assert step == ["Step time (median)", "21.5 ms", "26.6 ms", "+23.6% [+18.1%, +28.5%]", "+10%", "❌ fail"]
    tput = regression.rows[regression.column("Check").index("Throughput")]
    assert tput[1:] == ["26,020 tokens/s", "21,040 tokens/s", "-19.1% [-22.5%, -15.3%]", "-10%", "❌ fail"]

    assert health.header == HEALTH_HEADER
    assert health.column("Check")[0] == "Reward margin grows"
    assert health.rows[0][4] == "⚠️ warn" and "slower" in health.rows[0][5]
    assert "DPO loss at step 1 = ln 2" in health.column("Check")


def test_fail_comment_diagnosis_details_links_and_charts():
    text = comment("handmade-fail")
    heads = headings(text)
    assert "Likely causes" in heads and "Regressions" in heads and "RL health (dpo)" in heads and "Curves" in heads
    visible = visible_text(text)
    assert "A config change made every step slower" in visible
    assert "train.max_length 128 -> 256" in visible  # evidence, shown as plain text
    assert "revert train.max_length" in visible  # next step
    fences = [t for t in parse(text) if t.type == "fence"]
    assert [f.info for f in fences] == ["mermaid", "mermaid"]
    assert all("xychart-beta" in f.content for f in fences)
    blocks = [t.content for t in parse(text) if t.type == "html_block"]
    assert any("All metrics (14)" in b for b in blocks)
    assert any("Config diff (2 changes)" in b for b in blocks)
    assert any("Environment" in b for b in blocks)
    config = [t for t in tables(text) if t.header == ["Setting", "Baseline", "Current"]][0]
    assert config.rows == [["dpo.beta", "0.1", "0.5"], ["train.max_length", "128", "256"]]
    hrefs = [t.attrGet("href") for t in _all(text) if t.type == "link_open"]
    assert hrefs == [LINKS["run_url"], LINKS["artifact_url"]]
    assert "full report: canary-report/report.md" in visible


def _all(text):
    from .mdcheck import walk

    return list(walk(parse(text)))


def test_pass_comment():
    text = comment("handmade-pass")
    assert "passed: 0 failed, 0 warned" in headings(text)[0]
    assert "Needs attention" not in visible_text(text)
    regression = tables(text)[0]
    assert all(s == "✅ pass" for s in regression.column("Status"))
    assert "Environment changed" not in headings(text)


def test_warn_comment_shows_environment_diff():
    text = comment("handmade-warn")
    assert "passed with warnings: 0 failed, 1 warned" in headings(text)[0]
    assert "Environment changed" in headings(text)
    env = [t for t in tables(text) if t.header == ["Field", "Baseline", "Current"]][0]
    assert env.rows == [["packages.transformers", "5.23.0", "5.24.0"]]


def test_no_baseline_comment_says_so_and_shows_own_numbers():
    text = comment("handmade-no-baseline")
    assert "without a baseline" in headings(text)[0]
    assert "No baseline to compare with" in visible_text(text)
    own, health = tables(text)[:2]
    assert own.header == ["Check", "Current", "Threshold", "Status"]
    assert "Run completed" in own.column("Check") and "NaN/Inf values" in own.column("Check")
    assert health.header == ["Check", "Current", "Limit", "Status", "Note"]
    assert "Reward accuracy" in health.column("Check")
    assert "This run's numbers" in headings(text)
    metrics = [t for t in tables(text) if t.header == ["Metric", "Value"]][0]
    assert ["step_time_s.median", "0.02152"] in metrics.rows
    assert "Config diff" not in text
    assert "Skipped checks (5)" in text
    mermaid = [t for t in parse(text) if t.type == "fence"]
    assert mermaid and all(f.content.count("line [") == 1 for f in mermaid)  # current only


def test_crashed_comment():
    text = comment("handmade-crashed")
    visible = visible_text(text)
    assert "The run crashed after 12 steps (error at step 13): RuntimeError: Function 'LogSoftmaxBackward0'" in visible
    fences = [t for t in parse(text) if t.type == "fence"]
    tb = [f for f in fences if f.info == "text"][0]
    assert "loss.backward()" in tb.content and "```" in tb.content  # the traceback's fence stayed inside
    regression = tables(text)[0]
    row = regression.rows[regression.column("Check").index("Loss curve vs baseline")]
    assert row[2] == "NaN" and row[-1] == "❌ fail"
    loss_chart = [f for f in fences if f.info == "mermaid"][0]
    assert "current is NaN/Inf from step 12 (not drawn)" in visible
    lines = [ln for ln in loss_chart.content.splitlines() if ln.strip().startswith("line [")]
    assert len(lines[0].split(",")) == 30 and len(lines[1].split(",")) == 11


@pytest.mark.parametrize("name", fixture_names())
def test_summary_and_markdown_have_no_marker_but_the_same_tables(name):
    c = load_fixture(name)
    summary = report.render_summary(c)
    md = report.render_markdown(c)
    assert "<!-- rlhf-canary:config" not in summary and "<!-- rlhf-canary:config" not in md
    assert [t.header for t in tables(summary)] == [t.header for t in tables(report.render_comment(c))]
    assert len(tables(md)) == len(tables(summary))


def test_markdown_embeds_plots_instead_of_mermaid():
    c = load_fixture("handmade-fail")
    md = report.render_markdown(c, plots=[("loss", "plots/curve-loss.png")])
    images = [t for t in _all(md) if t.type == "image"]
    assert [i.attrGet("src") for i in images] == ["plots/curve-loss.png"]
    assert "```mermaid" not in md


def test_no_links_without_urls():
    text = report.render_comment(load_fixture("handmade-pass"))
    assert not [t for t in _all(text) if t.type == "link_open"]
    assert "workflow run" not in text


def test_unsafe_link_urls_are_dropped():
    text = report.render_comment(load_fixture("handmade-pass"), run_url="javascript:alert(1)",
                                 artifact_url="https://x.test/a) [y](http://evil")
    hrefs = [t.attrGet("href") for t in _all(text) if t.type == "link_open"]
    assert hrefs == ["https://x.test/a%29%20%5By%5D%28http://evil"]


@pytest.mark.parametrize("name", fixture_names())
def test_check_output_shape(name):
    c = load_fixture(name)
    out = report.render_check(c, **LINKS)
    assert set(out) == {"conclusion", "title", "summary", "text", "annotations"}
    assert out["conclusion"] == {"pass": "success", "warn": "neutral", "fail": "failure",
                                 "no-baseline": "neutral"}[c["verdict"]]
    assert len(out["summary"]) <= report.CHECK_LIMIT and len(out["text"]) <= report.CHECK_LIMIT
    assert 0 < len(out["title"]) <= 255
    n_bad = sum(1 for ch in c["checks"] if ch["status"] in ("fail", "warn"))
    assert len(out["annotations"]) >= n_bad
    for a in out["annotations"]:
        assert set(a) == {"path", "start_line", "end_line", "annotation_level", "title", "message"}
        assert a["start_line"] == a["end_line"] == 1
        assert a["annotation_level"] in ("failure", "warning", "notice")
        assert a["message"] and "\n" not in a["title"] and len(a["title"]) <= 255


def test_check_annotations_for_failed_and_warned_checks():
    out = report.render_check(load_fixture("handmade-fail"), config_path_override="configs/dpo_embedded.yaml")
    levels = [(a["annotation_level"], a["title"]) for a in out["annotations"]]
    assert levels == [("failure", "fail: Step time (median)"), ("failure", "fail: Throughput"),
                      ("warning", "warn: Reward margin grows")]
    assert {a["path"] for a in out["annotations"]} == {"configs/dpo_embedded.yaml"}
    assert "+23.6% [+18.1%, +28.5%]" in out["annotations"][0]["message"]
    assert out["title"].startswith("❌ dpo_embedded failed: 2 failed, 1 warned")


def test_check_annotation_path_defaults_to_the_config():
    c = load_fixture("handmade-fail")
    assert report.render_check(c)["annotations"][0]["path"] == "configs/dpo_embedded.yaml"
    c["current"]["config_path"] = "ci/canary/dpo.yaml"
    assert report.render_check(c)["annotations"][0]["path"] == "ci/canary/dpo.yaml"


def test_marker():
    assert report.marker("dpo_embedded") == "<!-- rlhf-canary:config=dpo_embedded -->"
    evil = report.marker("x --> <img src=x> <!-- rlhf-canary:config=y")
    assert evil.count("-->") == 1 and evil.endswith(" -->") and "<img" not in evil
    assert report.marker("a\nb").startswith("<!-- rlhf-canary:config=a_b.x")  # one line, and not a_b's marker
    assert report.marker("a\nb") != report.marker("a_b") != report.marker("a b")
    assert report.marker("a") != report.marker("b")


def test_nonfinite_numbers():
    assert report.fmt_num(math.nan) == "NaN" and report.fmt_num("Infinity") == "+Inf"
    assert report.fmt_num(-math.inf) == "-Inf" and report.fmt_num(None) == "—"
