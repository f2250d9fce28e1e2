"""GitHub's limits: a comment of at most 65,536 characters and check output of at most 65,535, even for
a comparison with hundreds of metrics; the verdict and the failed checks survive the trimming."""

from __future__ import annotations

import copy
import json

from canary_runner import report
from canary_runner.results import decode

from .conftest import LINKS, load_fixture
from .mdcheck import headings, inertness_problems, parse, tables, visible_text


def big_comparison(n_metrics=600, n_checks=250, n_fail=12, n_warn=8, steps=3000, title_len=40):
    c = copy.deepcopy(load_fixture("handmade-fail"))
    template = c["checks"][1]  # perf.step_time
    checks = []
    for i in range(n_checks):
        ch = copy.deepcopy(template)
        status = "fail" if i < n_fail else ("warn" if i < n_fail + n_warn else "pass")
        ch.update(id=f"perf.metric_{i}", title=f"Metric {i:04d} " + "x" * title_len, status=status,
                  reason=f"metric {i} moved " + "because " * 30)
        checks.append(ch)
    c["checks"] = checks
    c["counts"] = {"pass": n_checks - n_fail - n_warn, "warn": n_warn, "fail": n_fail, "skip": 0}
    c["metrics"] = {f"custom/metric_{i:04d}/with/a/long/name": {"baseline": i * 1.5, "current": i * 1.6}
                    for i in range(n_metrics)}
    c["config_diff"] = [{"path": f"trainer.extra_args.option_{i}", "baseline": i, "current": i + 1} for i in range(200)]
    c["environment"]["changes"] = [{"field": f"packages.pkg{i}", "baseline": "1.0", "current": "2.0"} for i in range(120)]
    c["diagnosis"] = [{"rank": r + 1, "cause": f"cause {r} " + "y" * 200, "evidence": ["e " * 150] * 10,
                       "next_steps": ["n " * 150] * 5, "checks": [f"perf.metric_{r}"]} for r in range(15)]
    series = list(range(1, steps + 1))
    c["curves"] = {f"custom/metric_{i:04d}": {"baseline": {"step": series, "value": [0.5] * steps},
                                               "current": {"step": series, "value": [0.6] * steps}}
                   for i in range(100)}
    c["curves"]["loss"] = {"baseline": {"step": series, "value": [1 / s for s in series]},
                           "current": {"step": series, "value": [1.1 / s for s in series]}}
    return c


def test_hundreds_of_metrics_fit_in_a_comment():
    c = big_comparison()
    full = report.render_summary(c, **LINKS)
    assert len(full) > report.COMMENT_LIMIT  # the point of the test: it would not fit untrimmed
    text = report.render_comment(c, **LINKS)
    assert len(text) <= report.COMMENT_LIMIT
    assert text.startswith(report.marker("dpo_embedded") + "\n")
    assert headings(text)[0].startswith("❌ dpo_embedded: metric 0000") and headings(text)[0].endswith("and 9 more")
    visible = visible_text(text)
    # The metric list, environment and other causes are the full report's: the comment fits untrimmed.
    assert "Shortened" not in visible and "canary-report/report.md" in visible
    for ch in c["checks"]:  # every flagged check keeps its line
        if ch["status"] in ("fail", "warn"):
            assert f"{ch['title']} 21.5 ms → 26.6 ms" in visible
    assert inertness_problems(text, links={LINKS["run_url"], LINKS["artifact_url"]}) == []


def test_mermaid_charts_are_downsampled():
    c = big_comparison()
    text = report.render_summary(c)
    axis = next(ln for ln in text.splitlines() if ln.strip().startswith("x-axis"))
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("line ["))
    assert line.count(",") + 1 == report.CHART_POINTS
    assert axis.count(",") + 1 == report.CHART_POINTS and axis.endswith('"3000"]')  # the last step is on the axis


def test_check_output_fits():
    out = report.render_check(big_comparison(), config_path_override="ci/canary.yaml", **LINKS)
    assert len(out["summary"]) <= report.CHECK_LIMIT and len(out["text"]) <= report.CHECK_LIMIT
    assert out["title"].startswith("❌ dpo_embedded: metric 0000")
    assert "Metric 0000" in out["summary"]
    assert len(out["annotations"]) == 20
    json.dumps(out)


def test_even_thousands_of_failures_fit():
    """The last resort: cut at a line, keep the marker and the headline, say where the rest is."""
    c = big_comparison(n_checks=1000, n_fail=1000, n_warn=0, title_len=110)
    text = report.render_comment(c, report_path="out/report.md")
    assert len(text) <= report.COMMENT_LIMIT
    assert text.startswith(report.marker("dpo_embedded"))
    assert headings(text)[0].startswith("❌ dpo_embedded: metric 0000") and headings(text)[0].endswith("and 997 more")
    assert "The full report is in out/report.md" in visible_text(text)
    check = report.render_check(c)
    assert len(check["summary"]) <= report.CHECK_LIMIT and len(check["text"]) <= report.CHECK_LIMIT


def test_tiny_limit_still_keeps_the_marker():
    c = load_fixture("handmade-fail")
    text = report.render_comment(c, limit=2000)
    assert len(text) <= 2000 and text.startswith(report.marker("dpo_embedded"))
    assert text.splitlines()[1].startswith("### ❌ dpo_embedded: step time +24%")


def test_summary_limit_is_in_bytes():
    c = big_comparison()
    text = report.render_summary(c, limit_bytes=100_000)
    assert len(text.encode("utf-8")) <= 100_000


def test_decoded_and_encoded_inputs_render_the_same():
    c = load_fixture("handmade-crashed")
    from canary_runner.results import encode

    assert report.render_comment(encode(c)) == report.render_comment(decode(encode(c)))


def test_a_cut_closes_what_it_left_open():
    c = load_fixture("handmade-crashed")
    full = report.render_comment(c)
    for limit in range(700, len(full), 97):
        text = report.render_comment(c, limit=limit)
        assert len(text) <= limit and text.startswith(report.marker("dpo_embedded"))
        toks = parse(text)
        # The closing note is visible text, never inside a code block or a closed <details>.
        assert "cut to fit GitHub's limit" in visible_text(text) or "Shortened" in visible_text(text)
        assert text.count("<details>") == text.count("</details>")
        assert not [t for t in toks if t.type == "fence" and "cut to fit" in t.content]


def test_close_open_blocks():
    assert report._close_open_blocks("a\n````text\nx\n```") == "a\n````text\nx\n```\n````"
    assert report._close_open_blocks("<details><summary>s</summary>\n\n| a |") == \
        "<details><summary>s</summary>\n\n| a |\n\n</details>"
    assert report._close_open_blocks("```\n<details>\n```\nok") == "```\n<details>\n```\nok"


def test_comments_are_at_most_half_as_long_as_before_issue_16():
    """Issue 16: for pass, speed, stability, PPO KL, crash and no-baseline the comment halves."""
    from .comment_lengths import BEFORE, lengths

    now = lengths()
    assert {name: now[name] for name in BEFORE if now[name] > BEFORE[name] / 2} == {}
