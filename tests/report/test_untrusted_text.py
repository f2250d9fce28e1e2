"""Text from a run inside a report: HTML comments (and so sticky-comment markers) never survive, and a
comparison.json that the schema accepts renders even when every optional field is left out."""

from __future__ import annotations

import copy

import pytest

from canary_runner import report, schemas

from .conftest import LINKS, raw_fixture

FORGED = f"{report.marker('other_config')} <!-- hidden --> -->"


def with_forged_markers() -> dict:
    c = raw_fixture("handmade-crashed")
    c["current"]["error"]["traceback"] += f"\n{FORGED}\n"
    c["current"]["error"]["message"] += FORGED
    c["current"]["config_name"] = "dpo_embedded" + FORGED
    c["checks"][0]["reason"] = FORGED
    c["diagnosis"][0]["evidence"].append(FORGED)
    return c


@pytest.mark.parametrize("fmt", ["comment", "summary", "markdown", "check"])
def test_markers_and_html_comments_in_run_text_are_neutralised(fmt):
    c = with_forged_markers()
    if fmt == "check":  # the markdown parts (title and annotations are plain text, never a comment)
        check = report.render_check(report.decode(c), **LINKS)
        text = check["summary"] + check["text"]
    else:
        text = report.render(report.decode(c), fmt, **LINKS)
    assert report.marker("other_config") not in text
    if fmt == "comment":  # the comment's own marker, on its first line, is the only HTML comment
        first, rest = text.split("\n", 1)
        assert first == report.marker(c["current"]["config_name"]) and "<!--" not in rest and "-->" not in rest
    else:
        assert "<!--" not in text and "-->" not in text
    assert "hidden" in text  # the text is still shown


def _prune(value, schema: dict, root: dict):
    """`value` with every property the schema does not require left out (recursively)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict) and "properties" in schema:
        required = set(schema.get("required", []))
        props = schema["properties"]
        return {k: _prune(v, props.get(k, {}), root) for k, v in value.items() if k in required}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"], root) for v in value]
    return value


@pytest.mark.parametrize("name", ["handmade-crashed", "handmade-fail", "handmade-warn", "handmade-no-baseline"])
@pytest.mark.parametrize("error", [None, {}, {"message": "only a message"}])
def test_a_comparison_with_only_the_required_fields_renders(name, error):
    schema = schemas.load("comparison")
    c = _prune(copy.deepcopy(raw_fixture(name)), schema, schema)
    if c["current"]["status"] != "completed":
        c["current"]["error"] = error
    report.validate_comparison(c)  # the schema accepts it
    decoded = report.decode(c)
    for fmt in report.FORMATS:
        assert report.render(decoded, fmt, **LINKS).strip()
    assert report.render_check(decoded)["title"]
