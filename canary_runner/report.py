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


def fmt_num(x: Any, digits: int = 4) -> Md:
    """A number for a person: 0.6931, 21.52, 26,020, 1.23e-05; NaN, +Inf, -Inf; '—' for none."""
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
    if isinstance(x, int):
        return Md(f"{x:,}")
    ax = abs(x)
    if ax == 0:
        return Md("0")
    if ax >= 1000:
        return Md(f"{x:,.0f}")
    if ax < 1e-3:
        return Md(f"{x:.{max(1, digits - 1)}g}")
    text = f"{x:.{digits}g}"
    if "e" in text:  # .4g of 12345.6 would be 1.235e+04
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
    """A relative change as a signed percentage: +12.3%, -0.04%, +1,234%."""
    if not _is_num(x) or (isinstance(x, float) and not math.isfinite(x)):
        return fmt_num(x)
    p = x * 100
    if p == 0:
        return Md("±0%")
    if abs(p) >= 1000:
        text = f"{p:+,.0f}"
    elif abs(p) >= 0.1:
        text = f"{p:+.1f}"
    else:
        text = f"{p:+.2g}"
    return Md(f"{text}%")


def fmt_change(check: Mapping[str, Any]) -> Md:
    """A check's change with its confidence interval: `+12.3% [+8.1%, +16.5%]`."""
    change = check.get("change")
    if change is None:
        return Md("—")
    relative = check.get("change_kind", "relative") == "relative"
    one = fmt_pct if relative else (lambda v: fmt_signed(v, check.get("unit")))
    text = one(change)
    ci = check.get("ci")
    if ci and len(ci) == 2 and not all(v is None for v in ci):
        text = f"{text} [{one(ci[0])}, {one(ci[1])}]"
    return Md(text)


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
        "threshold": fmt_threshold,
        "status": fmt_status,
        "jsonv": fmt_json,
        "code": code_block,
        "link": link,
        "md": Md,  # the template's own markup, never data
    })
    env.globals.update({"STATUS_ICON": STATUS_ICON})
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


def _mermaid_num(v: float) -> str:
    text = f"{v:.5g}"
    if "e" in text:
        text = f"{v:.12f}".rstrip("0").rstrip(".") or "0"
    return text


def mermaid_chart(name: str, curve: Mapping, points: int = CHART_POINTS) -> dict | None:
    """A Mermaid `xychart-beta` of baseline (grey) vs current (red) for one metric, or None."""
    data = downsample(curve.get("baseline"), curve.get("current"), points)
    if not data["lines"]:
        return None
    label = _mermaid_label(name)
    order = [s for s in ("baseline", "current") if s in data["lines"]]
    palette = ", ".join({"baseline": "#9e9e9e", "current": "#d62728"}[s] for s in order)
    xs = ", ".join(f'"{s}"' for s in data["x"])
    body = [
        '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + palette + '"}}}}%%',
        "xychart-beta",
        f'    title "{label}"',
        f'    x-axis "step" [{xs}]',
        f'    y-axis "{label}"',
    ]
    body += [f"    line [{', '.join(_mermaid_num(v) for v in data['lines'][s])}]" for s in order]
    legend = " · ".join({"baseline": "grey: baseline", "current": "red: current"}[s] for s in order)
    notes = [f"{side} is NaN/Inf from step {step} (not drawn)" for side, step in sorted(data["nonfinite"].items())]
    return {"name": name, "code": code_block("\n".join(body), "mermaid"), "legend": legend, "notes": notes,
            "points": len(data["x"])}


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


def config_path(comparison: Mapping, override: str | None = None) -> str:
    """The file annotations point at: given, the run's config path, or the config's shipped name."""
    if override:
        return str(override)
    current = comparison.get("current") or {}
    for key in ("config_path",):
        if current.get(key):
            return str(current[key])
    return f"configs/{clean_text(current.get('config_name') or 'canary', 100)}.yaml"


def _decoded(comparison: Mapping) -> dict:
    """The comparison with non-finite strings decoded; curves are decoded where drawn (they are big)."""
    return {k: (v if k == "curves" else decode(v)) for k, v in comparison.items()}


def build_view(comparison: Mapping, *, run_url: str | None = None, artifact_url: str | None = None,
               report_path: str | None = None, plots: Iterable[tuple[str, str]] = ()) -> dict:
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
    charts = [ch for ch in (mermaid_chart(name, curves[name]) for name in chart_metrics(curves)) if ch]
    metrics = [{"name": k, **(v or {})} for k, v in sorted((c.get("metrics") or {}).items())]
    for row in metrics:
        row.setdefault("baseline", None)
        row.setdefault("current", None)
        b, cur = row["baseline"], row["current"]
        row["change"] = ((cur - b) / abs(b) if _finite(b) and _finite(cur) and b != 0 else None)
    env = c.get("environment") or {"same_hardware": True, "changes": []}
    return {
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
    }


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
        return str(sha)[:7] if isinstance(sha, str) and sha else str(side.get("spec") or "?")

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


def annotations(comparison: Mapping, path: str) -> list[dict]:
    """Check-run annotations: one per failed (failure) or warned (warning) check, on the config file.

    Annotations are plain text on GitHub, so they need no markdown escaping, only clean lines.
    """
    c = _decoded(comparison)
    notes = []
    for ch in _sort_checks(c.get("checks") or []):
        level = {"fail": "failure", "warn": "warning"}.get(ch.get("status"))
        if not level:
            continue
        parts = []
        if ch.get("change") is not None:
            parts.append(f"change {fmt_change(ch)}")
        elif ch.get("current") is not None:
            parts.append(f"value {fmt_unit(ch.get('current'), ch.get('unit'))}")
        if fmt_threshold(ch) != "—":
            parts.append(f"threshold {fmt_threshold(ch)}")
        if ch.get("step") is not None:
            parts.append(f"first at step {ch['step']}")
        detail = ", ".join(parts)
        message = clean_text(ch.get("reason") or "", ANNOTATION_MESSAGE_LIMIT)
        if detail:
            message = f"{message} ({detail})" if message else detail
        notes.append({
            "path": path, "start_line": 1, "end_line": 1, "annotation_level": level,
            "title": clean_text(f"{ch.get('status')}: {ch.get('title') or ch.get('id')}", ANNOTATION_TITLE_LIMIT),
            "message": message or clean_text(ch.get("title") or ch.get("id") or "check", ANNOTATION_MESSAGE_LIMIT),
        })
    current = c.get("current") or {}
    if current.get("status") not in (None, "completed") and not any(n["annotation_level"] == "failure" for n in notes):
        err = current.get("error") or {}
        what = clean_text(f"{err.get('type') or ''}: {err.get('message') or ''}".strip(": "), ANNOTATION_MESSAGE_LIMIT)
        notes.insert(0, {"path": path, "start_line": 1, "end_line": 1, "annotation_level": "failure",
                         "title": f"the canary run {current.get('status')}",
                         "message": what or f"the run {current.get('status')} before it finished"})
    return notes


def check_title(comparison: Mapping) -> str:
    c = _decoded(comparison)
    icon, word = VERDICT_TEXT.get(c["verdict"], ("", str(c["verdict"])))
    counts = c["counts"]
    name = clean_text(c["current"].get("config_name", ""), 100)
    status = c["current"].get("status")
    crash = f", run {status}" if status not in (None, "completed") else ""
    return clean_text(f"{icon} {name} {word}: {counts['fail']} failed, {counts['warn']} warned, "
                      f"{counts['pass']} passed{crash}", 250)


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
        "annotations": annotations(comparison, config_path(comparison, config_path_override)),
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
