"""PNG plots of a comparison's curves (baseline vs current), for the run's artifacts and report.md.

matplotlib is imported only here, with the non-interactive Agg backend, so rendering a comment never
pays for it and no display is ever needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .report import _si_scale, chart_order
from .results import decode

MAX_PLOTS = 40
BASELINE_COLOR = "#9e9e9e"
CURRENT_COLOR = "#d62728"


def plot_filename(metric: str, taken: set[str] | None = None) -> str:
    """`curve-<slug>.png`: a file name safe on every system, unique within `taken`."""
    slug = re.sub(r"[^a-z0-9]+", "-", metric.lower()).strip("-")[:60] or "metric"
    name, i = f"curve-{slug}.png", 2
    while taken is not None and name in taken:
        name, i = f"curve-{slug}-{i}.png", i + 1
    if taken is not None:
        taken.add(name)
    return name


def plot_order(curves: Mapping[str, Any], checks: Iterable[Mapping] = ()) -> list[str]:
    """The curves the comment charts first (the failing checks' series, then loss), then the rest by name."""
    first = chart_order(curves, checks)
    return first + sorted(k for k in curves if k not in first)


def plan_plots(comparison: Mapping, metrics: Iterable[str] | None = None,
               max_plots: int = MAX_PLOTS) -> list[tuple[str, str]]:
    """[(metric, file name)] that `write_plots` writes, in order, without drawing anything."""
    curves = comparison.get("curves") or {}
    order = plot_order(curves, comparison.get("checks") or []) if metrics is None else metrics
    names = [m for m in order if m in curves][:max_plots]
    taken: set[str] = set()
    return [(m, plot_filename(m, taken)) for m in names]


def _xy(curve: Mapping | None) -> tuple[list[int], list[float], int | None]:
    """Steps and values (None and non-finite as NaN gaps) and the first non-finite step."""
    if not curve:
        return [], [], None
    xs, ys, bad = [], [], None
    for s, v in zip(curve.get("step") or [], decode(list(curve.get("value") or []))):
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            bad = s if bad is None else bad
            v = math.nan
        xs.append(s)
        ys.append(float(v))
    return xs, ys, bad


def _si_axis(ax: Any, metric: str, values: list[float]) -> None:
    """Tick labels with SI suffixes (20 ms, 26 k) where plain numbers would be long."""
    from matplotlib.ticker import EngFormatter

    seconds = bool(re.search(r"(^|[/_])(step_)?time(_s)?$|_s$", metric))
    factor, _ = _si_scale([v for v in values if math.isfinite(v)], seconds)
    if factor != 1.0 or seconds:
        ax.yaxis.set_major_formatter(EngFormatter(unit="s" if seconds else "", sep=" " if seconds else ""))


def write_plots(comparison: Mapping, out_dir: str | Path, *, metrics: Iterable[str] | None = None,
                max_plots: int = MAX_PLOTS) -> list[tuple[str, Path]]:
    """One PNG per curve in `out_dir` (baseline grey, current red, a dashed line at the first NaN/Inf).

    Returns [(metric, path)] in plot order; at most `max_plots` (the loss and reward curves first).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI

    curves = comparison.get("curves") or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = str((comparison.get("current") or {}).get("config_name") or "")
    written: list[tuple[str, Path]] = []
    for metric, filename in plan_plots(comparison, metrics, max_plots):
        curve = curves[metric] or {}
        fig = Figure(figsize=(7, 3.6), dpi=100)
        ax = fig.add_subplot()
        # The baseline wide underneath, the current narrow on top: both stay visible where they agree.
        for side, color, width in (("baseline", BASELINE_COLOR, 3.0), ("current", CURRENT_COLOR, 1.4)):
            xs, ys, bad = _xy(curve.get(side))
            if not xs:
                continue
            marker = "o" if len(xs) <= 30 else None
            ax.plot(xs, ys, color=color, linewidth=width, marker=marker, markersize=width + 1.5, label=side)
            if bad is not None:
                ax.axvline(bad, color=color, linestyle="--", linewidth=1, label=f"{side}: first NaN/Inf (step {bad})")
        # Names are data, not mathtext: `$...$` in them must not be parsed (a parse error would stop
        # the whole report), so no text of ours or theirs is parsed as math.
        ax.set_title(f"{metric} · {name}"[:90], fontsize=10, parse_math=False)
        ax.set_xlabel("step", parse_math=False)
        ax.set_ylabel(metric[:40], parse_math=False)
        ax.grid(True, alpha=0.3)
        _si_axis(ax, metric, [y for side in ("baseline", "current") for y in _xy(curve.get(side))[1]])
        if ax.get_legend_handles_labels()[0]:
            for text in ax.legend(fontsize=8, loc="best").get_texts():
                text.set_parse_math(False)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, format="png", metadata={"Software": None})
        written.append((metric, path))
    return written
