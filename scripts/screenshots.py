#!/usr/bin/env python
"""Screenshots of the PR comment as GitHub shows it, for docs/images/ and the README.

    .venv/bin/python scripts/screenshots.py [--dark] [--out docs/images] [CASE ...]

Each case (tests/report/cases.py: pass, speed-fail, stability-fail, ppo-kl-fail, crash, no-baseline, and
matrix-6, six configs in one comment) is rendered by canary_runner.report, turned into HTML the way GitHub
does (tests/report/render/gfm.py: GFM, alert blocks, Mermaid drawn by the mermaid npm package), styled by
github-markdown-css at GitHub's ~880 px comment width, and captured by headless Chromium. Needs chromium,
chromedriver, an emoji font (Debian: fonts-noto-color-emoji; without it the verdict icons are empty boxes)
and `npm ci` in tests/report/render. Re-run it after a change to the templates.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from report.cases import case, decoded  # noqa: E402
from report.render import gfm  # noqa: E402
from report.test_render_github import RUN_URL, comment  # noqa: E402

CASES = ("pass", "speed-fail", "stability-fail", "ppo-kl-fail", "crash", "no-baseline", "matrix-6")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", default=list(CASES), help=f"default: all ({', '.join(CASES)})")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="where the PNGs go")
    parser.add_argument("--dark", action="store_true", help="also the dark theme (comment-<case>-dark.png)")
    args = parser.parse_args(argv)
    why = gfm.missing()
    if why:
        print(f"screenshots: cannot render: {why}", file=sys.stderr)
        return 2
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        print(f"screenshots: unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    if "emoji" not in subprocess.run(["fc-list"], capture_output=True, text=True).stdout.lower():
        print("screenshots: warning: no emoji font (apt-get install fonts-noto-color-emoji): icons will be boxes",
              file=sys.stderr)
    out = Path(args.out)
    themes = ("light", "dark") if args.dark else ("light",)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        driver = gfm.browser(Path(tmp) / "profile")
        try:
            for name in args.cases:
                text = comment(name)
                for theme in themes:
                    png = out / (f"comment-{name}.png" if theme == "light" else f"comment-{name}-dark.png")
                    errors = gfm.screenshot(driver, text, png, Path(tmp), theme)
                    failed |= bool(errors)
                    print(f"{png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}: {len(text):,} chars"
                          + (f"; Mermaid errors: {errors}" if errors else ""))
        finally:
            driver.quit()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
