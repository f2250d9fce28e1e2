"""The comment as GitHub renders it: GFM to HTML (markdown-it-py, tables and raw <details> as on GitHub),
then every Mermaid block through Mermaid itself (the npm package, pinned in tests/report/render, in
headless Chromium: `mermaid.parse` and `mermaid.render`), with zero errors, for each kind of finding and
a six-config matrix. Without Chromium or node_modules the browser part skips, saying why, unless
CANARY_REQUIRE_BROWSER=1 (.ci/run installs both): then it fails."""

from __future__ import annotations

import os

import pytest

from canary_runner import report
from canary_runner.report_matrix import MatrixEntry, matrix_marker, render_matrix

from .cases import SINGLE_CASES, case, decoded, matrix_cases
from .conftest import LINKS
from .mdcheck import tables
from .render import gfm

RUN_URL = LINKS["run_url"]
CASES = (*SINGLE_CASES, "matrix-6")


def matrix_comment() -> str:
    entries = [MatrixEntry(name, decoded(raw), artifact_url=f"{RUN_URL}/artifacts/{i}")
               for i, (name, raw) in enumerate(matrix_cases().items())]
    return render_matrix(entries, "comment", run_url=RUN_URL, artifacts_url=f"{RUN_URL}#artifacts")


def comment(name: str) -> str:
    if name == "matrix-6":
        return matrix_comment()
    return report.render_comment(decoded(case(name)), run_url=RUN_URL, artifact_url=LINKS["artifact_url"])


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = gfm.missing()
    if why:
        if os.environ.get("CANARY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CANARY_REQUIRE_BROWSER=1 but the comment cannot be rendered in a browser: {why}")
        pytest.skip(f"no headless browser with Mermaid: {why}")
    driver = gfm.browser(tmp_path_factory.mktemp("chromium-profile"))
    driver.get(gfm.blank_page(tmp_path_factory.mktemp("page")).as_uri())
    yield driver
    driver.quit()


@pytest.mark.parametrize("name", CASES)
def test_the_comment_is_well_formed_html(name):
    text = comment(name)
    html = gfm.to_html(text)
    # Every fence GitHub would draw as a diagram arrives as one, whole: none swallowed by an open block.
    assert len(gfm.mermaid_blocks(html)) == text.count("```mermaid")
    assert html.count("<details>") == html.count("</details>") == text.count("<details>")
    assert "<p>|" not in html and "\n|" not in html.replace("<pre", "\0").split("\0")[0]  # no table shown as text
    assert "```" not in html  # no fence left unparsed (shown as text)


def test_every_mermaid_block_parses_and_renders(browser):
    blocks = {name: gfm.mermaid_blocks(gfm.to_html(comment(name))) for name in CASES}
    assert sum(map(len, blocks.values())) >= 8, blocks.keys()  # the test must see charts to mean anything
    assert blocks["crash"] and blocks["nan"], "the crashed and the NaN run draw their curves"
    problems = {name: errors for name, codes in blocks.items() if codes
                for errors in [gfm.mermaid_errors(browser, codes)] if errors}
    assert problems == {}


def test_a_broken_block_is_caught(browser):
    """The check itself can fail: a chart with a line of the wrong kind is a Mermaid error."""
    errors = gfm.mermaid_errors(browser, ['xychart-beta\n    x-axis "step" ["1", "2"]\n    line [1, "two"]'])
    assert len(errors) == 1


def test_a_six_config_matrix_is_one_comment_under_githubs_limit():
    text = matrix_comment()
    assert text.startswith(matrix_marker() + "\n")
    assert len(text) <= report.COMMENT_LIMIT
    rows = tables(text)[0]
    assert len(rows.rows) == 6
    assert text.count("<details><summary>") >= 6
    # Each config's own marker is gone: only the matrix's leads (GitHub matches the first line).
    assert not any(report.marker(raw["current"]["config_name"]) in text for raw in matrix_cases().values())


def test_a_matrix_too_big_for_one_comment_trims_the_bodies_never_the_table():
    from .test_size import big_comparison

    entries = []
    for i in range(6):
        c = big_comparison(n_metrics=300, n_checks=120, steps=500)
        c["current"]["config_name"] = f"config_{i}"
        entries.append(MatrixEntry(f"canary-config_{i}", c))
    text = render_matrix(entries, "comment", run_url=RUN_URL)
    assert len(text) <= report.COMMENT_LIMIT
    assert tables(text)[0].column("Config") == [f"config_{i}" for i in range(6)]
    assert "✂️" in text  # the bodies say they were shortened
