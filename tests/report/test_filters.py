"""The Jinja filters: numbers, units, signed percentages with intervals, durations, thresholds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from canary_runner import report


@pytest.mark.parametrize("x, text", [
    (0.693147, "0.693"), (21.5234, "21.5"), (26020.4, "26,020"), (1234.56, "1,235"), (1.234e-5, "1.23e-5"),
    (0, "0"), (0.0, "0"), (-0.5, "-0.5"), (123456, "123,456"), (12345678, "1.23e7"), (1e20, "1e20"),
    (-6.7e-4, "-6.7e-4"), (True, "true"), (None, "—"),
    (math.nan, "NaN"), (math.inf, "+Inf"), ("-Infinity", "-Inf"),
])
def test_num(x, text):
    assert report.fmt_num(x) == text


@pytest.mark.parametrize("s, text", [
    (0.0000123, "12.3 µs"), (0.02152, "21.5 ms"), (3.21, "3.21 s"), (125, "2 min 5 s"), (120, "2 min"),
    (3720, "1 h 2 min"), (7200, "2 h"), (0, "0 s"), (-0.5, "-500 ms"), (math.nan, "NaN"),
])
def test_duration(s, text):
    assert report.fmt_duration(s) == text


@pytest.mark.parametrize("x, unit, text", [
    (0.02152, "s", "21.5 ms"), (349.4, "MB", "349 MB"), (26020.0, "tokens/s", "26,020 tokens/s"),
    (0.75, "ratio", "0.75"), (3, None, "3"), (None, "s", "—"), (math.nan, "MB", "NaN"), (1.0, "<b>", "1 &lt;b&gt;"),
])
def test_unit(x, unit, text):
    assert report.fmt_unit(x, unit) == text


@pytest.mark.parametrize("x, text", [
    (0.1234, "+12%"), (3.61, "+361%"), (-0.05, "-5.0%"), (-0.012, "-1.2%"), (0.0004, "+0.04%"), (0, "±0%"),
    (12.345, "+1,234%"), (math.inf, "+Inf"),
])
def test_pct(x, text):
    assert report.fmt_pct(x) == text


@pytest.mark.parametrize("check, text", [
    ({"change": 0.2365, "ci": [0.181, 0.285]}, "+24% (CI +18…+28%)"),
    ({"change": -0.19, "ci": None}, "-19%"),
    ({"change": 0.003, "change_kind": "absolute", "unit": "s", "ci": [0.001, 0.005]}, "+3 ms (CI +1 ms…+5 ms)"),
    ({"change": 14.2, "change_kind": "absolute", "unit": "nats", "ci": [11.8, 16.4]}, "+14.2 nats (CI +11.8…+16.4 nats)"),
    ({"change": 4, "change_kind": "absolute"}, "+4"),
    ({"change": None}, "—"),
    ({"change": "NaN", "ci": ["NaN", "NaN"]}, "NaN"),
    # From a near-zero baseline a percentage says little: the absolute difference.
    ({"change": 2e23, "baseline": 5e-4, "current": 1e20, "ci": [1e23, 3e23]}, "+1e20"),
])
def test_change(check, text):
    assert report.fmt_change(check) == text


@pytest.mark.parametrize("check, text", [
    ({"threshold": 0.1, "threshold_kind": "relative", "direction": "lower_is_better"}, "+10%"),
    ({"threshold": 0.1, "threshold_kind": "relative", "direction": "higher_is_better"}, "-10%"),
    ({"threshold": 0.2, "threshold_kind": "relative", "direction": "band"}, "±20%"),
    ({"threshold": 0, "threshold_kind": "absolute", "direction": "lower_is_better"}, "≤ 0"),
    ({"threshold": 0.5, "threshold_kind": "absolute", "direction": "higher_is_better", "unit": "ratio"}, "≥ 0.5"),
    ({"threshold": 2048, "threshold_kind": "absolute", "direction": "lower_is_better", "unit": "MB"}, "≤ 2,048 MB"),
    ({"threshold": 32, "threshold_kind": "absolute", "direction": "lower_is_better", "unit": "MB",
      "change": 0.7, "change_kind": "absolute"}, "+32 MB"),
    ({"threshold": 0.15, "threshold_kind": "absolute", "direction": "higher_is_better", "change": 0.0,
      "change_kind": "absolute"}, "-0.15"),
    ({"threshold": 0.03, "threshold_kind": "absolute", "direction": "band", "change": 0.0,
      "change_kind": "absolute"}, "±0.03"),
    ({"threshold": None}, "—"),
    ({"threshold": 1, "threshold_kind": "none"}, "—"),
])
def test_threshold(check, text):
    assert report.fmt_threshold(check) == text


def test_status_and_json():
    assert report.fmt_status("fail") == "❌ fail" and report.fmt_status("skip") == "⏭️ skip"
    assert report.fmt_json({"b": 1, "a": "x"}) == '{&quot;a&quot;: &quot;x&quot;, &quot;b&quot;: 1}'
    assert report.fmt_json(None) == "—" and report.fmt_json(0.0005) == "5e-4"


def test_code_block_fence_outgrows_the_content():
    block = report.code_block("a\n````\nb", "text")
    assert block.startswith("`````text\n") and block.endswith("\n`````")
    assert report.code_block("\n".join(map(str, range(100))), max_lines=5).count("\n") == 7


def test_safe_url():
    assert report.safe_url("https://github.com/o/r/actions/runs/1") == "https://github.com/o/r/actions/runs/1"
    assert report.safe_url("javascript:alert(1)") is None
    assert report.safe_url("https://x.test/a b)") == "https://x.test/a%20b%29"
    assert report.safe_url("") is None and report.safe_url("//x") is None


def test_downsample_to_fifty_points_keeps_first_and_last_step():
    steps = list(range(1, 1001))
    data = report.downsample({"step": steps, "value": [float(s) for s in steps]}, {"step": steps, "value": [1.0] * 1000})
    assert len(data["x"]) == report.CHART_POINTS and data["x"][-1] == 1000
    assert len(data["lines"]["baseline"]) == len(data["lines"]["current"]) == report.CHART_POINTS
    assert data["lines"]["baseline"][0] == pytest.approx(10.5)  # the mean of steps 1..20


def test_downsample_stops_a_line_at_nan_and_fills_gaps():
    base = {"step": [1, 2, 3, 4, 5], "value": [1.0, None, 3.0, 4.0, 5.0]}
    cur = {"step": [1, 2, 3, 4, 5], "value": [1.0, 2.0, "NaN", 4.0, 5.0]}
    data = report.downsample(base, cur)
    assert data["lines"]["baseline"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert data["lines"]["current"] == [1.0, 2.0] and data["nonfinite"] == {"current": 3}


def test_downsample_short_run_and_no_baseline():
    data = report.downsample(None, {"step": [1, 2], "value": [0.5, 0.4]})
    assert data["x"] == [1, 2] and list(data["lines"]) == ["current"]
    assert report.downsample(None, {"step": [], "value": []}) == {"x": [], "lines": {}, "nonfinite": {}}


def test_mermaid_chart_labels_are_confined():
    chart = report.mermaid_chart('a"]\n```\nline [1] %%{init}%%', {"baseline": None, "current": {"step": [1], "value": [2.0]}})
    code = chart["code"]
    assert code.count("```") == 2 and 'title "a line 1 init"' in code


def test_templates_load_from_the_package_path():
    path = report.templates_dir()
    assert path.parts[-2:] == ("canary_runner", "templates") or path.name == "templates"
    assert (path / "comment.md.j2").is_file()
    assert set(report.environment().list_templates()) >= {
        "comment.md.j2", "summary.md.j2", "report.md.j2", "check_summary.md.j2", "check_text.md.j2"}


def test_template_dir_falls_back_to_the_repo(monkeypatch, tmp_path):
    from importlib import resources

    monkeypatch.setattr(resources, "files", lambda pkg: tmp_path)
    assert report.templates_dir() == Path(report.__file__).resolve().parent.parent / "templates"


def test_expressions_are_escaped_by_default():
    env = report.environment()
    assert env.from_string("{{ x }}").render(x="<b>@a</b>") == "&lt;b&gt;@&#8203;a&lt;/b&gt;"
    assert env.from_string("{{ x|md }}").render(x="**ours**") == "**ours**"
    assert env.from_string("{{ x }}").render(x=None) == ""


def test_ci_names_its_level_once_and_its_unit_once():
    check = {"change": 3.61, "ci": [2.92, 4.05], "confidence": 0.95}
    assert report.fmt_ci(check) == "95% CI +292…+405%"
    assert report.fmt_ci({**check, "change_kind": "absolute", "unit": "nats"}) == "95% CI +2.92…+4.05 nats"
    assert report.fmt_ci({"change": 0.1, "ci": None}) == ""


@pytest.mark.parametrize("value, text", [
    (False, "false"), (True, "true"), (None, "null"), (1e20, "1e20"), (0.0005, "5e-4"), ("eager", "eager"),
    ([1, None], "[1, null]"), ({"a": False}, "{a: false}"),
])
def test_config_values_in_yaml_spelling(value, text):
    from .mdcheck import visible_text

    assert visible_text(report.fmt_yaml(value)) == text


def test_hashes_are_shortened_to_twelve_hex():
    assert report.short_hash("20eb86b1bfb796d2ad2e5185df1a28499df2a9b3") == "20eb86b1bfb7"
    assert report.short_hash("sha256:" + "ab" * 32) == "sha256:abababababab"
    assert report.short_hash("v1.2") == "v1.2"


@pytest.mark.parametrize("text, shown", [
    ("Read the traceback: `error.traceback` in /tmp/rep/real/dpo-crashed/metrics.json",
     "Read the traceback: error.traceback in metrics.json"),
    ("Inspect the steps before 2 in steps.jsonl of /home/runner/work/x/canary-out: which metric moved first",
     "Inspect the steps before 2 in steps.jsonl of the run's output: which metric moved first"),
    ("train.max_grad_norm: 1.0 -> None", "train.max_grad_norm: 1.0 → null"),
    ("train.bf16 False -> True", "train.bf16 false → true"),
    ("a/b and ./x/y.txt stay", "a/b and ./x/y.txt stay"),
])
def test_prose_drops_runner_paths_and_backticks(text, shown):
    from .mdcheck import visible_text

    rendered = report.prose(text)
    assert "\\`" not in rendered and visible_text(rendered) == shown


def test_mermaid_lines_span_the_whole_axis():
    """Mermaid draws a line shorter than the x-axis to NaN coordinates: every line spans it."""
    steps = list(range(1, 31))
    base = {"step": steps, "value": [1.0 + s for s in steps]}
    crashed = report.mermaid_chart("loss", {"baseline": base, "current": {"step": steps[:12], "value": [1.0] * 12}})
    nan = report.mermaid_chart("loss", {"baseline": base, "current": {"step": [1, 2], "value": [1.0, "NaN"]}})
    for chart in (crashed, nan):
        lines = [ln for ln in chart["code"].splitlines() if ln.strip().startswith("line [")]
        assert all(ln.count(",") + 1 == chart["points"] for ln in lines), lines
        assert "x-axis" not in chart["code"] and f"steps 1–{chart['points']}" in chart["legend"]  # Mermaid's own 1..n
    assert crashed["points"] == 12 and "baseline continues to step 30, shown up to step 12" in crashed["notes"]
    assert nan["points"] == 30 and nan["notes"] == ["current is NaN/Inf from step 2 (not drawn)"]


def test_mermaid_identical_curves_draw_the_baseline_and_say_so():
    curve = {"step": [1, 2, 3], "value": [0.5, 0.4, 0.3]}
    chart = report.mermaid_chart("loss", {"baseline": curve, "current": dict(curve)})
    assert chart["code"].count("line [") == 1 and "identical to baseline" in chart["legend"]
    assert "#9e9e9e" in chart["code"] and "#d62728" not in chart["code"]


def test_mermaid_y_axis_gets_an_si_suffix():
    chart = report.mermaid_chart("step_time_s", {"baseline": None, "current": {"step": [1, 2], "value": [0.0175, 0.0807]}})
    assert 'title "step_time_s (ms)"' in chart["code"] and "line [17.5, 80.7]" in chart["code"]
    chart = report.mermaid_chart("tokens", {"baseline": None, "current": {"step": [1, 2], "value": [26020.0, 5985.0]}})
    assert 'title "tokens (k)"' in chart["code"] and "line [26, 6]" in chart["code"]
    chart = report.mermaid_chart("loss", {"baseline": None, "current": {"step": [1, 2], "value": [0.69, 0.5]}})
    assert 'title "loss"' in chart["code"]
