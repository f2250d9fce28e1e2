"""PNG plots of the curves for artifacts: one per curve, NaN-safe, file names safe."""

from __future__ import annotations

import pytest

from canary_runner import plots

from .conftest import load_fixture

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def test_write_plots(tmp_path):
    written = plots.write_plots(load_fixture("handmade-crashed"), tmp_path)
    assert [m for m, _ in written] == ["loss", "rewards/margins", "step_time_s"]
    for _, path in written:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_hostile_metric_names_make_safe_file_names(tmp_path):
    c = load_fixture("handmade-hostile")
    written = plots.write_plots(c, tmp_path, max_plots=3)
    assert len(written) == 3
    for _, path in written:
        assert path.parent == tmp_path and path.name.startswith("curve-") and path.suffix == ".png"
        assert all(ch.isalnum() or ch in "-." for ch in path.name)


def test_plot_names_are_unique_and_capped():
    names = [n for _, n in plots.plan_plots({"curves": {"a/b": {}, "a-b": {}, "A B": {}}})]
    assert names == ["curve-a-b.png", "curve-a-b-2.png", "curve-a-b-3.png"]
    many = {"curves": {f"m{i}": {"current": {"step": [1], "value": [1]}} for i in range(100)}}
    assert len(plots.plan_plots(many)) == plots.MAX_PLOTS


def test_no_baseline_and_empty_curves(tmp_path):
    c = load_fixture("handmade-no-baseline")
    assert len(plots.write_plots(c, tmp_path)) == 3
    assert plots.write_plots({"curves": {}}, tmp_path / "none") == []
