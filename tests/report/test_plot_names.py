"""Metric and config names reach matplotlib as plain text: `$...$` in them is not mathtext (a parse
error there used to stop the whole report)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from canary_runner import plots  # noqa: E402

from .conftest import load_fixture  # noqa: E402


@pytest.mark.parametrize("name", ["$\\frac{$", "p$\\undefinedcmd$q", "$$", "x_$\\", "a $x^ b"])
def test_dollar_signs_in_names_do_not_break_the_plots(tmp_path, name):
    c = load_fixture("handmade-fail")
    curve = next(iter(c["curves"].values()))
    c["current"]["config_name"] = name
    c["curves"] = {name: curve, "loss": curve}
    written = plots.write_plots(c, tmp_path)
    assert [m for m, _ in written] == ["loss", name]
    assert all(p.stat().st_size > 1000 for _, p in written)
