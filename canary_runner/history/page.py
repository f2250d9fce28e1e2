"""The trend page: one static, self-contained HTML file with a chart per config and metric.

Charts are SVG written here, so the page needs no script, font or stylesheet from anywhere: hover
text is SVG's own `<title>`, each point links to its commit on GitHub, and a Content-Security-Policy
forbids every fetch (`default-src 'none'`). Everything drawn from an index (config names, shas,
ack reasons and logins) comes from a branch anyone with push access wrote: it is escaped, and shas
are checked to be hex before they go into a link.

A PNG per config (matplotlib) goes beside the page, for a markdown job summary.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .index import METRICS, SHA, Ack, Index

REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
LABELS = {"step_time_s": ("step time", "s"), "tokens_per_s": ("tokens/s", ""),
          "peak_memory_mb": ("peak memory", "MB"), "final_loss": ("final loss", "")}
# Chart geometry (SVG user units; the SVG scales to the page width).
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 720, 200, 64, 12, 14, 26


@dataclass
class ConfigHistory:
    """What one config's section shows: its index and the change points found in it."""
    index: Index
    change_points: list[dict] = field(default_factory=list)  # {"metric", "commit", "change", "kind", ...}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def commit_base(repo: str | None) -> str | None:
    """The repository's commit URL prefix, or None when `repo` is not a plain owner/name."""
    return f"https://github.com/{repo}/commit/" if repo and REPO.match(repo) else None


def commit_url(repo: str | None, sha: str) -> str | None:
    base = commit_base(repo)
    return base + sha if base and SHA.match(sha) else None


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _scale(lo: float, hi: float, a: float, b: float):
    if hi == lo:
        return lambda v: (a + b) / 2
    return lambda v: a + (v - lo) / (hi - lo) * (b - a)


def _ack_for(acks: list[Ack], sha: str, metric: str) -> Ack | None:
    return next((a for a in acks if (sha.startswith(a.sha) or a.sha.startswith(sha)) and a.metric in (None, metric)),
                None)


def chart_svg(hist: ConfigHistory, metric: str, repo: str | None) -> str:
    """One metric's chart: a line, a linked point per commit, change points and acks marked."""
    index = hist.index
    series = index.series(metric)
    label, unit = LABELS.get(metric, (metric, ""))
    title = f"{label} ({unit})" if unit else label
    head = (f'<figure><figcaption>{esc(title)}</figcaption><svg class="chart" data-metric="{esc(metric)}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{esc(index.config)} {esc(title)}">')
    if not series:
        return head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no values</text></svg></figure>'
    values = [v for _, v in series]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    x = _scale(0, max(1, len(series) - 1), LEFT, WIDTH - RIGHT)
    y = _scale(lo, hi, HEIGHT - BOTTOM, TOP)
    position = {e.sha: i for i, (e, _) in enumerate(series)}
    out = [head]
    # Axes: min and max labels, first and last dates.
    out.append(f'<path class="axis" d="M{LEFT} {TOP}V{HEIGHT - BOTTOM}H{WIDTH - RIGHT}"/>')
    out.append(f'<text class="tick" x="{LEFT - 4}" y="{y(hi - pad):.1f}" text-anchor="end">{esc(_fmt(hi - pad))}</text>')
    out.append(f'<text class="tick" x="{LEFT - 4}" y="{y(lo + pad):.1f}" text-anchor="end">{esc(_fmt(lo + pad))}</text>')
    out.append(f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}">{esc(series[0][0].timestamp[:10])}</text>')
    out.append(f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
               f'{esc(series[-1][0].timestamp[:10])}</text>')
    # Change points: a vertical line at the first commit after the shift.
    for cp in hist.change_points:
        if cp.get("metric") != metric:
            continue
        sha = str(cp.get("commit", ""))
        i = next((p for s, p in position.items() if s.startswith(sha) or sha.startswith(s)), None) if sha else None
        if i is None:
            continue
        change = cp.get("change")
        size = f" {change * 100:+.1f}%" if isinstance(change, (int, float)) and math.isfinite(change) else ""
        last = str(cp.get("last_commit") or "")
        j = position.get(last) if cp.get("kind") == "drift" else None
        if j is not None and j > i:  # drift: shade the ramp, from its first to its last commit
            out.append(f'<rect class="drift" x="{x(i):.1f}" y="{TOP}" width="{x(j) - x(i):.1f}" '
                       f'height="{HEIGHT - BOTTOM - TOP}"/>')
        acked = _ack_for(index.acks, series[i][0].sha, metric)
        cls = "cp acked" if acked else "cp"
        note = f"; acknowledged by {acked.by or '?'}: {acked.reason}" if acked else ""
        out.append(f'<line class="{cls}" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}">'
                   f'<title>{esc(cp.get("kind", "change"))} at {esc(sha[:12])}{esc(size)}{esc(note)}</title></line>')
    # Acknowledged commits: a marker on the top edge.
    for ack in index.acks:
        i = next((p for s, p in position.items() if s.startswith(ack.sha) or ack.sha.startswith(s)), None)
        if i is None or ack.metric not in (None, metric):
            continue
        out.append(f'<path class="ack" d="M{x(i):.1f} {TOP}l-5 -9h10z"><title>acknowledged {esc(ack.sha[:12])} by '
                   f'{esc(ack.by or "?")} {esc(ack.at[:10])}: {esc(ack.reason)}</title></path>')
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(series))
    out.append(f'<polyline class="line" points="{points}"/>')
    for i, (entry, v) in enumerate(series):
        tip = esc(f"{entry.sha[:12]} {entry.timestamp[:16].replace('T', ' ')}  {label} {_fmt(v)}{(' ' + unit) if unit else ''}")
        dot = f'<circle class="pt" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3"><title>{tip}</title></circle>'
        # Relative to the page's <base> (the repository's commit URL): 40 bytes less per point.
        out.append(f'<a href="{esc(entry.sha)}">{dot}</a>' if commit_url(repo, entry.sha) else dot)
    out.append("</svg></figure>")
    return "".join(out)


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;color:#1f2328}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}.meta{color:#59636e}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1em}
figure{margin:0}figcaption{font-weight:600}svg.chart{width:100%;height:auto}
.axis{fill:none;stroke:#8c959f}.tick{font-size:11px;fill:#59636e}
.line{fill:none;stroke:#0969da;stroke-width:1.5}.pt{fill:#0969da}.pt:hover{r:6}
.drift{fill:#cf222e;fill-opacity:.08}.cp{stroke:#cf222e;stroke-width:2;stroke-dasharray:5 3}.cp.acked{stroke:#1a7f37}.ack{fill:#1a7f37}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #d1d9e0}
"""
# No fetch of any kind: the page is one file, read offline.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _events_table(hist: ConfigHistory, repo: str | None) -> str:
    rows = []
    for cp in hist.change_points:
        sha = str(cp.get("commit", ""))
        acked = _ack_for(hist.index.acks, sha, cp.get("metric")) if sha else None
        change = cp.get("change")
        size = f"{change * 100:+.1f}%" if isinstance(change, (int, float)) and math.isfinite(change) else ""
        url = commit_url(repo, sha)
        link = f'<a href="{esc(url)}">{esc(sha[:12])}</a>' if url else esc(sha[:12])
        state = f"acknowledged by {esc(acked.by or '?')}: {esc(acked.reason)}" if acked else "not acknowledged"
        rows.append(f"<tr><td>{esc(cp.get('metric', ''))}</td><td>{link}</td><td>{esc(cp.get('kind', ''))}</td>"
                    f"<td>{esc(size)}</td><td>{state}</td></tr>")
    for ack in hist.index.acks:
        if not any(str(cp.get("commit", "")).startswith(ack.sha) for cp in hist.change_points):
            url = commit_url(repo, ack.sha)
            link = f'<a href="{esc(url)}">{esc(ack.sha[:12])}</a>' if url else esc(ack.sha[:12])
            rows.append(f"<tr><td>{esc(ack.metric or 'all')}</td><td>{link}</td><td>ack</td><td></td>"
                        f"<td>acknowledged by {esc(ack.by or '?')}: {esc(ack.reason)}</td></tr>")
    if not rows:
        return '<p class="meta">No change points.</p>'
    return ("<table><tr><th>metric</th><th>commit</th><th>kind</th><th>change</th><th>state</th></tr>"
            + "".join(rows) + "</table>")


def render_html(histories: list[ConfigHistory], *, repo: str | None = None, title: str = "rlhf-canary trends",
                generated: str = "") -> str:
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
             f'<meta name="viewport" content="width=device-width,initial-scale=1">'
             + (f'<base href="{esc(commit_base(repo))}">' if commit_base(repo) else "")
             + f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"]
    meta = f"{len(histories)} config(s)" + (f", repository {repo}" if repo else "") + (f", generated {generated}" if generated else "")
    parts.append(f'<p class="meta">{esc(meta)}. Hover a point for its commit and value; click it to open the commit. '
                 "Dashed red lines: change points; green: acknowledged; green triangles: acknowledgements.</p>")
    for hist in histories:
        idx = hist.index
        parts.append(f'<section class="config" data-config="{esc(idx.config)}"><h2>{esc(idx.config)}</h2>'
                     f'<p class="meta">hardware {esc(idx.hardware_key)}, {len(idx.entries)} commits</p>'
                     '<div class="charts">')
        parts.extend(chart_svg(hist, metric, repo) for metric in METRICS)
        parts.append("</div>" + _events_table(hist, repo) + "</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def png_name(config: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", config).lstrip(".") or "config"


def render_png(hist: ConfigHistory, path: Path) -> Path:
    """The four charts of one config in one PNG (for a markdown summary, where SVG links do not work)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 6), squeeze=False)
    for ax, metric in zip(axes.flat, METRICS):
        series = hist.index.series(metric)
        label, unit = LABELS[metric]
        ax.set_title(f"{label} ({unit})" if unit else label, fontsize=10)
        if not series:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(range(len(series)), [v for _, v in series], marker="o", markersize=2.5, linewidth=1)
        position = {e.sha: i for i, (e, _) in enumerate(series)}
        for cp in hist.change_points:
            sha = str(cp.get("commit", ""))
            i = next((p for s, p in position.items() if sha and s.startswith(sha)), None)
            if cp.get("metric") == metric and i is not None:
                acked = _ack_for(hist.index.acks, sha, metric)
                ax.axvline(i, color="#1a7f37" if acked else "#cf222e", linestyle="--", linewidth=1.2)
        ax.set_xlabel("commit (oldest to newest)", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{hist.index.config} ({hist.index.hardware_key})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_site(histories: list[ConfigHistory], out_dir: Path, *, repo: str | None = None, generated: str = "",
               pngs: bool = True) -> dict[str, Path]:
    """index.html and `<config>.png` per config into `out_dir`; returns what was written by name."""
    from ..results import write_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"index.html": write_atomic(out_dir / "index.html", render_html(histories, repo=repo, generated=generated))}
    if pngs:
        for hist in histories:
            name = png_name(hist.index.config) + ".png"
            written[name] = render_png(hist, out_dir / name)
    return written
