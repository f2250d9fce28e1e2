"""The trend page in a real headless browser: Debian's Chromium, driven by selenium through chromedriver.

It loads with no console error (a CSP violation, a failed fetch or a script error would be one), and
each chart holds one point per value, counted in the DOM the browser built. Without Chromium the test
skips, saying why, unless CANARY_REQUIRE_BROWSER=1 (set by .ci/run, which installs it): then it fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

from canary_runner.history.index import Ack
from canary_runner.history.page import ConfigHistory, write_site

from .trend_data import history, sha_of

# Debian's packages; CANARY_CHROMIUM / CANARY_CHROMEDRIVER point elsewhere (another distribution's names).
CHROMIUM = os.environ.get("CANARY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CANARY_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.txt)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = _missing()
    if why:
        if os.environ.get("CANARY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CANARY_REQUIRE_BROWSER=1 but the browser cannot run: {why}")
        pytest.skip(f"no headless browser: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_loads_without_console_errors_and_every_chart_has_its_points(browser, tmp_path):
    histories = [
        ConfigHistory(history("dpo_smoke", 40, step_at=20, missing={"final_loss": {0, 1, 2}}),
                      [{"metric": "step_time_s", "commit": sha_of("dpo_smoke", 20), "kind": "step", "change": 0.1}]),
        ConfigHistory(history('sft"<b>smoke', 7, seed=2)),
    ]
    histories[0].index.acks.append(Ack(
        sha=sha_of("dpo_smoke", 20), reason="bigger batch </title><script>alert(1)</script>", by="octocat",
        metric="step_time_s"))
    write_site(histories, tmp_path, repo="octo-org/canary-app", pngs=False)
    browser.get((tmp_path / "index.html").as_uri())
    assert browser.title == "rlhf-canary trends"
    counts = browser.execute_script("""
        return Array.from(document.querySelectorAll('section.config')).map(s => ({
            config: s.dataset.config,
            charts: Object.fromEntries(Array.from(s.querySelectorAll('svg.chart')).map(
                svg => [svg.dataset.metric, svg.querySelectorAll('circle.pt').length]))}));""")
    assert counts == [
        {"config": "dpo_smoke", "charts": {"step_time_s": 40, "tokens_per_s": 40, "peak_memory_mb": 40, "final_loss": 37}},
        {"config": 'sft"<b>smoke', "charts": {"step_time_s": 7, "tokens_per_s": 7, "peak_memory_mb": 7, "final_loss": 7}},
    ]
    # The change point, the ack, the hover text and the links, as the browser parsed them.
    assert browser.execute_script("return document.querySelectorAll('line.cp.acked').length") == 1
    assert browser.execute_script("return document.querySelectorAll('script').length") == 0
    hover = browser.execute_script("return document.querySelector('svg.chart circle.pt title').textContent")
    assert hover.startswith(sha_of("dpo_smoke", 0)[:12]) and "step time" in hover
    href = browser.execute_script(  # an SVG link resolves against the document's <base>
        "return new URL(document.querySelector('svg.chart a').getAttribute('href'), document.baseURI).href")
    assert href == f"https://github.com/octo-org/canary-app/commit/{sha_of('dpo_smoke', 0)}"
    errors = [e for e in browser.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    assert errors == []


def test_a_console_error_is_seen(browser, tmp_path):
    """The console check can fail: a page whose script throws (blocked here by nothing) is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body><script>undefinedFunction()</script>"
                    "</body></html>")
    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors and "undefinedFunction" in errors[0]["message"]
