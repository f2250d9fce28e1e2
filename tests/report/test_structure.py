"""What a reviewer reads, checked through a CommonMark/GFM parser: marker, headline, tables, sections."""

from __future__ import annotations

import math

import pytest

from canary_runner import report

from .conftest import LINKS, fixture_names, load_fixture
from .mdcheck import headings, parse, tables, visible_text

PASSING_HEADER = ["", "Check", "Baseline", "Current", "Change", "Limit"]


def comment(name, **kw):
    return report.render_comment(load_fixture(name), **{**LINKS, **kw})


def items(text):
    """The flagged checks' lines under the heading (list items opening with a status icon), as visible text."""
    toks = parse(text)
    lines = [report.clean_text(t.content if not t.children else "".join(
        c.content for c in t.children if c.type in ("text", "text_special", "code_inline")))
        for i, t in enumerate(toks) if t.type == "inline" and i > 0 and toks[i - 1].type == "paragraph_open"
        and i > 1 and toks[i - 2].type == "list_item_open"]
    return [ln for ln in lines if ln.split(" ", 1)[0] in ("❌", "⚠️", "🚀")]


def test_fail_comment_headline_names_the_finding():
    text = comment("handmade-fail")
    assert text.startswith("<!-- rlhf-canary:config=dpo_embedded -->\n")
    assert text.count("<!-- rlhf-canary:") == 1
    assert headings(text)[0] == "❌ dpo_embedded: step time +24% (95% CI +18…+28%), throughput -19%"


def test_speed_fail_headline_and_one_line_per_failing_check():
    text = comment("handmade-speed")
    assert headings(text)[0] == "❌ sft_embedded: step time +361% (95% CI +292…+405%), throughput -77%"
    lines = items(text)
    assert lines[0] == "❌ Step time (median) 17.5 ms → 80.7 ms (+361%, 95% CI +292…+405%, limit +20%, n=75/75)"
    assert lines[1].startswith("❌ Throughput 26,020 tokens/s → 5,985 tokens/s (-77%, 95% CI -80…-74%")
    visible = visible_text(text)
    # Each number once: the change is in the heading and its line, not in a table or the evidence too.
    assert visible.count("+361%") == 2 and visible.count("80.7 ms") == 1
    assert "Config changed: model.attn_implementation: sdpa → eager · train.gradient_checkpointing: false → true" \
        in visible
    assert "/home/runner" not in text and "\\`" not in text  # no runner paths, no escaped backticks
    # The chart behind the failure first, then loss, which is identical to the baseline and says so.
    fences = [t.content for t in parse(text) if t.type == "fence"]
    assert 'title "step_time_s (ms)"' in fences[0]
    assert 'title "loss"' in fences[1] and fences[1].count("line [") == 1
    assert "steps 1–30; grey: current, identical to baseline" in visible
    assert len(fences) == 2  # no reward chart: nothing flagged it


def test_fail_comment_folds_the_passing_checks():
    c = load_fixture("handmade-fail")
    text = comment("handmade-fail")
    assert "✅ Peak memory (RssAnon) +0.2% · NaN/Inf values ±0 · Loss curve vs baseline +5e-4" in visible_text(text)
    passing = tables(report.render_summary(c))[-3]  # the full report's table
    assert passing.header == PASSING_HEADER
    expected = [ch for ch in c["checks"] if ch["status"] == "pass" and ch["current"] is not None]
    assert sorted(passing.column("Check")) == sorted(ch["title"] for ch in expected)
    assert "✅ Also passed: Run completed" in visible_text(text)  # no numbers: named, not a row of dashes
    assert set(passing.column("")) == {"✅"}
    row = passing.rows[passing.column("Check").index("Peak memory (RssAnon)")]
    assert row == ["✅", "Peak memory (RssAnon)", "349 MB", "350 MB", "+0.2%", "+10%"]
    blocks = [t.content for t in parse(text) if t.type == "html_block"]
    assert any("6 checks passed, 1 skipped" in b for b in blocks)
    lines = items(text)
    assert [ln.split(" ", 1)[0] for ln in lines] == ["❌", "❌", "⚠️"]
    assert lines[2] == ("⚠️ Reward margin grows 0.731 → 0.31 (-0.421, limit -0): margin grows slower than the "
                        "baseline's (0.31 vs 0.73 at step 30)")


def test_fail_comment_diagnosis_links_and_charts():
    text = comment("handmade-fail")
    heads = headings(text)
    assert heads[1:] == ["Likely cause", "Curves"]
    visible = visible_text(text)
    assert "A config change made every step slower" in visible
    assert "train.max_length 128 → 256" in visible  # evidence, shown as plain text
    assert "revert train.max_length" in visible  # next step
    assert "Also possible: dpo.beta 0.1 → 0.5 slows the reward margin's growth" in visible
    fences = [t for t in parse(text) if t.type == "fence"]
    assert [f.info for f in fences] == ["mermaid", "mermaid"]  # the failure's series, then loss
    assert 'title "step_time_s (ms)"' in fences[0].content and 'title "loss"' in fences[1].content
    assert "Config changed: dpo.beta: 0.1 → 0.5 · train.max_length: 128 → 256" in visible
    assert "All metrics" not in text and "Environment" not in text  # the full report's, not the comment's
    hrefs = [t.attrGet("href") for t in _all(text) if t.type == "link_open"]
    assert hrefs == [LINKS["run_url"], LINKS["artifact_url"]]
    assert "full report: canary-report/report.md" in visible


def test_ppo_kl_fail_charts_kl_and_entropy_before_loss():
    text = comment("handmade-ppo-kl")
    assert headings(text)[0] == ("❌ ppo_embedded: KL to the reference +14.2 nats (95% CI +11.8…+16.4 nats), "
                                 "policy entropy -37%")
    titles = [t.content.split('title "')[1].split('"')[0] for t in parse(text) if t.type == "fence"]
    assert titles == ["objective/kl", "policy/entropy_avg", "loss"]
    assert items(text)[0].startswith("❌ KL to the reference 6.7e-4 nats → 14.2 nats (+14.2 nats, 95% CI")


def test_full_reports_keep_every_cause_metric_and_the_environment():
    c = load_fixture("handmade-fail")
    for text in (report.render_summary(c), report.render_markdown(c)):
        assert "Likely causes" in headings(text)
        blocks = [t.content for t in parse(text) if t.type == "html_block"]
        assert any("All metrics (14)" in b for b in blocks) and any("Environment" in b for b in blocks)
        env = [t for t in tables(text) if t.header == ["", "Baseline", "Current"]][0]
        assert ["Git SHA", "0a1b2c3d4e5f", "1f2e3d4c5b6a"] in env.rows
        assert ["Config hash", "sha256:abababababab", "sha256:abababababab"] in env.rows


def _all(text):
    from .mdcheck import walk

    return list(walk(parse(text)))


def test_pass_comment_gives_the_key_numbers_and_folds_the_rest():
    text = comment("handmade-pass")
    assert headings(text) == ["✅ dpo_embedded: step time +0.9% (95% CI -2.1…+3.7%), memory +0.2%, "
                              "loss curve within ±0.05"]
    assert not items(text)
    blocks = [t.content for t in parse(text) if t.type == "html_block"]
    assert any("Curves: loss" in b for b in blocks)  # the chart is folded
    assert any("9 checks passed, 1 skipped" in b for b in blocks)
    assert "Environment changed" not in headings(text)
    self_pass = comment("real-dpo-self")
    assert headings(self_pass)[0].endswith("loss curve identical")


def test_warn_comment_shows_environment_diff():
    text = comment("handmade-warn")
    assert headings(text)[0] == "⚠️ dpo_embedded: peak memory +6.2% (95% CI +5.5…+6.9%)"
    assert "Environment changed" in headings(text)
    env = [t for t in tables(text) if t.header == ["Field", "Baseline", "Current"]][0]
    assert env.rows == [["packages.transformers", "5.23.0", "5.24.0"]]


def test_no_baseline_comment_says_what_was_judged():
    text = comment("handmade-no-baseline")
    assert headings(text)[0] == ("🆕 dpo_embedded: no baseline yet; 1 invariant, 1 stability check, 2 RL health "
                                 "checks passed on this run alone")
    assert "Nothing was compared" in visible_text(text)
    assert "Reward accuracy 0.75" in visible_text(text) and "Also passed: Run completed" in visible_text(text)
    own = tables(report.render_summary(load_fixture("handmade-no-baseline")))[0]
    assert own.header == ["", "Check", "Current", "Limit"]
    assert "Reward accuracy" in own.column("Check")
    assert "Config diff" not in text
    blocks = [t.content for t in parse(text) if t.type == "html_block"]
    assert any("5 checks passed, 5 skipped" in b for b in blocks)
    mermaid = [t for t in parse(text) if t.type == "fence"]
    assert mermaid and all(f.content.count("line [") == 1 for f in mermaid)  # current only
    metrics = [t for t in tables(report.render_summary(load_fixture("handmade-no-baseline")))
               if t.header == ["Metric", "Value"]][0]
    assert ["step_time_s.median", "0.0215"] in metrics.rows


def test_crashed_comment_says_so_in_the_heading_and_an_alert():
    text = comment("handmade-crashed")
    assert headings(text)[0] == "💥 dpo_embedded: crashed at step 12/30 (RuntimeError)"
    assert "> [!CAUTION]\n> **The run crashed** after 12 of 30 steps (error at step 13): RuntimeError: " in text
    visible = visible_text(text)
    fences = [t for t in parse(text) if t.type == "fence"]
    tb = [f for f in fences if f.info == "text"][0]
    assert "loss.backward()" in tb.content and "```" in tb.content  # the traceback's fence stayed inside
    lines = items(text)
    assert not any("Run completed" in ln for ln in lines)  # the alert says it
    assert any(ln.startswith("❌ Loss curve vs baseline 0.487 → NaN") for ln in lines)
    loss_chart = [f for f in fences if f.info == "mermaid" and 'title "loss"' in f.content][0]
    assert "current is NaN/Inf from step 12 (not drawn)" in visible
    assert "steps 1–11" in visible  # the axis is cut where the current stops
    lines = [ln for ln in loss_chart.content.splitlines() if ln.strip().startswith("line [")]
    assert lines and all(len(ln.split(",")) == 11 for ln in lines)  # every line spans the axis


def test_interrupted_comment():
    text = comment("handmade-interrupted")
    assert headings(text)[0] == "💥 dpo_embedded: interrupted at step 11/30 (SIGTERM)"
    assert "> [!CAUTION]\n> **The run was interrupted** after 11 of 30 steps: Interrupted: received SIGTERM" in text


@pytest.mark.parametrize("name", fixture_names())
def test_summary_and_markdown_have_no_marker_but_the_same_tables(name):
    c = load_fixture(name)
    summary = report.render_summary(c)
    md = report.render_markdown(c)
    assert "<!-- rlhf-canary:config" not in summary and "<!-- rlhf-canary:config" not in md
    assert headings(summary)[0] == headings(report.render_comment(c))[0]
    assert [t.header for t in tables(md)] == [t.header for t in tables(summary)]


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
    assert out["annotations"] == []  # no config file in the repository
    out["annotations"] = report.render_check(c, config_path_override="ci/canary.yaml")["annotations"]
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
    assert out["annotations"][0]["message"] == "21.5 ms → 26.6 ms (+24%, 95% CI +18…+28%, limit +10%, n=75/75)"
    assert all("\n" not in a["message"] for a in out["annotations"])
    assert out["title"] == "❌ dpo_embedded: step time +24% (95% CI +18…+28%), throughput -19%"


def test_annotations_point_at_the_repository_config_or_at_no_file():
    c = load_fixture("handmade-fail")
    assert report.render_check(c)["annotations"] == []  # no config file in the repository: no file to point at
    c["current"]["config_path"] = "ci/canary/dpo.yaml"
    assert report.render_check(c)["annotations"][0]["path"] == "ci/canary/dpo.yaml"
    c["current"]["config_path"] = "/home/runner/work/x/configs/dpo.yaml"  # a runner path is no repository file
    assert report.render_check(c)["annotations"] == []
    assert {a["path"] for a in report.annotations(c, None)} == {""}


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


def test_an_improvement_past_the_limit_gets_its_own_marker():
    c = load_fixture("handmade-pass")
    for ch in c["checks"]:
        if ch["id"] == "perf.step_time":
            ch.update(current=0.0151, change=-0.30, ci=[-0.35, -0.25])
    text = report.render_comment(c)
    assert items(text) == ["🚀 Step time (median) 21.5 ms → 15.1 ms (-30%, 95% CI -35…-25%, limit +10%, n=75/75)"]
    assert "8 other checks passed, 1 skipped" in text
    assert "Step time (median) +" not in visible_text(text)  # listed once, as the improvement
    for ch in c["checks"]:
        if ch["id"] == "perf.step_time":
            ch.update(ci=[-0.35, 0.02])  # the interval reaches back inside the limit: not an improvement yet
    assert not items(report.render_comment(c))
