"""Untrusted strings (config and branch names, metric names, reasons, config values, error messages)
must come out inert: no HTML, links, images, code, strikethrough, headings or @mentions of their own."""

from __future__ import annotations

import json
import re

import pytest

from canary_runner import report

from .conftest import LINKS, load_fixture
from .fixtures.make_handmade import HOSTILE
from .mdcheck import headings, inertness_problems, parse, tables, visible_text, walk

OUR_LINKS = {LINKS["run_url"], LINKS["artifact_url"]}


def hostile():
    return load_fixture("handmade-hostile")


def renders():
    c = hostile()
    check = report.render_check(c, **LINKS)
    return {
        "comment": report.render_comment(c, **LINKS),
        "summary": report.render_summary(c, **LINKS),
        "markdown": report.render_markdown(c, **LINKS),
        "markdown+plots": report.render_markdown(c, plots=[("x", "plots/curve-x.png")], **LINKS),
        "check.summary": check["summary"],
        "check.text": check["text"],
    }


@pytest.mark.parametrize("fmt", ["comment", "summary", "markdown", "markdown+plots", "check.summary", "check.text"])
def test_hostile_strings_are_inert(fmt):
    text = renders()[fmt]
    images = {"plots/curve-x.png"} if fmt == "markdown+plots" else set()
    assert inertness_problems(text, links=OUR_LINKS, images=images) == []


@pytest.mark.parametrize("fmt", ["comment", "summary", "check.summary"])
def test_hostile_strings_are_shown_literally(fmt):
    visible = visible_text(renders()[fmt]).replace("\u200b", "")
    # What the attacker typed is visible as text, minus the newline.
    assert "<img src=x onerror=alert(1)> @org/team [x](http://evil.example) `rm -rf` a|b # heading" in visible
    assert "**bold**" in visible


def test_hostile_headings_and_tables_keep_their_shape():
    text = renders()["comment"]
    assert not [h for h in headings(text) if h.strip().startswith("heading")]
    env = [t for t in tables(text) if t.header == ["Field", "Baseline", "Current"]][0]
    assert all(len(r) == 3 for r in env.rows) and "a|b" in env.rows[0][2]  # the comment's table
    passing = [t for t in tables(renders()["summary"]) if t.header[:2] == ["", "Check"]][0]  # the full report's
    assert len(passing.header) == 6
    assert all(len(r) == 6 for r in passing.rows)
    title = passing.rows[0][1].replace("\u200b", "")
    assert title.startswith("Peak memory (RssAnon) <img src=x onerror=alert(1)> @org/team")
    assert "a|b" in title  # the pipe is in the cell, not a new column


def test_hostile_marker_cannot_be_forged_or_closed():
    text = renders()["comment"]
    first_line = text.split("\n", 1)[0]
    assert re.fullmatch(r"<!-- rlhf-canary:config=[\w.\-]+ -->", first_line)
    assert text.count("<!--") == 1 and text.count("-->") == 1
    assert text.count("<!-- rlhf-canary:config=") == 1
    assert report.marker("other") not in text


def test_hostile_mermaid_is_confined():
    text = renders()["comment"]
    for fence in (t for t in parse(text) if t.type == "fence" and t.info == "mermaid"):
        lines = fence.content.splitlines()
        assert lines[0].startswith("%%{init:") and lines[1] == "xychart-beta"
        for line in lines[2:]:
            assert re.fullmatch(r'    (title "[^"\n]*"|x-axis "step" \[[^\]]*\]|y-axis "[^"\n]*"|line \[[-0-9., e]*\])',
                                line), line


def test_hostile_traceback_stays_in_its_code_block():
    text = renders()["comment"]
    fences = [t for t in parse(text) if t.type == "fence" and t.info == "text"]
    assert len(fences) == 1 and "````" in fences[0].content and "<b>x</b>" in fences[0].content


def test_check_title_and_annotations_are_plain_single_lines():
    out = report.render_check(hostile())
    for line in [out["title"]] + [a["title"] for a in out["annotations"]] + [a["message"] for a in out["annotations"]]:
        assert "\n" not in line and "\r" not in line
    json.dumps(out)


@pytest.mark.parametrize("value", [
    HOSTILE, "@octocat", "team @org/reviewers please", "[x](http://evil)", "![i](http://e/i.png)",
    "<script>alert(1)</script>", "`code`", "a|b|c", "line1\nline2\r\n# h1", "~~strike~~", "$x^2$",
    "- item", "+ item", "1. item", "2) item", "> quote", "    indented", "***", "http://evil.example/x",
    "https://evil.example", "www.evil.example", "mail@evil.example", "<http://evil.example>", "&lt;b&gt;",
    "\\[x](http://evil)", "**bold** _em_ __strong__", "fix #123", "a\u202eb", "[x]: http://evil",
    "<!-- x -->", "x -->", "[x][1]\n\n[1]: http://evil", "---", "===", "- - -", "# x", "###### x", "-0.5",
    "1.0", "2.5e-4", "#12", "+1", "1) x", "<details>", "</details>", "a\n\n| x |\n|--|",
])
def test_escape_md_in_every_context(value):
    escaped = report.escape_md(value)
    for template in ("{}", "- {}", "| a | b |\n|--|--|\n| {} | x |", "**{}**", "1. **{}**\n   - {}"):
        text = template.replace("{}", escaped)
        plain = template.replace("{}", "x")
        assert inertness_problems(text) == [], (value, template)
        # The same structure as with a harmless value: no block or inline markup of its own.
        assert [t.type for t in parse(text)] == [t.type for t in parse(plain)], (value, template)
        inline_types = {t.type for t in walk(parse(text)) if t.type not in ("text", "text_special", "softbreak")}
        assert inline_types <= {t.type for t in walk(parse(plain))}, (value, template)
        if template.startswith("|"):
            assert len(tables(text)[0].rows[0]) == 2
    shown = visible_text(escaped).replace("\u200b", "")
    assert shown == report.clean_text(value)


@pytest.mark.parametrize("value, expected", [
    ("dpo_embedded", "dpo_embedded"), ("-0.5", "-0.5"), ("1.0", "1.0"), ("rewards/margins", "rewards/margins"),
    ("1. x", "1\\. x"), ("- x", "\\- x"), ("# x", "\\# x"), ("_x_", "\\_x\\_"), ("a|b", "a\\|b"),
    ("@team", "@&#8203;team"), ("www.x.org", "www&#8203;\\.x\\.org"),
])
def test_escape_md_keeps_plain_text_readable(value, expected):
    assert report.escape_md(value) == expected


def test_breaks_survive_renderers_that_join_text_runs():
    """Some renderers join adjacent text before looking for links and mentions: the visible text
    itself (escapes resolved, zero-width breaks kept) must hold no scheme URL, www. link, e-mail or mention."""
    for fmt, text in renders().items():
        visible = visible_text(text)
        assert not re.search(r"(?i)\b(https?|ftp)://(?!github\.com/acme/)", visible), fmt
        assert not re.search(r"(?i)\bwww\.", visible), fmt
        assert not re.search(r"\w@\w|(?<![\w`])@[A-Za-z0-9]", visible), fmt
