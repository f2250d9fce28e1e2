"""The trend page (canary history render) and acknowledgements (canary history ack) on a path: store."""

from __future__ import annotations

import re
import time

import pytest

from canary_runner.cli import main
from canary_runner.history import index as ix
from canary_runner.history.page import ConfigHistory, render_html

from .trend_data import HW, history, sha_of, write_store

REPO = "octo-org/canary-app"


def charts(page: str) -> dict[str, str]:
    """{metric: svg} of the first config section."""
    out: dict[str, str] = {}
    for metric, svg in re.findall(r'<svg class="chart" data-metric="([a-z_]+)"(.*?)</svg>', page, re.S):
        out.setdefault(metric, svg)
    return out


ALLOWED_TAGS = {"html", "head", "meta", "base", "title", "style", "body", "h1", "h2", "p", "section", "div", "figure",
                "figcaption", "svg", "path", "text", "line", "rect", "polyline", "circle", "a", "table", "tr", "th",
                "td"}


def parsed_tags(page: str) -> list[tuple[str, list]]:
    """Every start tag of the page as a browser's tokenizer sees it: (name, attributes)."""
    from html.parser import HTMLParser

    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def test_each_chart_has_a_linked_point_per_value_and_the_change_point_marked():
    idx = history("dpo_smoke", 30, step_at=15, missing={"final_loss": {3, 4}})
    page = render_html([ConfigHistory(idx, [{"metric": "step_time_s", "commit": sha_of("dpo_smoke", 15),
                                            "kind": "step", "change": 0.1}])], repo=REPO)
    svgs = charts(page)
    assert {m: svg.count('class="pt"') for m, svg in svgs.items()} == {
        "step_time_s": 30, "tokens_per_s": 30, "peak_memory_mb": 30, "final_loss": 28}
    # Each point links to its commit (relative to the page's <base>, the repository's commit URL).
    assert f'<base href="https://github.com/{REPO}/commit/">' in page
    assert svgs["step_time_s"].count(f'<a href="{sha_of("dpo_smoke", 15)}">') == 1
    assert f"{sha_of('dpo_smoke', 15)[:12]} 2026-01-01 15:00  step time" in svgs["step_time_s"]  # the hover text
    assert svgs["step_time_s"].count('class="cp"') == 1 and 'class="cp"' not in svgs["tokens_per_s"]
    assert "+10.0%" in svgs["step_time_s"]


def test_the_page_fetches_nothing_and_escapes_what_the_store_wrote():
    evil = '"><script>alert(1)</script>'
    idx = history("cfg<img src=x onerror=alert(1)>", 5)
    idx.acks.append(ix.Ack(sha=sha_of(idx.config, 2), reason=evil, by="<b>mallory</b>", at="2026-01-01"))
    page = render_html([ConfigHistory(idx, [{"metric": "step_time_s", "commit": sha_of(idx.config, 2),
                                            "kind": evil, "change": 0.5}])], repo=REPO)
    assert "<script" not in page and "<img" not in page and "<b>mallory" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x" in page
    assert "default-src 'none'" in page  # Content-Security-Policy: no fetch of any kind
    tags = parsed_tags(page)
    assert {t for t, _ in tags} <= ALLOWED_TAGS
    assert not [a for _, attrs in tags for a, _ in attrs if a in ("src", "srcset", "onerror") or a.startswith("on")]
    # The ack shows: a marker per chart with the reason in its hover text, and a row in the table.
    assert page.count('class="ack"') == 4 and page.count("acknowledged by &lt;b&gt;mallory&lt;/b&gt;") == 2


def test_a_repository_that_is_not_owner_name_gets_no_links():
    page = render_html([ConfigHistory(history("dpo_smoke", 3))], repo='x/y"><script>')
    assert "<base" not in page and "<a href" not in page and page.count('class="pt"') == 12


def test_page_size_for_500_commits_by_6_configs():
    """The figure docs/history.md states (printed; run with -s to see it)."""
    histories = [ConfigHistory(history(f"config_{c}", 500, step_at=250, seed=c),
                               [{"metric": "step_time_s", "commit": sha_of(f"config_{c}", 250), "kind": "step",
                                 "change": 0.1}]) for c in range(6)]
    start = time.perf_counter()
    page = render_html(histories, repo=REPO)
    seconds = time.perf_counter() - start
    import gzip

    size, gz, points = len(page.encode()), len(gzip.compress(page.encode())), page.count('class="pt"')
    print(f"\ntrend page, 500 commits x 6 configs: {size / 1e6:.2f} MB ({gz / 1e6:.2f} MB gzipped), "
          f"{points} points, rendered in {seconds:.2f} s")
    assert points == 500 * 6 * 4
    assert size < 3_000_000, "the page grew past the size docs/history.md states"


# -- the command line ----------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "store", history("dpo_smoke", 24, step_at=12), history("sft_smoke", 10, seed=3))


def test_render_writes_the_page_and_a_png_per_config(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    out = tmp_path / "site"
    assert main(["history", "render", "--baseline", f"path:{store}", "-o", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert page.count('<section class="config"') == 2
    assert charts(page)["step_time_s"].count('class="pt"') == 24
    # The detector (canary_runner/history/detect.py) ran: the +10% step at commit 12 is marked.
    assert f"step at {sha_of('dpo_smoke', 12)[:12]}" in page
    for name in ("dpo_smoke.png", "sft_smoke.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --config picks configs; change points can come from `canary history analyze --json` instead.
    cps = tmp_path / "cps.json"
    cps.write_text('{"config": "sft_smoke", "change_points": [{"metric": "final_loss", "commit": "%s", '
                   '"kind": "drift", "change": -0.2}]}' % sha_of("sft_smoke", 5))
    assert main(["history", "render", "--baseline", f"path:{store}", "--config", "sft_smoke", "--no-png",
                 "--change-points", str(cps), "-o", str(out / "one")]) == 0
    page = (out / "one" / "index.html").read_text()
    assert page.count('<section class="config"') == 1 and f"drift at {sha_of('sft_smoke', 5)[:12]} -20.0%" in page


@pytest.mark.parametrize("argv, says", [
    (["not-a-sha", "--reason", "x"], "is not a commit sha"),
    ([sha_of("dpo_smoke", 3), "--reason", "   "], "the reason is empty"),
    ([sha_of("dpo_smoke", 3), "--reason", "x", "--metric", "loss"], "unknown metric 'loss'"),
    ([sha_of("dpo_smoke", 3), "--reason", "x", "--config", "nope"], "no history for config 'nope'"),
    (["abcdef1234567", "--reason", "x"], "has no entry in the history of dpo_smoke"),
])
def test_ack_refuses_bad_input_with_exit_2(store, capsys, argv, says):
    if "--config" not in argv:
        argv = [*argv, "--config", "dpo_smoke"]
    before = (store / "dpo_smoke" / HW / "index.json").read_bytes()
    assert main(["history", "ack", *argv, "--baseline", f"path:{store}"]) == 2
    assert says in capsys.readouterr().err
    assert (store / "dpo_smoke" / HW / "index.json").read_bytes() == before


def test_ack_is_written_to_the_index_resets_the_detector_and_shows_on_the_page(store, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    step = sha_of("dpo_smoke", 12)
    assert main(["history", "ack", step[:10], "--reason", "bigger batch: slower steps", "--by", "octocat",
                 "--metric", "step_time_s", "--baseline", f"path:{store}", "--config", "dpo_smoke"]) == 0
    idx = ix.parse((store / "dpo_smoke" / HW / "index.json").read_bytes(), "test")
    assert [(a.sha, a.reason, a.by, a.metric) for a in idx.acks] == [
        (step, "bigger batch: slower steps", "octocat", "step_time_s")]
    assert main(["history", "render", "--baseline", f"path:{store}", "--config", "dpo_smoke", "--no-png",
                 "-o", str(tmp_path / "site")]) == 0
    svgs = charts((tmp_path / "site" / "index.html").read_text())
    assert svgs["step_time_s"].count('class="ack"') == 1 and "bigger batch: slower steps" in svgs["step_time_s"]
    assert 'class="ack"' not in svgs["tokens_per_s"]  # acked for step time only
    assert f"step at {step[:12]}" not in svgs["step_time_s"]  # the detector restarts at an acked commit
    # Acking again for the same commit and metric replaces the ack rather than piling up.
    assert main(["history", "ack", step, "--reason", "again", "--metric", "step_time_s",
                 "--baseline", f"path:{store}", "--config", "dpo_smoke"]) == 0
    idx = ix.parse((store / "dpo_smoke" / HW / "index.json").read_bytes(), "test")
    assert [a.reason for a in idx.acks] == ["again"]
