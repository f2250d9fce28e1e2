"""A report as GitHub shows it: GFM to HTML (markdown-it-py: CommonMark, tables, strikethrough, raw HTML
such as <details>, GitHub's alert blocks), Mermaid blocks drawn by the mermaid npm package, styled by
github-markdown-css, in headless Chromium. Shared by tests/report/test_render_github.py and
scripts/screenshots.py. The npm packages: `npm ci` in this folder (package-lock.json pins them).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
MERMAID_JS = NODE_MODULES / "mermaid" / "dist" / "mermaid.min.js"
MARKDOWN_CSS = NODE_MODULES / "github-markdown-css"

CHROMIUM = os.environ.get("CANARY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CANARY_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1"]
CONTENT_WIDTH = 880  # GitHub's comment body width on a wide screen, about

_ALERT = re.compile(r"<blockquote>\n<p>\[!(NOTE|TIP|IMPORTANT|WARNING|CAUTION)\]\s*(.*?)</blockquote>",
                    re.IGNORECASE | re.DOTALL)
_MERMAID_BLOCK = re.compile(r'<pre><code class="language-mermaid">(.*?)</code></pre>', re.DOTALL)


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install {package})"
    if not MERMAID_JS.is_file() or not MARKDOWN_CSS.is_dir():
        return f"{NODE_MODULES} lacks mermaid or github-markdown-css (run `npm ci` in {HERE})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.txt)"
    return None


def to_html(markdown: str) -> str:
    """GFM as GitHub renders a comment (less its sanitiser, which only removes; and autolinks)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    out = md.render(markdown)

    def alert(m: re.Match) -> str:  # GitHub's `> [!CAUTION]` blocks
        kind = m.group(1).lower()
        return (f'<div class="markdown-alert markdown-alert-{kind}"><p class="markdown-alert-title">'
                f"{kind.capitalize()}</p>\n<p>{m.group(2)}</div>")

    return _ALERT.sub(alert, out)


def mermaid_blocks(page_html: str) -> list[str]:
    """The source of every Mermaid block in the HTML, as the renderer will read it."""
    return [html.unescape(m) for m in _MERMAID_BLOCK.findall(page_html)]


ALERT_CSS = """
.markdown-alert{padding:.5rem 1rem;margin-bottom:16px;border-left:.25em solid #d0d7de}
.markdown-alert-title{font-weight:600;margin-bottom:4px}
.markdown-alert-caution{border-left-color:#cf222e}.markdown-alert-caution .markdown-alert-title{color:#d1242f}
.markdown-alert-warning{border-left-color:#9a6700}.markdown-alert-warning .markdown-alert-title{color:#9a6700}
.markdown-alert-note{border-left-color:#0969da}.markdown-alert-note .markdown-alert-title{color:#0969da}
"""


def page(body_html: str, theme: str = "light") -> str:
    """A self-contained page (files from node_modules by file:// URL) showing `body_html` as a comment."""
    css = (MARKDOWN_CSS / f"github-markdown-{theme}.css").as_uri()
    bg = "#ffffff" if theme == "light" else "#0d1117"
    # Mermaid blocks become <pre class="mermaid"> (what GitHub draws), the rest stays as rendered.
    body = _MERMAID_BLOCK.sub(lambda m: f'<pre class="mermaid">{m.group(1)}</pre>', body_html)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>comment</title>
<link rel="stylesheet" href="{css}">
<style>body{{margin:0;background:{bg}}} .markdown-body{{box-sizing:border-box;width:{CONTENT_WIDTH + 32}px;
padding:16px}} pre.mermaid{{background:transparent}} {ALERT_CSS}</style>
<script src="{MERMAID_JS.as_uri()}"></script>
</head><body><article class="markdown-body">
{body}
</article>
<script>
window.renderDone = false; window.renderErrors = [];
mermaid.initialize({{startOnLoad: false, theme: {json.dumps("dark" if theme == "dark" else "default")}}});
mermaid.run({{querySelector: "pre.mermaid", suppressErrors: true,
  postRenderCallback: () => {{}}}}).catch(e => window.renderErrors.push(String(e))).finally(() => {{
  window.renderDone = true; }});
</script>
</body></html>
"""


def browser(profile_dir: Path):
    """A headless Chromium (selenium + chromedriver), the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={CONTENT_WIDTH + 32},800")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


PARSE_SCRIPT = """
const codes = arguments[0], done = arguments[arguments.length - 1];
mermaid.initialize({startOnLoad: false});
(async () => {
  const errors = [];
  for (let i = 0; i < codes.length; i++) {
    try { await mermaid.parse(codes[i]); }
    catch (e) { errors.push(i + ": parse: " + String(e && e.message || e)); continue; }
    try { await mermaid.render("check" + i, codes[i]); }
    catch (e) { errors.push(i + ": render: " + String(e && e.message || e)); }
  }
  return errors;
})().then(done, e => done(["script: " + String(e)]));
"""


def blank_page(directory: Path) -> Path:
    """A local page that loads Mermaid, for parsing blocks in the browser."""
    path = directory / "mermaid.html"
    path.write_text(f'<!doctype html><html><head><meta charset="utf-8"><script src="{MERMAID_JS.as_uri()}">'
                    "</script></head><body></body></html>", encoding="utf-8")
    return path


def mermaid_errors(driver, codes: list[str]) -> list[str]:
    """Mermaid's parse (and render) errors for each block, in a page that loaded mermaid.min.js."""
    return driver.execute_async_script(PARSE_SCRIPT, codes)


def screenshot(driver, markdown: str, out: Path, directory: Path, theme: str = "light") -> list[str]:
    """`markdown` as a GitHub comment, to a PNG at `out`; returns Mermaid's render errors (none expected)."""
    import time

    path = directory / f"{out.stem}-{theme}.html"
    path.write_text(page(to_html(markdown), theme), encoding="utf-8")
    driver.get(path.as_uri())
    deadline = time.monotonic() + 60
    while not driver.execute_script("return window.renderDone") and time.monotonic() < deadline:
        time.sleep(0.1)
    errors = driver.execute_script("return window.renderErrors")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight")  # the window's own bars
    driver.set_window_size(CONTENT_WIDTH + 32, int(height) + int(chrome or 0))
    time.sleep(0.2)
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    driver.set_window_size(CONTENT_WIDTH + 32, 800)
    return list(errors or [])
