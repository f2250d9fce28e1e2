"""The suite's runs: trained once per session, in two worker processes, and every case compared."""

from __future__ import annotations

import time

import pytest

from .cases import CASES
from .harness import run_suite


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    t0 = time.perf_counter()
    out = run_suite(tmp_path_factory.mktemp("verdicts"), CASES, workers=2)
    print(f"\nverdict suite: {len(out['train_s'])} runs, {len(CASES)} comparisons in "
          f"{time.perf_counter() - t0:.0f} s")
    return out
