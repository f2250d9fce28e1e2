"""What reading and comparing a record may cost, and the files compare and its neighbours write.

Compare must stay O(n log n) in the number of steps: Theil-Sen over all n(n-1)/2 pairs needed 9.7 GB
at 20k steps. The bound is checked as memory (tracemalloc's peak), not time, so a loaded machine
cannot make it flaky.
"""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from canary_runner import results
from canary_runner.cli import main as canary_main
from canary_runner.compare import stats

from .conftest import make_record, write_record

FAST = "version: 1\nresamples: 200\n"  # the bootstrap is linear in steps; fewer resamples keep the test short


def test_compare_of_20k_steps_has_bounded_memory(tmp_path):
    n = 20_000
    cur = write_record(tmp_path / "cur", make_record(steps=n, warmup=5, run_id="cur", seed=1))
    base = write_record(tmp_path / "base", make_record(steps=n, warmup=5, run_id="base", seed=2))
    (tmp_path / "fast.yaml").write_text(FAST)
    # In a child process: its own peak RSS is the measure (tracemalloc would slow the run 4x), and an
    # address-space cap makes a quadratic implementation fail at once instead of taking the machine.
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from canary_runner.cli import main
code = main(["compare", {str(cur)!r}, {str(base)!r}, "-o", {str(tmp_path / "c.json")!r},
             "--thresholds", {str(tmp_path / "fast.yaml")!r}])
print("peak-rss-mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "exit", code)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    words = out.stdout.split()
    peak, exit_code = int(words[words.index("peak-rss-mib") + 1]), int(words[words.index("exit") + 1])
    assert exit_code in (0, 1)
    # All pairs of 20k steps are 200M slopes (1.6 GB for the slopes alone, 9.7 GB in scipy); the
    # interpreter, numpy and scipy take ~150 MB, the records and bounded bootstrap blocks little more.
    assert peak < 600, f"peak RSS {peak} MiB"


@pytest.mark.parametrize("n", [5, 30, 300, 1400])
def test_trend_is_scipys_theil_sen_on_todays_run_lengths(n):
    from scipy.stats import theilslopes

    rng = np.random.default_rng(n)
    x = np.arange(1, n + 1)
    y = 0.7 * np.exp(-x / 40) + rng.normal(0, 0.01, n)
    tr = stats.trend(x, y)
    ref = theilslopes(y, x, alpha=0.95)
    assert (tr.slope, tr.intercept, *tr.slope_ci) == (ref[0], ref[1], ref[2], ref[3])


def test_trend_on_sampled_pairs_is_close_to_all_pairs():
    from scipy.stats import theilslopes

    n = 3000  # 4.5M pairs: past the exact limit, still cheap enough to compute exactly here
    rng = np.random.default_rng(7)
    x = np.arange(1, n + 1)
    y = 2.0 - 4e-4 * x + rng.normal(0, 0.2, n)
    tr = stats.trend(x, y)
    ref = theilslopes(y, x, alpha=0.95)
    width = ref[3] - ref[2]
    assert abs(tr.slope - ref[0]) < 0.05 * width
    assert abs(tr.slope_ci[0] - ref[2]) < 0.05 * width and abs(tr.slope_ci[1] - ref[3]) < 0.05 * width
    assert math.isclose(tr.intercept, ref[1], rel_tol=1e-3)


def test_bootstrap_blocks_are_bounded_and_short_runs_unchanged():
    rng = np.random.default_rng(3)
    short = [rng.normal(1.0, 0.1, 40)], [rng.normal(1.1, 0.1, 40)]
    a = stats.bootstrap_change(*short, resamples=2000, seed=5)
    b = stats.bootstrap_change(*short, resamples=2000, seed=5)
    assert a == b and a.relative_ci[0] > 0
    tracemalloc.start()
    try:
        long = [rng.normal(1.0, 0.1, 50_000)], [rng.normal(1.0, 0.1, 50_000)]
        stats.bootstrap_change(*long, resamples=256, seed=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB"  # one block of 256 x 50k samples: 3 arrays of 100 MB


# -- files other steps read --------------------------------------------------------------------------
@pytest.fixture
def strict_umask():
    """A umask that would make any file created with default modes unreadable to other users."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_are_readable_by_the_next_step(tmp_path, strict_umask, capsys):
    cur = write_record(tmp_path / "cur", make_record(run_id="cur", seed=1))
    base = write_record(tmp_path / "base", make_record(run_id="base", seed=2))
    assert mode(cur / "metrics.json") == 0o644  # results.write_json_atomic, as `canary run` writes it
    assert canary_main(["compare", str(cur), str(base), "-o", str(tmp_path / "out" / "comparison.json")]) in (0, 1)
    assert mode(tmp_path / "out" / "comparison.json") == 0o644
    assert canary_main(["report", str(tmp_path / "out" / "comparison.json"), "-o", str(tmp_path / "out" / "report.md"),
                        "--no-plots"]) == 0
    assert mode(tmp_path / "out" / "report.md") == 0o644
    assert canary_main(["baseline", "push", f"path:{tmp_path / 'store'}", str(cur)]) == 0
    stored = list((tmp_path / "store").rglob("*.json"))  # the baseline, its history entry, the history index
    assert sorted(p.name for p in stored if p.parent.name != "history") == ["index.json", "metrics.json"]
    assert len(stored) == 3 and all(mode(p) == 0o644 for p in stored)
    assert canary_main(["baseline", "pull", f"path:{tmp_path / 'store'}", "--metrics", str(cur),
                        "-o", str(tmp_path / "pulled")]) == 0
    assert mode(tmp_path / "pulled" / "metrics.json") == 0o644


def test_steps_jsonl_is_readable_by_the_next_step(tmp_path, strict_umask):
    pytest.importorskip("transformers")
    from canary_runner.collect.collector import StepCollector

    collector = StepCollector(tmp_path / "run" / "steps.jsonl", warmup_steps=1, timeout_s=60, deadline_from=0.0)
    collector.close()
    assert mode(tmp_path / "run" / "steps.jsonl") == 0o644
    assert results.FILE_MODE == 0o644
