"""One report for a matrix of configs: a table with a row per config (verdict, top finding, its change),
then each config's own report (report.py's comment, summary or check body) in a collapsed section.

One sticky marker names the whole matrix, so a six-config matrix posts one comment, not six. GitHub's
limits are met by trimming the per-config bodies (report.py's own section trimming, the largest bodies
first), never the table: the table is the answer.

No HTTP here, like report.py; the action finds the comparisons and their artifact links.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import report

MATRIX_VERDICT_ORDER = {"fail": 0, "warn": 1, "no-baseline": 2, "pass": 3}
# Below this many characters a config's body says too little to be worth its section: the table row stays,
# the section says where the full report is.
MIN_BODY_CHARS = 1_500
# Room kept for what the estimate of the frame cannot know exactly (wrapping lines, notes).
SLACK_CHARS = 512
ANNOTATIONS_PER_CONFIG = 10  # GitHub shows 50 per request; the matrix check shares them out


@dataclass
class MatrixEntry:
    """One config of the matrix: its comparison, or why it could not be read (named, left out)."""

    source: str  # where it came from (an artifact name or a path), for the reader
    comparison: Mapping[str, Any] | None = None
    error: str | None = None
    artifact_url: str | None = None  # this config's artifact (its report.md and plots)

    @property
    def config_name(self) -> str:
        return str((self.comparison or {}).get("current", {}).get("config_name") or self.source)


def matrix_marker(name: str | None = None) -> str:
    """The hidden first line of the matrix's sticky comment: one per matrix name (the check name when
    the workflow sets one), never equal to any config's marker."""
    if not name:
        return "<!-- rlhf-canary:matrix -->"
    return report.marker(name).replace("rlhf-canary:config=", "rlhf-canary:matrix=", 1)


def matrix_verdict(entries: Iterable[MatrixEntry]) -> str:
    """The worst verdict of the configs read; a matrix with an unreadable comparison warns at least."""
    verdicts = [e.comparison["verdict"] for e in entries if e.comparison is not None]
    bad = any(e.comparison is None for e in entries)
    worst = min(verdicts, key=lambda v: MATRIX_VERDICT_ORDER.get(v, 0), default="warn")
    if bad and MATRIX_VERDICT_ORDER.get(worst, 0) > MATRIX_VERDICT_ORDER["warn"]:
        return "warn"
    return worst


# ------------------------------------------------------------------------------------- the rows
def _top_check(comparison: Mapping) -> Mapping | None:
    """The check the row names: the first failing one, else the first warning (report order: the
    regressions, then RL health, then equivalence), never the run-status check a crash already says."""
    checks = [c for c in comparison.get("checks") or [] if c.get("id") != "run.status"]
    rank = {"fail": 0, "warn": 1}
    health = report.HEALTH_CATEGORIES

    def order(c: Mapping) -> tuple:
        cat = c.get("category")
        return (rank[c["status"]], 1 if cat in health else 2 if cat == "equivalence" else 0)

    flagged = sorted((c for c in checks if c.get("status") in rank), key=order)
    return flagged[0] if flagged else None


def _value_text(check: Mapping) -> report.Md:
    """The change alone (its interval is in the config's section: a table cell that wraps reads slowly)."""
    view = {**report._check_view(check), "ci": None}
    if view.get("change") is not None:
        return report.fmt_change(view)
    if view.get("current") is not None:
        return report.Md(f"{report.fmt_unit(view['current'], view.get('unit'))} "
                         f"(limit {report.fmt_threshold(view)})")
    return report.Md("—")


def _crash_finding(comparison: Mapping) -> report.Md | None:
    """How the run stopped, as the config's own headline says it (`interrupted at step 11/30 (SIGTERM)`)."""
    head = report.build_view(comparison).get("headline")
    name = report.escape_md((comparison.get("current") or {}).get("config_name"), 100)
    if not head or f" {name}: " not in str(head):
        return None
    return report.Md(str(head).split(f" {name}: ", 1)[1])


def _crash_text(current: Mapping) -> str | None:
    status = current.get("status")
    if status in (None, "completed"):
        return None
    steps, planned = current.get("steps_completed"), current.get("steps_planned")
    where = f" at step {steps}" + (f"/{planned}" if planned else "") if steps is not None else ""
    return f"run {status}{where}"


def _row(entry: MatrixEntry) -> dict:
    if entry.comparison is None:
        return {"icon": "❔", "config": entry.source, "finding": f"not read: {entry.error}", "change": report.Md("—"),
                "verdict": "unread"}
    c = report._decoded(entry.comparison)
    verdict = c["verdict"]
    icon = report.VERDICT_TEXT.get(verdict, ("❔", ""))[0]
    current = c.get("current") or {}
    top, crash = _top_check(c), _crash_text(current)
    if crash:  # the crash is the finding: numbers of a run cut short say little
        icon = "💥"
        finding, change = _crash_finding(entry.comparison) or crash, report.Md("—")
    elif top is not None:
        finding = str(top.get("title") or top.get("id"))
        change = _value_text(top)
    elif verdict == "no-baseline":
        finding, change = "no baseline: judged from the run alone", report.Md("—")
    else:
        counts = c.get("counts") or {}
        finding = f"{counts.get('pass', 0)} checks passed"
        step = next((ch for ch in c.get("checks") or [] if ch.get("id") == "perf.step_time"
                     and ch.get("change") is not None), None)
        change = report.Md(f"step time {_value_text(step)}") if step else report.Md("—")
    return {"icon": icon, "config": report.clean_text(current.get("config_name") or entry.source, 100),
            "finding": finding, "change": change, "verdict": verdict}


def _sorted(entries: Sequence[MatrixEntry]) -> list[MatrixEntry]:
    """Worst first (unreadable ones last), the matrix's own order within a verdict."""
    def key(item: tuple[int, MatrixEntry]) -> tuple:
        i, e = item
        v = e.comparison["verdict"] if e.comparison is not None else None
        return (MATRIX_VERDICT_ORDER.get(v, 9), i)

    return [e for _, e in sorted(enumerate(entries), key=key)]


# ---------------------------------------------------------------------------------- the bodies
def _strip_marker(body: str, comparison: Mapping) -> str:
    """A config's comment without its own sticky marker: only the matrix's marker may lead."""
    own = report.marker((comparison.get("current") or {}).get("config_name", ""))
    first, _, rest = body.partition("\n")
    return rest.lstrip("\n") if first == own else body


def _comment_body(entry: MatrixEntry, limit: int) -> str:
    body = report.render_comment(entry.comparison, artifact_url=entry.artifact_url, limit=limit)
    return _strip_marker(body, entry.comparison)


def _summary_body(entry: MatrixEntry, limit: int) -> str:
    return report.render_summary(entry.comparison, artifact_url=entry.artifact_url, limit_bytes=limit)


def _markdown_body(entry: MatrixEntry, limit: int) -> str:
    return report.render_markdown(entry.comparison, artifact_url=entry.artifact_url)


def _check_body(entry: MatrixEntry, limit: int) -> str:
    return report.render_check(entry.comparison, artifact_url=entry.artifact_url, limit=limit)["summary"]


def _fit_bodies(readable: Sequence[MatrixEntry], render_body: Callable[[MatrixEntry, int], str], budget: int,
                size: Callable[[str], int], cap: int) -> list[str | None]:
    """Each config's body, trimmed so that all fit in `budget`: the small ones whole, the large ones
    sharing what is left equally (water filling); None where even that is too little to say anything."""
    bodies = [render_body(e, cap) for e in readable]
    if sum(map(size, bodies)) <= budget:
        return list(bodies)
    for _ in range(6):  # report.py's trimming lands under the share asked for; a few passes settle it
        lengths = [size(b) if b is not None else 0 for b in bodies]
        share = _water_level(lengths, budget)
        if share < MIN_BODY_CHARS:
            # Not all can be said: the worst configs (first) keep a body of the minimum, the rest none.
            fit = max(0, budget // MIN_BODY_CHARS)
            return [render_body(e, MIN_BODY_CHARS) if i < fit else None for i, e in enumerate(readable)]
        bodies = [b if b is not None and size(b) <= share else render_body(e, share)
                  for e, b in zip(readable, bodies)]
        if sum(size(b) for b in bodies if b is not None) <= budget:
            return bodies
        budget = int(budget * 0.97)
    return bodies


def _water_level(lengths: Sequence[int], budget: int) -> int:
    """The largest cap c with sum(min(length, c)) <= budget."""
    remaining, left = budget, len(lengths)
    for n in sorted(lengths):
        if n * left > remaining:
            return remaining // max(1, left)
        remaining -= n
        left -= 1
    return max(lengths, default=budget)


# ------------------------------------------------------------------------------------ rendering
def _links(run_url: str | None, artifacts_url: str | None) -> dict:
    return {"run_url": report.safe_url(run_url), "artifacts_url": report.safe_url(artifacts_url)}


def _render_frame(template: str, entries: Sequence[MatrixEntry], bodies: Mapping[int, str | None],
                  context: Mapping[str, Any]) -> str:
    env = report.environment()
    rows = [_row(e) for e in entries]
    sections = []
    for i, e in enumerate(entries):
        if e.comparison is None:
            continue
        row = rows[i]
        body = bodies.get(i)
        sections.append({"icon": row["icon"], "config": row["config"], "verdict": row["verdict"],
                         "body": report.Md(body) if body is not None else None,
                         "artifact_url": report.safe_url(e.artifact_url)})
    readable = [e for e in entries if e.comparison is not None]
    counts = {v: sum(e.comparison["verdict"] == v for e in readable) for v in MATRIX_VERDICT_ORDER}
    crashed = sum(_crash_text(e.comparison.get("current") or {}) is not None for e in readable)
    text = env.get_template(template).render(
        rows=rows, sections=sections, counts=counts, crashed=crashed, total=len(entries),
        unread=[e for e in entries if e.comparison is None], **context)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _render(entries: Sequence[MatrixEntry], render_body: Callable[[MatrixEntry, int], str], *, limit: float,
            size: Callable[[str], int] = len, per_body_cap: int, **context: Any) -> str:
    ordered = _sorted(entries)
    verdict = matrix_verdict(ordered)
    icon, word = report.VERDICT_TEXT.get(verdict, ("❔", str(verdict)))
    ctx = {"verdict": verdict, "icon": icon, "verdict_word": word, **context}
    readable_at = [i for i, e in enumerate(ordered) if e.comparison is not None]
    placeholder = {i: "" for i in readable_at}
    frame = _render_frame("matrix.md.j2", ordered, placeholder, ctx)
    if math.isinf(limit):
        budget, cap = 1 << 62, per_body_cap
    else:
        budget = int(limit) - size(frame) - SLACK_CHARS
        cap = min(per_body_cap, max(MIN_BODY_CHARS, budget))
    bodies = _fit_bodies([ordered[i] for i in readable_at], render_body, max(0, budget), size, cap)
    text = _render_frame("matrix.md.j2", ordered, dict(zip(readable_at, bodies)), ctx)
    if not math.isinf(limit) and size(text) > limit:  # never expected: the frame alone is over the limit
        text = text[: int(limit) - 200] + "\n\n… (cut to fit GitHub's limit; the full reports are in the artifacts)\n"
    return text


def render_matrix(entries: Sequence[MatrixEntry], fmt: str = "comment", *, run_url: str | None = None,
                  artifacts_url: str | None = None, name: str | None = None) -> str:
    """The matrix as one document (the check output as JSON, as report.render does)."""
    if fmt == "check":
        return json.dumps(render_matrix_check(entries, run_url=run_url, artifacts_url=artifacts_url),
                          indent=1, ensure_ascii=False) + "\n"
    if fmt not in report.FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(report.FORMATS)}")
    context = {"marker": report.Md(matrix_marker(name)) if fmt == "comment" else None, "fmt": fmt,
               **_links(run_url, artifacts_url)}
    if fmt == "comment":
        return _render(entries, _comment_body, limit=report.COMMENT_LIMIT, per_body_cap=report.COMMENT_LIMIT,
                       **context)
    if fmt == "summary":
        def nbytes(t: str) -> int:
            return len(t.encode("utf-8"))

        return _render(entries, _summary_body, limit=report.SUMMARY_LIMIT_BYTES, size=nbytes,
                       per_body_cap=report.SUMMARY_LIMIT_BYTES, **context)
    return _render(entries, _markdown_body, limit=math.inf, per_body_cap=0, **context)


def matrix_title(entries: Sequence[MatrixEntry]) -> str:
    verdict = matrix_verdict(entries)
    icon, _ = report.VERDICT_TEXT.get(verdict, ("❔", ""))
    readable = [e for e in entries if e.comparison is not None]
    n_fail = sum(e.comparison["verdict"] == "fail" for e in readable)
    n_warn = sum(e.comparison["verdict"] == "warn" for e in readable)
    unread = len(entries) - len(readable)
    parts = [f"{n_fail} of {len(entries)} configs failed"]
    if n_warn:
        parts.append(f"{n_warn} warned")
    if unread:
        parts.append(f"{unread} not read")
    return report.clean_text(f"{icon} rlhf-canary matrix: {', '.join(parts)}", 250)


def render_matrix_check(entries: Sequence[MatrixEntry], *, run_url: str | None = None,
                        artifacts_url: str | None = None) -> dict:
    """The matrix's check run output: the table and each config's check summary in `summary`, each
    config's failures as annotations (titled with the config), the worst verdict as conclusion."""
    context = {"marker": None, "fmt": "check", **_links(run_url, artifacts_url)}
    summary = _render(entries, _check_body, limit=report.CHECK_LIMIT, per_body_cap=report.CHECK_LIMIT, **context)
    notes = []
    for e in _sorted(entries):
        if e.comparison is None:
            continue
        name = report.clean_text(e.config_name, 100)
        for n in report.annotations(e.comparison, report.config_path(e.comparison))[:ANNOTATIONS_PER_CONFIG]:
            notes.append({**n, "title": report.clean_text(f"{name}: {n['title']}", report.ANNOTATION_TITLE_LIMIT)})
    verdict = matrix_verdict(entries)
    return {"conclusion": report.CONCLUSION.get(verdict, "neutral"), "title": matrix_title(entries),
            "summary": summary, "text": None, "annotations": notes[:50]}
