"""Reports people read: comparison.json rendered as a PR comment, a job summary, a check run's output
and a local markdown file, through Jinja templates (`templates/`).

Every string that comes from a comparison (config names, branch names, metric names, reasons, config
values, error messages) is untrusted: the Jinja environment escapes every `{{ expression }}` for
markdown unless a filter of this module already made it safe (`Md`). Escaped text cannot open HTML,
links, images, emphasis, code, tables cells or block markers, and cannot @mention anyone.

No HTTP, no TRL/torch here; matplotlib only in `plots.py`, imported when plots are asked for.
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from . import schemas
from .results import decode

SCHEMA_VERSION = 1
COMMENT_LIMIT = 65_536  # GitHub: issue/PR comment body
CHECK_LIMIT = 65_535  # GitHub: check-run output summary and text, each
SUMMARY_LIMIT_BYTES = 1_048_576  # GitHub: job step summary (bytes)
ANNOTATION_TITLE_LIMIT = 255
ANNOTATION_MESSAGE_LIMIT = 4_000  # GitHub allows 64 KB; a reviewer reads one line
FORMATS = ("comment", "summary", "check", "markdown")
CHART_POINTS = 50
CHARTS = 3  # curves drawn in a comment: the finding's first, then loss
TABLE_ROWS = 60  # rows per table before "... and N more" when a report must shrink

STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
STATUS_ICON = {"fail": "❌", "warn": "⚠️", "pass": "✅", "skip": "⏭️"}
VERDICT_TEXT = {
    "pass": ("✅", "passed"),
    "warn": ("⚠️", "passed with warnings"),
    "fail": ("❌", "failed"),
    "no-baseline": ("🆕", "ran without a baseline"),
}
CONCLUSION = {"pass": "success", "warn": "neutral", "fail": "failure", "no-baseline": "neutral"}
HEALTH_CATEGORIES = ("rl_health", "invariant")
# Curves drawn in the comment: the first of each list that the comparison has.
LOSS_CURVES = ("loss", "loss/policy_avg")
REWARD_CURVES = ("rewards/margins", "reward", "objective/rlhf_reward", "objective/scores", "rewards/chosen",
                 "accuracy", "rewards/accuracies", "mean_token_accuracy")
# Sections of the comment and the check output, least important first: the order they are left out
# in when a report must fit GitHub's limits.
TRIM_ORDER = ("metrics", "config_diff", "environment", "skipped", "charts", "passing_rows", "next_steps",
              "env_diff_rows", "evidence", "table_rows")
SECTION_NAMES = {
    "metrics": "the full metric list",
    "config_diff": "the config diff",
    "environment": "the environment details",
    "skipped": "the skipped checks",
    "charts": "the curves",
    "passing_rows": "the passing checks",
    "next_steps": "the suggested next steps",
    "env_diff_rows": "part of the environment diff",
    "evidence": "part of the diagnosis evidence",
    "table_rows": "rows past the first of each table",
}


class ReportInputError(Exception):
    """comparison.json is missing, corrupt, or of a schema this version cannot read."""


# ------------------------------------------------------------------------------------ escaping
class Md(str):
    """Markdown that is safe to emit as is: escaped text, or the report's own markup."""

    __slots__ = ()


_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_BREAKS = re.compile(r"[\s\u0085\u2028\u2029]+")
_ZWSP_CHAR = "\u200b"
_ZWSP = "&#8203;"  # zero-width space: breaks @mentions, #refs and e-mail autolinks, shows nothing
_ALWAYS = {"\\": "\\\\", "`": "\\`", "*": "\\*", "[": "\\[", "]": "\\]", "|": "\\|", "~": "\\~",
           "$": "\\$", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}
# What opens a block at the start of a line: a list item (-, +, 1., 2)), a heading, a thematic break
# or setext underline (---, ===). Only the first character of a value can be at a line start.
_LEADING = re.compile(r"^(?:[-+](?=[\s-]|$)|#{1,6}(?=\s|$)|=+$|\d{1,9}(?=[.)](?:\s|$)))")


def clean_text(value: Any, max_chars: int | None = None) -> str:
    """One line of plain text: control and bidi characters dropped, whitespace runs made one space,
    clipped to `max_chars` with an ellipsis."""
    text = _BREAKS.sub(" ", _INVISIBLE.sub("", str(value))).strip()
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - 1)].rstrip() + "…"
    return text


_SPECIAL = re.compile(
    r"[\\`*\[\]|~$&<>\"@]"  # always
    r"|(?<![^\W_])_|_(?![^\W_])"  # an underscore not inside a word (inside one it cannot open emphasis)
    r"|#(?=[^\W_])"  # #123: an issue reference
    r"|\.(?=[^\W\d_])"  # evil.com: a domain
    r"|:(?=//)"  # scheme://
    r"|!(?=\[)"  # ![ : an image
)


def _escape_one(m: re.Match) -> str:
    ch = m.group()
    if ch in _ALWAYS:
        return _ALWAYS[ch]
    if ch == "@":
        return "@" + _ZWSP
    if ch == "#":
        return "#" + _ZWSP
    if ch == ".":
        # A domain is never one text run; `www.` also gets an invisible break, for renderers that
        # join text runs before they look for links.
        i = m.start()
        return (_ZWSP + "\\.") if m.string[max(0, i - 3):i].lower() == "www" else "\\."
    if ch == ":":
        return _ZWSP + "\\:"  # scheme:// (the break survives joined text runs too)
    return "\\" + ch  # _ and !


def escape_md(value: Any, max_chars: int | None = None) -> Md:
    """`value` as inert inline markdown text, safe in a paragraph, a list item, a heading or a table cell.

    Newlines become spaces; HTML, links, images, autolinks, emphasis, code spans, strikethrough, math,
    table pipes, leading block markers (`#`, `-`, `1.`), @mentions and #references are neutralised.
    """
    if isinstance(value, Md):
        return value
    escaped = _SPECIAL.sub(_escape_one, clean_text(value, max_chars))
    m = _LEADING.match(escaped)
    if m:  # a block marker at the start of a line (list item, heading, ordered list)
        end = m.end()
        escaped = (escaped[:end] + "\\" + escaped[end:]) if escaped[0].isdigit() else "\\" + escaped
    return Md(escaped)


def escape_html(value: Any, max_chars: int | None = None) -> Md:
    """Text for inside raw HTML (`<summary>`): entity-escaped, no @mentions."""
    text = _html.escape(clean_text(value, max_chars), quote=True)
    return Md(text.replace("@", "@" + _ZWSP).replace("#", "#" + _ZWSP))


def _break_comments(text: str) -> str:
    """`<!--` and `-->` with an invisible break inside: text shown verbatim (a traceback) cannot carry
    an HTML comment, so no sticky-comment marker (`<!-- rlhf-canary:config=... -->`) but the report's own."""
    return text.replace("<!--", "<!-" + _ZWSP_CHAR + "-").replace("-->", "-" + _ZWSP_CHAR + "->")


def code_block(text: Any, lang: str = "", max_lines: int | None = None) -> Md:
    """A fenced code block whose fence no line of `text` can close; text is shown verbatim."""
    lines = _INVISIBLE.sub("", str(text)).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if max_lines is not None and len(lines) > max_lines:
        lines = [f"... ({len(lines) - max_lines} earlier lines left out)"] + lines[-max_lines:]
    body = _break_comments("\n".join(lines).rstrip("\n"))
    longest = max((len(m) for m in re.findall(r"`+|~+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    lang = re.sub(r"[^A-Za-z0-9_+-]", "", lang)
    return Md(f"{fence}{lang}\n{body}\n{fence}")


def traceback_block(text: Any, max_lines: int = 40) -> Md:
    """A traceback as a code block: its last `max_lines` lines, installed packages' paths cut to
    `…/site-packages/` (the runner's virtualenv says nothing to the reader)."""
    short = re.sub(r'File "[^"\n]*?/((?:site|dist)-packages)/', r'File "…/\1/', str(text))
    return code_block(short, "text", max_lines)


def safe_url(url: Any) -> str | None:
    """An http(s) URL fit for a markdown link destination, or None."""
    if not url:
        return None
    text = str(url).strip()
    if not re.match(r"^https?://[^\s/?#]+", text, re.IGNORECASE) or _INVISIBLE.search(text):
        return None
    # Percent-encode what could end the destination or the link early.
    return re.sub(r"[\s<>()\"'`\\\[\]|]", lambda m: "%{:02X}".format(ord(m.group())), text)


def link(label: Any, url: Any) -> Md:
    """`[label](url)` for a safe http(s) URL; just the escaped label otherwise."""
    target = safe_url(url)
    text = escape_md(label)
    return Md(f"[{text}]({target})") if target else text


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, Md) else escape_md(value)


# ------------------------------------------------------------------------------------ numbers
def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt_num(x: Any, digits: int = 3) -> Md:
    """A number for a person, `digits` significant: 0.693, 21.5, 26,020, 1.2e-5, 1e20; NaN, +Inf, -Inf;
    '—' for none. Every table uses the one default, so a column reads at one precision."""
    if x is None:
        return Md("—")
    if isinstance(x, str):
        x = decode(x)
    if isinstance(x, bool):
        return Md(str(x).lower())
    if not _is_num(x):
        return escape_md(x, 80)
    if isinstance(x, float) and math.isnan(x):
        return Md("NaN")
    if isinstance(x, float) and math.isinf(x):
        return Md("+Inf" if x > 0 else "-Inf")
    ax = abs(x)
    if ax == 0:
        return Md("0")
    if ax >= 1e6 or ax < 1e-3:  # scientific: 1e20, not 100,000,000,000,000,000,000
        mantissa, exponent = f"{x:.{max(0, digits - 1)}e}".split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return Md(f"{mantissa}e{int(exponent)}")
    if isinstance(x, int) or ax >= 1000:
        return Md(f"{x:,.0f}")
    text = f"{x:.{digits}g}"
    if "e" in text:  # .3g of 1234.5 would be 1.23e+03
        text = f"{x:,.0f}"
    return Md(text)


def fmt_duration(seconds: Any) -> Md:
    """123 µs, 21.5 ms, 3.21 s, 2 min 5 s, 1 h 2 min."""
    if not _is_num(seconds) or not math.isfinite(seconds):
        return fmt_num(seconds)
    s = float(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s == 0:
        return Md("0 s")
    if s < 1e-3:
        return Md(f"{sign}{s * 1e6:.3g} µs")
    if s < 1:
        return Md(f"{sign}{s * 1e3:.3g} ms")
    if s < 60:
        return Md(f"{sign}{s:.3g} s")
    if s < 3600:
        m, r = divmod(round(s), 60)
        return Md(f"{sign}{m} min {r} s" if r else f"{sign}{m} min")
    h, r = divmod(round(s / 60), 60)
    return Md(f"{sign}{h} h {r} min" if r else f"{sign}{h} h")


def fmt_unit(x: Any, unit: Any = None) -> Md:
    """A value with its unit: durations for seconds, thousands separators for rates."""
    if not _is_num(x) or (isinstance(x, float) and not math.isfinite(x)):
        return fmt_num(x)
    if unit in ("s", "seconds"):
        return fmt_duration(x)
    if unit == "ratio":
        return fmt_num(x)
    number = fmt_num(x)
    return Md(f"{number} {escape_md(unit, 20)}") if unit else number


def fmt_signed(x: Any, unit: Any = None) -> Md:
    """An absolute change with its sign: +0.012, -3.2 ms."""
    if not _is_num(x) or (isinstance(x, float) and not math.isfinite(x)):
        return fmt_num(x)
    sign = "+" if x > 0 else ("-" if x < 0 else "±")
    return Md(sign + fmt_unit(abs(x), unit))


def fmt_pct(x: Any) -> Md:
    """A relative change as a signed percentage: +361%, +12%, -1.2%, -0.04%, +1,234%."""
    if not _is_num(x) or (isinstance(x, float) and not math.isfinite(x)):
        return fmt_num(x)
    p = x * 100
    if p == 0:
        return Md("±0%")
    if abs(p) >= 9.95:
        text = f"{p:+,.0f}"
    elif abs(p) >= 0.095:
        text = f"{p:+.1f}"
    else:
        text = f"{p:+.1g}"
    return Md(f"{text}%")


# A relative change this large (x11) says little: the baseline was near zero, so the absolute change is shown.
ABSOLUTE_ABOVE = 10.0


def _relative(check: Mapping[str, Any]) -> bool:
    """Whether a check's change reads as a percentage (not from a near-zero baseline)."""
    if check.get("change_kind", "relative") != "relative":
        return False
    change, b, cur = check.get("change"), check.get("baseline"), check.get("current")
    if _finite(change) and abs(change) >= ABSOLUTE_ABOVE and _finite(b) and _finite(cur):
        return False
    return True


def _abs_change(check: Mapping[str, Any]) -> Any:
    """The change as an absolute difference (for a relative change from a near-zero baseline)."""
    if check.get("change_kind", "relative") != "relative":
        return check.get("change")
    b, cur = check.get("baseline"), check.get("current")
    return cur - b if _finite(b) and _finite(cur) else check.get("change")


def fmt_ci(check: Mapping[str, Any], label: bool = True) -> Md:
    """A check's confidence interval, the unit once: `95% CI +292…+405%`, `95% CI +11.8…+16.4 nats`; '' for none."""
    ci = check.get("ci")
    if not ci or len(ci) != 2 or not all(_finite(v) for v in ci):
        return Md("")
    relative = check.get("change_kind", "relative") == "relative"
    if relative and not _relative(check):  # the change is shown as an absolute difference: no % interval
        return Md("")
    level = check.get("confidence")
    name = (f"{level * 100:g}% CI " if _finite(level) and 0 < level < 1 else "CI ") if label else ""
    if relative:
        lo, hi = fmt_pct(ci[0]), fmt_pct(ci[1])
        lo = Md(lo[:-1]) if lo.endswith("%") else lo
    else:
        unit = check.get("unit")
        lo, hi = fmt_signed(ci[0], unit), fmt_signed(ci[1], unit)
        suffix = f" {escape_md(unit, 20)}" if unit and unit not in ("s", "seconds", "ratio") else ""
        if suffix and lo.endswith(suffix):
            lo = Md(lo[: -len(suffix)])
    return Md(f"{name}{lo}…{hi}")


def fmt_change(check: Mapping[str, Any]) -> Md:
    """A check's change with its interval: `+24% (CI +18…+29%)`, `+0.0005 (CI -0.004…+0.005)`; a relative
    change from a near-zero baseline as the absolute difference (`+14.2 nats`)."""
    change = check.get("change")
    if change is None:
        return Md("—")
    if not _relative(check):
        text = fmt_signed(_abs_change(check), check.get("unit"))
        if check.get("change_kind", "relative") == "relative":
            return text
    else:
        text = fmt_pct(change)
    ci = fmt_ci(check, label=False)
    return Md(f"{text} (CI {ci})") if ci else text


def fmt_threshold(check: Mapping[str, Any]) -> Md:
    """The limit a check holds its change (+10%, -0.15, ±20%) or its value (≤ 0, ≥ 0.5) to."""
    t = check.get("threshold")
    if t is None or check.get("threshold_kind") == "none":
        return Md("—")
    direction = check.get("direction")
    if check.get("threshold_kind", "relative") == "relative":
        if not _is_num(t) or not math.isfinite(t):
            return fmt_num(t)
        mag = fmt_pct(abs(t)).lstrip("+").replace(".0%", "%")
        return Md({"lower_is_better": "+", "higher_is_better": "-"}.get(direction, "±") + mag)
    if check.get("change") is not None and check.get("change_kind") == "absolute":
        # A limit on the absolute change against the baseline: +32 MB, -0.15, ±0.03.
        if not _is_num(t) or not math.isfinite(t):
            return fmt_num(t)
        sign = {"lower_is_better": "+", "higher_is_better": "-"}.get(direction, "±")
        return Md(sign + fmt_unit(abs(t), check.get("unit")))
    # A limit on the value itself: ≤ 0 NaN/Inf, ≥ 0.5 accuracy.
    value = fmt_unit(t, check.get("unit"))
    return Md({"lower_is_better": "≤ ", "higher_is_better": "≥ ", "band": "± "}.get(direction, "") + value)


def fmt_status(status: Any) -> Md:
    s = str(status)
    return Md(f"{STATUS_ICON[s]} {s}") if s in STATUS_ICON else escape_md(s, 20)


def fmt_json(value: Any, max_chars: int = 200) -> Md:
    """Any JSON value (a config or environment value) as escaped one-line text."""
    if value is None:
        return Md("—")
    if isinstance(value, str):
        return escape_md(value, max_chars)
    if _is_num(value):
        return fmt_num(value, 6)
    try:
        text = json.dumps(value, sort_keys=True, default=str, allow_nan=True)
    except (TypeError, ValueError):
        text = str(value)
    return escape_md(text, max_chars)


# ------------------------------------------------------------------------------------- marker
def marker(config_name: str) -> str:
    """The hidden marker that identifies the canary's PR comment for one config.

    One line, one per name: anything outside letters, digits and `._-` becomes `_`, so no name can
    close the HTML comment, span lines or forge another marker; a name that needed that also gets a
    digest of itself, so two names never share a marker (`a b` and `a_b` are different configs).
    The comment is matched by this exact first line (github.publish.sticky_marker is the same).
    """
    import hashlib

    name = str(config_name)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    if safe != name:
        safe += ".x" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"<!-- rlhf-canary:config={safe} -->"


# ---------------------------------------------------------------------------------- templates
def templates_dir() -> Path:
    """The templates shipped in the package (`canary_runner/templates`), or the repo's `templates/`."""
    packaged = Path(str(resources.files("canary_runner").joinpath("templates")))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


@cache
def environment():
    """The one Jinja environment: markdown escaping of every expression, the report's filters."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,  # markdown, not HTML: `_finalize` escapes instead
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update({
        "text": escape_md,
        "html": escape_html,
        "num": fmt_num,
        "unit": fmt_unit,
        "duration": fmt_duration,
        "pct": fmt_pct,
        "signed": fmt_signed,
        "change": fmt_change,
        "change_only": lambda check: fmt_change({**check, "ci": None}),
        "threshold": fmt_threshold,
        "status": fmt_status,
        "jsonv": fmt_json,
        "yaml": fmt_yaml,
        "sha": short_hash,
        "prose": prose,
        "finding": finding,
        "ci": fmt_ci,
        "code": code_block,
        "traceback": traceback_block,
        "link": link,
        "md": Md,  # the template's own markup, never data
    })
    env.globals.update({"STATUS_ICON": STATUS_ICON})
    env.tests.update({"improved": improved})
    return env


# ------------------------------------------------------------------------------------ loading
def comparison_schema() -> dict:
    return schemas.load("comparison")


def validate_comparison(raw: Any, where: str = "comparison.json") -> None:
    """Raise ReportInputError naming the first schema violation of an *encoded* comparison."""
    if not isinstance(raw, dict) or "schema_version" not in raw:
        raise ReportInputError(f"{where}: not a canary comparison.json (no schema_version). "
                               "Write one with `canary compare CURRENT BASELINE -o comparison.json`.")
    if raw["schema_version"] != SCHEMA_VERSION:
        raise ReportInputError(f"{where}: schema_version {raw['schema_version']!r} is not supported "
                               f"(this canary reads {SCHEMA_VERSION}). Upgrade rlhf-canary or re-run `canary compare`.")
    error = schemas.first_error("comparison", raw)
    if error is not None:
        raise ReportInputError(f"{where}: does not match the comparison schema at {error}. "
                               "Re-run `canary compare` to write it again.")


def load_comparison(path: str | Path) -> dict:
    """Load, validate and decode a comparison.json (or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "comparison.json"
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file. Pass the comparison.json written by `canary compare`.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: not valid JSON ({e}). The file is corrupt; re-run `canary compare`.") from None
    except OSError as e:
        raise ReportInputError(f"{path}: cannot be read ({e.strerror}).") from None
    validate_comparison(raw, str(path))
    return decode(raw)


# --------------------------------------------------------------------------------------- view
def _finite(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v)


def downsample(baseline: Mapping | None, current: Mapping | None, points: int = CHART_POINTS) -> dict:
    """Baseline and current curves on one step grid of at most `points` buckets (bucket means).

    A line stops at its first non-finite value (and says where); interior gaps are interpolated,
    a missing start takes the first value, a missing tail (a run that stopped) is left off.
    """
    series = {"baseline": baseline, "current": current}
    pairs = {}
    for side, curve in series.items():
        if curve:
            steps, values = curve.get("step") or [], decode(list(curve.get("value") or []))
            pairs[side] = [(s, v) for s, v in zip(steps, values) if v is not None]
    steps = sorted({s for ps in pairs.values() for s, _ in ps})
    if not steps:
        return {"x": [], "lines": {}, "nonfinite": {}}
    n = len(steps)
    k = min(points, n)
    bounds = [round(i * n / k) for i in range(k + 1)]
    buckets = [steps[bounds[i]:bounds[i + 1]] for i in range(k)]
    x = [b[-1] for b in buckets]
    lines, nonfinite = {}, {}
    for side, ps in pairs.items():
        by_step: dict[int, list] = {}
        for s, v in ps:
            by_step.setdefault(s, []).append(v)
        values: list[float | None] = []
        for bucket in buckets:
            vals = [v for s in bucket for v in by_step.get(s, [])]
            bad = next((s for s in bucket for v in by_step.get(s, []) if not _finite(v)), None)
            if bad is not None:
                nonfinite[side] = bad
                break
            values.append(sum(vals) / len(vals) if vals else None)
        last = max((i for i, v in enumerate(values) if v is not None), default=-1)
        values = values[: last + 1]
        if not values:
            continue
        first = next(v for v in values if v is not None)
        filled, prev_i = [], None
        for i, v in enumerate(values):
            if v is None:
                nxt_i = next(j for j in range(i + 1, len(values)) if values[j] is not None)
                if prev_i is None:
                    v = first
                else:
                    a, b = values[prev_i], values[nxt_i]
                    v = a + (b - a) * (i - prev_i) / (nxt_i - prev_i)
            else:
                prev_i = i
            filled.append(v)
        lines[side] = filled
    return {"x": x, "lines": lines, "nonfinite": nonfinite}


def _mermaid_label(text: Any, max_chars: int = 60) -> str:
    """Text for inside a Mermaid string: letters, digits and a few marks only."""
    kept = re.sub(r"[^A-Za-z0-9 _./:()+-]", "", clean_text(text, max_chars))
    return re.sub(r" {2,}", " ", kept).strip() or "metric"


def _mermaid_num(v: float, quantum: float | None = None) -> str:
    """`v` rounded to `quantum` (1% of the chart's span, what a chart a few hundred pixels high can
    show), else to 3 significant digits; never in exponent notation, which Mermaid does not read."""
    if quantum:
        decimals = max(0, -math.floor(math.log10(quantum)))
        text = f"{round(v / quantum) * quantum:.{decimals}f}"
    else:
        text = f"{v:.3g}"
        if "e" in text:
            text = f"{v:.12f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _quantum(values: list[float]) -> float | None:
    """A power of ten about 1% of the values' span (None for a flat line: 3 significant digits)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    span = max(finite, default=0.0) - min(finite, default=0.0)
    if span <= 0:
        return None
    return 10.0 ** math.floor(math.log10(span / 100))


_SI = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"))


def _si_scale(values: Iterable[float], seconds: bool) -> tuple[float, str]:
    """The power of 1000 that puts the largest value in [1, 1000), and its suffix for the axis title."""
    top = max((abs(v) for v in values if v is not None), default=0.0)
    if top == 0 or (not seconds and 0.01 <= top < 1000):  # plain numbers read fine as they are
        return 1.0, ""
    for factor, prefix in _SI:
        if top >= factor * 0.9995:
            break
    if seconds:
        return factor, f"{prefix}s" if prefix else "s"
    return factor, prefix


def mermaid_chart(name: str, curve: Mapping, points: int = CHART_POINTS) -> dict | None:
    """A Mermaid `xychart-beta` of baseline (grey) vs current (red) for one metric, or None.

    Every line spans the whole x-axis (Mermaid draws a shorter line to NaN coordinates): a side that
    stops early (a crash, a NaN) cuts the axis to where it stops, or is left out when it stops within
    the first steps; y values are scaled to an SI prefix named in the axis title; a current identical
    to its baseline is drawn once, in the baseline's grey, and said to be identical.
    """
    data = downsample(curve.get("baseline"), curve.get("current"), points)
    if not data["lines"]:
        return None
    lines = dict(data["lines"])
    notes = [f"{side} is NaN/Inf from step {step} (not drawn)" for side, step in sorted(data["nonfinite"].items())]
    x = data["x"]
    if len(lines) == 2 and len(lines["baseline"]) != len(lines["current"]):
        short = min(lines, key=lambda side: len(lines[side]))
        other = "baseline" if short == "current" else "current"
        n, longest = len(lines[short]), len(lines[other])
        if n >= 3 and n * 3 >= longest:  # cut the axis where the shorter line ends
            notes.append(f"{other} continues to step {x[longest - 1]}, shown up to step {x[n - 1]}")
        else:  # a line of a step or two: the other one alone, over its whole length
            if short not in data["nonfinite"]:
                notes.append(f"{short} stops at step {x[n - 1]} (not drawn)")
            del lines[short]
    notes = [n for n in notes if n]
    x = x[: min(len(v) for v in lines.values())]
    lines = {side: v[: len(x)] for side, v in lines.items()}
    identical = len(lines) == 2 and lines["baseline"] == lines["current"]
    if identical:
        del lines["current"]
    label = _mermaid_label(name)
    seconds = bool(re.search(r"(^|[/_])(step_)?time(_s)?$|_s$", name))
    factor, suffix = _si_scale((v for vs in lines.values() for v in vs), seconds)
    unit = f" ({suffix})" if suffix else ""
    order = [s for s in ("baseline", "current") if s in lines]
    palette = ", ".join({"baseline": "#9e9e9e", "current": "#d62728"}[s] for s in order)
    # Steps 1, 2, ..., n need no x-axis: Mermaid numbers the points 1..n itself (and its range syntax,
    # `1 --> n`, would hold an HTML comment's end). Other steps are listed.
    listed = x != list(range(1, len(x) + 1))
    body = [
        '%%{init: {"themeVariables":{"xyChart":{"plotColorPalette":"' + palette + '"}}}}%%',
        "xychart-beta",
        f'    title "{_mermaid_label(label + unit, 70)}"',
    ]
    if listed:
        body.append('    x-axis "step" [' + ", ".join(f'"{s}"' for s in x) + "]")
    quantum = _quantum([v / factor for s in order for v in lines[s]])
    body += [f"    line [{', '.join(_mermaid_num(v / factor, quantum) for v in lines[s])}]" for s in order]
    if identical:
        legend = "grey: current, identical to baseline"
    else:
        legend = " · ".join({"baseline": "grey: baseline", "current": "red: current"}[s] for s in order)
    if not listed:
        legend = f"steps 1–{len(x)}; {legend}"
    return {"name": name, "code": code_block("\n".join(body), "mermaid"), "legend": legend, "notes": notes,
            "points": len(x), "identical": identical}


def chart_metrics(curves: Mapping[str, Any]) -> list[str]:
    """The loss and reward curves the comment draws: the first of each kind that exists."""
    chosen = []
    for candidates in (LOSS_CURVES, REWARD_CURVES):
        name = next((c for c in candidates if c in curves), None)
        if name:
            chosen.append(name)
    return chosen


def _sort_checks(checks: Iterable[Mapping]) -> list[Mapping]:
    return sorted(checks, key=lambda c: STATUS_ORDER.get(c.get("status"), 9))


_CHECK_DEFAULTS = {"unit": None, "change_kind": "relative", "ci": None, "confidence": None, "p_value": None,
                   "n_baseline": None, "n_current": None, "threshold_kind": "relative", "step": None, "reason": ""}


def _check_view(check: Mapping) -> dict:
    return {**_CHECK_DEFAULTS, **{k: v for k, v in check.items() if v is not None or k not in _CHECK_DEFAULTS}}


def ci_label(checks: Iterable[Mapping]) -> str:
    """`95% CI` when every interval shown has that confidence, `CI` when they differ, '' with none."""
    levels = {ch.get("confidence") for ch in checks if ch.get("ci")}
    if not levels:
        return ""
    if len(levels) == 1:
        (level,) = levels
        if _finite(level) and 0 < level < 1:
            return f"{level * 100:g}% CI"
    return "CI"


def _side_view(side: Mapping | None) -> dict | None:
    if not side:
        return None
    view = dict(side)
    view.setdefault("error", None)
    if isinstance(view["error"], Mapping):  # the schema leaves every field of the error optional
        view["error"] = {"type": None, "message": None, "traceback": None, "step": None, **view["error"]}
    view.setdefault("git_sha", None)
    view.setdefault("steps_completed", None)
    view.setdefault("config_hash", None)
    view.setdefault("paths", [])
    view["crashed"] = side.get("status") != "completed"
    return view


def config_path(comparison: Mapping, override: str | None = None) -> str | None:
    """The config file in the user's repository that annotations point at: the one given, else the run's
    own `config_path` when it is relative to the repository; None when there is none (a shipped config,
    a path on the runner), and then annotations name no file."""
    candidates = [override, (comparison.get("current") or {}).get("config_path")]
    for path in candidates:
        if isinstance(path, str) and path.strip():
            text = path.strip().replace("\\", "/")
            if override is not None and path is override:
                return text
            if not text.startswith("/") and not re.match(r"^[A-Za-z]:/", text) and ".." not in text.split("/"):
                return text
    return None


def _decoded(comparison: Mapping) -> dict:
    """The comparison with non-finite strings decoded; curves are decoded where drawn (they are big)."""
    return {k: (v if k == "curves" else decode(v)) for k, v in comparison.items()}


def build_view(comparison: Mapping, *, run_url: str | None = None, artifact_url: str | None = None,
               report_path: str | None = None, plots: Iterable[tuple[str, str]] = (),
               chart_points: int = CHART_POINTS) -> dict:
    """The template context: the comparison sorted, grouped and pre-formatted where Python does it better."""
    c = _decoded(comparison)
    verdict = c["verdict"]
    icon, verdict_word = VERDICT_TEXT.get(verdict, ("❔", str(verdict)))
    current, baseline = _side_view(c["current"]), _side_view(c.get("baseline"))
    checks = [_check_view(ch) for ch in c.get("checks") or []]
    active = [ch for ch in checks if ch.get("status") != "skip"]
    regression = _sort_checks(ch for ch in active if ch.get("category") not in HEALTH_CATEGORIES + ("equivalence",))
    health = _sort_checks(ch for ch in active if ch.get("category") in HEALTH_CATEGORIES)
    equivalence = [_equivalence_row(ch) for ch in checks if ch.get("category") == "equivalence"]
    judged = [ch for ch in active if ch.get("category") == "equivalence"]
    curves = c.get("curves") or {}
    charts = [ch for ch in (mermaid_chart(name, curves[name], chart_points) for name in chart_order(curves, active))
              if ch]
    metrics = [{"name": k, **(v or {})} for k, v in sorted((c.get("metrics") or {}).items())]
    for row in metrics:
        row.setdefault("baseline", None)
        row.setdefault("current", None)
        b, cur = row["baseline"], row["current"]
        row["change"] = ((cur - b) / abs(b) if _finite(b) and _finite(cur) and b != 0 else None)
        # From a near-zero baseline a percentage says little: the absolute difference instead.
        row["change_text"] = (fmt_pct(row["change"]) if row["change"] is not None and abs(row["change"]) < ABSOLUTE_ABOVE
                              else fmt_signed(cur - b) if _finite(b) and _finite(cur) and cur != b else Md("—"))
    env = c.get("environment") or {"same_hardware": True, "changes": []}
    # The lines under the heading; an equivalence class says its own in the Equivalence table.
    flagged = [ch for ch in regression + health if ch.get("status") in ("fail", "warn")]
    flagged.sort(key=lambda ch: STATUS_ORDER.get(ch.get("status"), 9))
    check_ids = {ch.get("id") for ch in checks}
    view = {
        "c": c,
        "verdict": verdict,
        "icon": icon,
        "verdict_word": verdict_word,
        "no_baseline": baseline is None or verdict == "no-baseline",
        "current": current,
        "baseline": baseline,
        "counts": c["counts"],
        "total_checks": sum(c["counts"].values()),
        "failed": [ch for ch in regression + health + judged if ch.get("status") == "fail"],
        "warned": [ch for ch in regression + health + judged if ch.get("status") == "warn"],
        "equivalence": equivalence,
        "checked_alone": checked_alone(active),
        "regression": regression,
        "ci_label": ci_label(regression),
        "health": health,
        "skipped": [ch for ch in checks if ch.get("status") == "skip"],
        "diagnosis": sorted(({"checks": [], **d} for d in c.get("diagnosis") or []), key=lambda d: d.get("rank", 0)),
        "env": env,
        "env_changes": list(env.get("changes") or []),
        "charts": charts,
        "metrics": metrics,
        "config_diff": list(c.get("config_diff") or []),
        "thresholds_source": list(c.get("thresholds_source") or []),
        "run_url": safe_url(run_url),
        "artifact_url": safe_url(artifact_url),
        "report_path": report_path,
        "plots": list(plots),
        "marker": Md(marker(current["config_name"])),
        "ab": _ab_view(c.get("ab")),
        "selection": _selection_text(c.get("baseline_selection")),
        "flagged": flagged,
        "skipped_by_reason": _by_reason(ch for ch in checks if ch.get("status") == "skip"),
        "improvements": [ch for ch in regression + health if improved(ch)],
        "passing": [ch for ch in regression + health if ch.get("status") == "pass"],
        "causes": [_cause_view(d, check_ids, flagged, current["status"] if current["crashed"] else None) for d in sorted(
            ({"checks": [], "evidence": [], "next_steps": [], **d} for d in c.get("diagnosis") or []),
            key=lambda d: d.get("rank", 0))],
        "brief": False,
        # The config diff in one line when it is short (at most 4 settings); the run.config finding says it.
        "config_line": Md(" · ".join(f"{escape_md(d.get('path'), 120)}: {fmt_yaml(d.get('baseline'), 80)} → "
                                     f"{fmt_yaml(d.get('current'), 80)}" for d in c.get("config_diff") or [])
                          ) if 0 < len(c.get("config_diff") or []) <= 4 else Md(""),
        "config_flagged": any(ch.get("id") == "run.config" for ch in flagged),
    }
    view["headline"] = headline(view)
    return view


_PERCENT = re.compile(r"[+-]\d[\d,]*(?:\.\d+)?%")


def _by_reason(checks: Iterable[Mapping]) -> list[tuple[str, list[str]]]:
    """Skipped checks grouped by their reason, each reason once, in the order first seen."""
    groups: dict[str, list[str]] = {}
    for ch in checks:
        groups.setdefault(clean_text(ch.get("reason") or "no reason given"), []).append(ch.get("title") or ch.get("id"))
    return list(groups.items())


def _cause_view(cause: Mapping, check_ids: set, flagged: Iterable[Mapping], stopped: str | None = None) -> dict:
    """A likely cause without what the findings already say: evidence that repeats a check's reason
    (`rl.dpo.margins: late mean ...`), a flagged check's metric (`objective/kl 14.2 nats late ...`) or its
    change (`median step time +361% (...)`) is left out."""
    flagged = list(flagged)
    changes = [ch["change"] * 100 for ch in flagged if _finite(ch.get("change")) and _relative(ch)]
    metrics = {ch.get("metric") for ch in flagged if ch.get("metric")}

    def repeats(e: Any) -> bool:
        if not isinstance(e, str):
            return False
        if e.startswith("config changed:"):  # the config diff is shown once, on its own
            return True
        if stopped and e.startswith(f"{stopped}:"):  # the crash's error: the alert says it
            return True
        if e.split(":", 1)[0] in check_ids or e.split(" ", 1)[0] in metrics:  # a finding's own numbers
            return True
        shown = [float(p.rstrip("%").replace(",", "")) for p in _PERCENT.findall(e)]
        return any(abs(p - c) <= max(0.051, abs(c) * 0.001) for p in shown for c in changes)

    return {**cause, "evidence": [e for e in cause.get("evidence") or [] if not repeats(e)]}


def _selection_text(selection: Any) -> str:
    """The one line saying which stored record the baseline is (empty when the comparison does not say)."""
    text = selection.get("text") if isinstance(selection, Mapping) else None
    return clean_text(text, 300) if isinstance(text, str) else ""


def _equivalence_row(check: Mapping) -> dict:
    """One class's row, and for a class that parted, its two curves drawn together."""
    details = check.get("details") or {}
    row = {"name": check["id"].split(".", 1)[1], "status": check.get("status"), "reason": check.get("reason", ""),
           "variants": " = ".join(details.get("variants") or []), "step": check.get("step"), "chart": None}
    curves = details.get("curves")
    if curves and len(curves.get("variants") or []) == 2:
        a, b = curves["variants"]
        chart = mermaid_chart(curves.get("metric", "loss"), {"baseline": a, "current": b})
        if chart:
            chart["legend"] = f"grey: {clean_text(a.get('label'), 60)} · red: {clean_text(b.get('label'), 60)}"
            row["chart"] = chart
    return row


def checked_alone(active: Iterable[Mapping]) -> str:
    """What was judged from the run itself (no baseline needed), in a few words."""
    kinds = (("invariant", "invariant"), ("equivalence", "equivalence class"), ("stability", "stability check"),
             ("rl_health", "RL health check"), ("correctness", "correctness check"))
    counts = {label: sum(ch.get("category") == cat for ch in active) for cat, label in kinds}
    return ", ".join(f"{n} {label}{'es' if n != 1 and label.endswith('class') else 's' if n != 1 else ''}"
                     for label, n in counts.items() if n)


def _ab_view(ab: Any) -> dict | None:
    """Which mode decided, in one line's worth of fields: A/B pairs on this runner (canary ab)."""
    if not isinstance(ab, Mapping):
        return None

    def commit(side: Any) -> str:
        side = side if isinstance(side, Mapping) else {}
        sha = side.get("sha")
        return str(sha)[:12] if isinstance(sha, str) and sha else str(side.get("spec") or "?")

    def ratios(metric: str) -> str:
        """The head/base ratio of each pair, as decided (at most 20: max-pairs may be large)."""
        decided = ab.get("decisions")
        d = decided.get(metric) if isinstance(decided, Mapping) else None
        values = d.get("ratios") if isinstance(d, Mapping) else None
        return " ".join(f"{r:.3f}" for r in (values if isinstance(values, list) else [])[:20] if _finite(r))

    pairs = ab.get("pairs")
    return {"new": bool(ab.get("new_canary")), "pairs": pairs if isinstance(pairs, int) else 0,
            "base": commit(ab.get("base")), "head": commit(ab.get("head")), "stopped": str(ab.get("stopped") or ""),
            "ratios": ratios("step_time"), "memory_ratios": ratios("memory")}


# ----------------------------------------------------------------------------------- findings
_ABS_PATH = re.compile(r"(?<![\w.~/-])(?:/[\w.@+-]+){2,}/?")
_ARROW_VALUE = re.compile(r"(->|→)(\s*)(True|False|None)\b|\b(True|False|None)(\s*)(?=->|→)")
_YAML = {"True": "true", "False": "false", "None": "null"}


def _local_path(m: re.Match) -> str:
    """A runner-local absolute path, as the reader can find it: a file by its name, a folder as the run's output."""
    last = m.group().rstrip("/").rsplit("/", 1)[-1]
    return last if "." in last.strip(".") else "the run's output"


def prose(value: Any, max_chars: int | None = None) -> Md:
    """A sentence the canary wrote (a reason, evidence, a next step) for a reader: no runner-local absolute
    paths, no backticks (they would show as \\`), `->` as →, Python's True/False/None as YAML's, escaped."""
    return escape_md(prose_text(value), max_chars)


def prose_text(value: Any, max_chars: int | None = None) -> str:
    """`prose` as plain text (annotations, titles)."""
    text = _ABS_PATH.sub(_local_path, clean_text(value))
    text = text.replace("`", "")
    text = _ARROW_VALUE.sub(lambda m: (m.group(1) + m.group(2) + _YAML[m.group(3)]) if m.group(1)
                            else _YAML[m.group(4)] + m.group(5), text)
    return clean_text(text.replace(" -> ", " → "), max_chars)


def fmt_yaml(value: Any, max_chars: int = 200) -> Md:
    """A config value in YAML spelling: true, null, 1e20, [a, b], {k: v}; strings as they are."""
    if _is_num(value) and not isinstance(value, bool):
        return fmt_num(value, 6)
    return escape_md(value if isinstance(value, str) else _yaml_plain(value), max_chars)


def _yaml_plain(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_num(value):
        return str(fmt_num(value, 6))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_plain(v) for v in value) + "]"
    return str(value)


def short_hash(value: Any) -> Md:
    """A git SHA or `sha256:` digest cut to 12 hex digits."""
    if not isinstance(value, str) or not value:
        return fmt_json(value)
    m = re.fullmatch(r"(?:(\w+):)?([0-9a-fA-F]{13,})", value)
    if not m:
        return escape_md(value, 80)
    return escape_md((f"{m.group(1)}:" if m.group(1) else "") + m.group(2)[:12])


def short_title(check: Mapping) -> str:
    """A check's title inside a sentence: `Step time (median)` -> `step time`; `NaN / Inf`, `KL ...` kept."""
    title = re.sub(r"\s*\([^)]*\)\s*$", "", clean_text(check.get("title") or check.get("id") or "check", 80))
    first = title.split(" ", 1)[0]
    return (title[0].lower() + title[1:]) if first[1:] == first[1:].lower() else title


def _limit_value(check: Mapping) -> float | None:
    """The change a relative threshold allows, signed the way a regression goes."""
    t, direction = check.get("threshold"), check.get("direction")
    if not _finite(t) or check.get("threshold_kind", "relative") != "relative":
        return None
    return {"lower_is_better": abs(t), "higher_is_better": -abs(t)}.get(direction)


def inconclusive(check: Mapping) -> bool:
    """A change past its limit whose interval reaches back inside it."""
    limit, ci = _limit_value(check), check.get("ci")
    if limit is None or not ci or len(ci) != 2 or not all(_finite(v) for v in ci):
        return False
    return min(ci) < limit < max(ci)


def improved(check: Mapping) -> bool:
    """A passing check that moved the good way by more than its limit, the whole interval with it."""
    limit, change = _limit_value(check), check.get("change")
    if check.get("status") != "pass" or limit is None or not _finite(change) or limit == 0:
        return False
    ci = check.get("ci") if check.get("ci") and all(_finite(v) for v in check["ci"]) else [change, change]
    return (max(ci) < -limit) if limit > 0 else (min(ci) > -limit)


def _change_or_value(check: Mapping, with_ci: bool) -> str:
    """`step time +361% (95% CI +292…+405%)`, `KL to the reference +14.2 nats`, `NaN / Inf 290`."""
    name = escape_md(short_title(check))
    change = check.get("change")
    if change is not None and _is_num(change) and math.isfinite(change):
        text = fmt_pct(change) if _relative(check) else fmt_signed(_abs_change(check), check.get("unit"))
        ci = fmt_ci(check) if with_ci else ""
        return f"{name} {text}" + (f" ({ci})" if ci else "")
    if check.get("id") == "run.config":
        return f"{name} changed"
    step = f" from step {check['step']}" if check.get("step") is not None else ""
    if check.get("current") is not None:
        return f"{name} {fmt_unit(check.get('current'), check.get('unit'))}{step}"
    return f"{name} {'failed' if check.get('status') == 'fail' else 'warned'}{step}"


def _stop_text(side: Mapping, total: Any) -> str:
    """`interrupted at step 11/30 (SIGTERM)`, `crashed at step 12/30 (OutOfMemoryError)`."""
    steps = side.get("steps_completed")
    where = f" at step {steps}/{total}" if steps is not None and total else (f" at step {steps}" if steps is not None
                                                                             else "")
    err = side.get("error") or {}
    signal = re.search(r"\bSIG[A-Z]{2,6}\b", str(err.get("message") or ""))
    why = signal.group() if signal else clean_text(err.get("type") or "", 60)
    return f"{side.get('status')}{where}" + (f" ({why})" if why else "")


def _pass_numbers(checks: list[Mapping], curves: Mapping) -> list[str]:
    """A pass in one line: step time with its interval, memory, and whether the loss curve is identical."""
    parts = []
    by_id = {ch.get("id"): ch for ch in checks}
    step = by_id.get("perf.step_time")
    if step and step.get("change") is not None:
        parts.append(_change_or_value(step, True))
    memory = next((ch for ch in checks if ch.get("category") == "memory" and _finite(ch.get("change"))), None)
    if memory:
        parts.append("memory " + (fmt_pct(memory["change"]) if _relative(memory)
                                  else fmt_signed(_abs_change(memory), memory.get("unit"))))
    loss = by_id.get("correctness.loss_curve")
    if loss and loss.get("status") == "pass":
        parts.append("loss curve identical" if curve_identical(curves.get(loss.get("metric") or "loss"))
                     else f"loss curve within {fmt_threshold(loss)}")
    return parts


def curve_identical(curve: Any) -> bool:
    """Baseline and current hold the same values at the same steps (a run against itself, a deterministic rerun)."""
    if not isinstance(curve, Mapping) or not curve.get("baseline") or not curve.get("current"):
        return False
    b, c = curve["baseline"], curve["current"]
    return list(b.get("step") or []) == list(c.get("step") or []) and \
        decode(list(b.get("value") or [])) == decode(list(c.get("value") or [])) and bool(b.get("step"))


def headline(view: Mapping) -> Md:
    """The heading that names the finding: what failed and by how much, the crash, or a pass's key numbers."""
    cur, name = view["current"], escape_md(view["current"]["config_name"], 100)
    total = (view["baseline"] or {}).get("steps_completed")
    if cur["crashed"]:
        return Md(f"💥 {name}: {escape_md(_stop_text(cur, total))}")
    flagged = view["failed"] or view["warned"]
    flagged = [ch for ch in flagged if ch.get("id") != "run.status"]
    icon = view["icon"]
    if flagged:
        parts = [_change_or_value(ch, i == 0) for i, ch in enumerate(flagged[:3])]
        more = len(flagged) - 3
        return Md(f"{icon} {name}: " + ", ".join(parts) + (f" and {more} more" if more > 0 else ""))
    if view["no_baseline"]:
        what = view["checked_alone"] or "its own checks"
        return Md(f"{icon} {name}: no baseline yet; {escape_md(what)} passed on this run alone")
    parts = _pass_numbers(view["regression"] + view["health"], view["c"].get("curves") or {})
    return Md(f"{icon} {name}: " + (", ".join(parts) if parts else f"{view['counts']['pass']} checks passed"))


def finding(check: Mapping, markdown: bool = True) -> Md | str:
    """One line per flagged check, each number once: `❌ **Step time** 17.5 ms → 80.7 ms (**+361%**, 95% CI
    +292…+405%, limit +20%, n=25/25)`; the reason only where the numbers do not say it (no interval)."""
    b, cur, unit = check.get("baseline"), check.get("current"), check.get("unit")
    bold = (lambda t: f"**{t}**") if markdown else (lambda t: t)
    values = ""
    if cur is not None:
        values = f"{fmt_unit(b, unit)} → {fmt_unit(cur, unit)}" if b is not None else f"{fmt_unit(cur, unit)}"
    inside = []
    change = check.get("change")
    if change is not None and check.get("change_kind") == "relative" or _finite(change):
        text = fmt_pct(change) if _relative(check) else fmt_signed(_abs_change(check), unit)
        if text != "—":
            inside.append(bold(text))
    ci = fmt_ci(check)
    if ci:
        inside.append(ci)
    if fmt_threshold(check) != "—":
        inside.append(f"limit {fmt_threshold(check)}")
    if check.get("n_baseline") and check.get("n_current") and ci:
        inside.append(f"n={check['n_baseline']}/{check['n_current']}")
    if check.get("step") is not None:
        inside.append(f"from step {check['step']}")
    if inconclusive(check):
        inside.append("not conclusive")
    if markdown:
        title = escape_md(check.get("title") or check.get("id"), 120)
        icon = "🚀" if improved(check) else STATUS_ICON.get(check.get("status"), "")
        line = f"{icon} **{title}**"
    else:
        line = ""
    line = (line + " " + values).strip() if values else line
    if inside:
        line += f" ({', '.join(inside)})"
    if not ci and check.get("reason"):
        reason = prose(check["reason"], 300) if markdown else prose_text(check["reason"], 300)
        line = f"{line}: {reason}" if line else reason
    return Md(line) if markdown else line.strip()


def chart_order(curves: Mapping[str, Any], checks: Iterable[Mapping] = ()) -> list[str]:
    """The curves behind the failing checks first (KL and entropy for a KL failure, step time for a
    slowdown; the warning ones' when nothing failed), then loss: at most CHARTS of them."""
    checks = list(checks)
    loss = chart_metrics(curves)[:1]  # loss, or the reward where no loss is logged
    chosen: list[str] = []
    for status in ("fail", "warn"):
        for ch in checks:
            metric = ch.get("metric")
            if ch.get("status") == status and metric in curves and metric not in chosen + loss:
                chosen.append(metric)
        if chosen:
            break
    return chosen[: CHARTS - len(loss)] + loss


# ------------------------------------------------------------------------------------- render
def _render(template: str, view: dict, show: Mapping[str, bool], trimmed: list[str]) -> str:
    env = environment()
    text = env.get_template(template).render(**view, show=show, trimmed=trimmed, table_rows=(
        TABLE_ROWS if not show.get("table_rows", True) else None))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _fit(template: str, view: dict, limit: int, *, size=len, sections: Iterable[str] = TRIM_ORDER,
         keep_head: str = "") -> str:
    """Render `template`, leaving sections out (least important first) until it fits in `limit`;
    as a last resort cut at a line boundary and say so."""
    show = {s: True for s in TRIM_ORDER}
    trimmed: list[str] = []
    text = _render(template, view, show, trimmed)
    for section in sections:
        if size(text) <= limit:
            return text
        show[section] = False
        trimmed.append(SECTION_NAMES[section])
        text = _render(template, view, show, trimmed)
    if size(text) <= limit:
        return text
    where = view.get("report_path")
    note = ("\n\n… (cut to fit GitHub's limit; the full report is in "
            + (f"{escape_md(where, 200)})" if where else "the job summary and the run's artifacts)") + "\n")
    budget = limit - size(note) - 64  # room for closing an open code block or <details>
    cut = text
    while size(cut) > budget and len(cut) > len(keep_head):
        cut = cut[: max(len(keep_head), int(len(cut) * min(0.98, budget / max(1, size(cut)))))]
    if "\n" in cut[len(keep_head):]:
        cut = cut[: cut.rfind("\n")]
    return _close_open_blocks(cut) + note


_FENCE = re.compile(r"^(`{3,}|~{3,})")


def _close_open_blocks(text: str) -> str:
    """Close a code fence or <details> that a cut left open, so what follows is not swallowed."""
    fence, details = None, 0
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line[len(m.group(1)):].strip():
            fence = None
        elif fence is None:
            details += line.count("<details>") - line.count("</details>")
    closing = ("\n" + fence) if fence else ""
    return text + closing + "\n\n</details>" * max(0, details)


def render_comment(comparison: Mapping, *, run_url: str | None = None, artifact_url: str | None = None,
                   report_path: str | None = None, limit: int = COMMENT_LIMIT) -> str:
    """The sticky PR comment: starts with `marker(config_name)`, at most `limit` characters."""
    view = build_view(comparison, run_url=run_url, artifact_url=artifact_url, report_path=report_path)
    view["brief"] = True  # the first cause only, no metric list or environment table: those are in the report
    return _fit("comment.md.j2", view, limit, keep_head=view["marker"])


def render_summary(comparison: Mapping, *, run_url: str | None = None, artifact_url: str | None = None,
                   report_path: str | None = None, limit_bytes: int = SUMMARY_LIMIT_BYTES) -> str:
    """The job summary ($GITHUB_STEP_SUMMARY): the whole report, at most 1 MiB."""
    view = build_view(comparison, run_url=run_url, artifact_url=artifact_url, report_path=report_path)
    return _fit("summary.md.j2", view, limit_bytes, size=lambda t: len(t.encode("utf-8")))


def render_markdown(comparison: Mapping, *, run_url: str | None = None, artifact_url: str | None = None,
                    report_path: str | None = None, plots: Iterable[tuple[str, str]] = ()) -> str:
    """The full report for a file: everything, never trimmed; `plots` are (metric, relative PNG path)."""
    view = build_view(comparison, run_url=run_url, artifact_url=artifact_url, report_path=report_path,
                      plots=plots)
    return _render("report.md.j2", view, {s: True for s in TRIM_ORDER}, [])


def annotations(comparison: Mapping, path: str | None) -> list[dict]:
    """Check-run annotations: one line per failed (failure) or warned (warning) check, on the config file
    `path` (None or '': no file; the caller then drops them from a check run, which needs one).

    Annotations are plain text on GitHub, so they need no markdown escaping, only clean lines.
    """
    c = _decoded(comparison)
    notes = []
    for ch in _sort_checks(_check_view(ch) for ch in c.get("checks") or []):
        level = {"fail": "failure", "warn": "warning"}.get(ch.get("status"))
        if not level:
            continue
        message = clean_text(finding(ch, markdown=False), ANNOTATION_MESSAGE_LIMIT)
        notes.append({
            "path": path or "", "start_line": 1, "end_line": 1, "annotation_level": level,
            "title": clean_text(f"{ch.get('status')}: {ch.get('title') or ch.get('id')}", ANNOTATION_TITLE_LIMIT),
            "message": message or clean_text(ch.get("title") or ch.get("id") or "check", ANNOTATION_MESSAGE_LIMIT),
        })
    current = c.get("current") or {}
    if current.get("status") not in (None, "completed") and not any(n["annotation_level"] == "failure" for n in notes):
        err = current.get("error") or {}
        what = clean_text(f"{err.get('type') or ''}: {err.get('message') or ''}".strip(": "), ANNOTATION_MESSAGE_LIMIT)
        notes.insert(0, {"path": path or "", "start_line": 1, "end_line": 1, "annotation_level": "failure",
                         "title": f"the canary run {current.get('status')}",
                         "message": what or f"the run {current.get('status')} before it finished"})
    return notes


def plain(markdown: str) -> str:
    """Escaped inline markdown (our own escaping, no links or emphasis) back to the text it shows."""
    return _html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(markdown)))


def check_title(comparison: Mapping) -> str:
    """The check run's title: the comment's headline as plain text (the finding, the crash, a pass's numbers)."""
    return clean_text(plain(build_view(comparison)["headline"]), 250)


def render_check(comparison: Mapping, *, config_path_override: str | None = None, run_url: str | None = None,
                 artifact_url: str | None = None, report_path: str | None = None,
                 limit: int = CHECK_LIMIT) -> dict:
    """The check run's output: {conclusion, title, summary, text, annotations}; summary and text each
    at most `limit` characters. `conclusion` is for the check run itself, not for `output`."""
    view = build_view(comparison, run_url=run_url, artifact_url=artifact_url, report_path=report_path)
    summary = _fit("check_summary.md.j2", view, limit)
    text = _fit("check_text.md.j2", view, limit)
    return {
        "conclusion": CONCLUSION.get(view["verdict"], "neutral"),
        "title": check_title(comparison),
        "summary": summary,
        "text": text,
        # A check run's annotation needs a file: with no config file in the repository, none (the
        # summary holds every finding).
        "annotations": annotations(comparison, path) if (path := config_path(comparison, config_path_override)) else [],
    }


def render(comparison: Mapping, fmt: str, **context: Any) -> str:
    """Any format as text (the check output as JSON)."""
    if fmt == "comment":
        return render_comment(comparison, **context)
    if fmt == "summary":
        return render_summary(comparison, **context)
    if fmt == "markdown":
        return render_markdown(comparison, **context)
    if fmt == "check":
        return json.dumps(render_check(comparison, **context), indent=1, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
