"""Golden files: every fixture (hand-made and from real runs) in every format, byte for byte."""

from __future__ import annotations

import json

import jsonschema
import pytest

from canary_runner import report
from canary_runner.plots import plan_plots

from .conftest import LINKS, assert_golden, fixture_names, load_fixture, raw_fixture

FORMATS = ("comment", "summary", "check", "markdown")


def render(name: str, fmt: str) -> str:
    c = load_fixture(name)
    if fmt == "markdown":
        plots = [(m, f"plots/{f}") for m, f in plan_plots(c)]
        return report.render_markdown(c, plots=plots, **LINKS)
    if fmt == "check":
        return json.dumps(report.render_check(c, **LINKS), indent=1, ensure_ascii=False) + "\n"
    return report.render(c, fmt, **LINKS)


@pytest.mark.parametrize("kind", ["handmade", "real"])
def test_fixtures_cover_every_verdict_and_a_crash(kind):
    """Both kinds: hand-made ones (edge cases on demand) and real `canary run` + `canary compare` output."""
    names = [n for n in fixture_names() if n.startswith(kind + "-")]
    verdicts = {raw_fixture(n)["verdict"] for n in names}
    assert verdicts == {"pass", "warn", "fail", "no-baseline"}
    assert any(raw_fixture(n)["current"]["status"] == "crashed" for n in names)


@pytest.mark.parametrize("name", fixture_names())
def test_fixture_is_a_valid_comparison(name):
    validator = jsonschema.Draft202012Validator(report.comparison_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(raw_fixture(name))]
    assert not errors


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", fixture_names())
def test_golden(name, fmt):
    ext = "json" if fmt == "check" else "md"
    assert_golden(f"{name}.{fmt}.{ext}", render(name, fmt))


@pytest.mark.parametrize("name", fixture_names())
def test_rendering_is_deterministic(name):
    assert render(name, "comment") == render(name, "comment")
