"""Distributed runs: the largest rank's peak memory and the straggler ratio are checks."""

from canary_runner.distributed import _rank_summary

from .conftest import make_record


def distributed(record, rank_medians, rank_mems):
    """Give a controlled record the per-rank series and summary.distributed of a merged run."""
    s = record["series"]
    n = len(s["step"])
    for r, (median, mem) in enumerate(zip(rank_medians, rank_mems)):
        s[f"rank{r}/step_time_s"] = [median] * n
        s[f"rank{r}/mem_rss_anon_mb"] = [mem] * n
    record["summary"]["distributed"] = _rank_summary({r: {"status": "completed"} for r in range(len(rank_medians))},
                                                     s, len(rank_medians), "ddp")
    record["run"]["world_size"] = len(rank_medians)
    record["run"]["distributed"] = {"nproc_per_node": len(rank_medians), "strategy": "ddp"}
    return record


def test_balanced_ranks_pass(record_dir, compare):
    base = record_dir("base", distributed(make_record(seed=1), [0.02, 0.02], [400.0, 400.0]))
    cur = record_dir("cur", distributed(make_record(seed=2), [0.02, 0.0201], [401.0, 400.0]))
    res = compare(cur, base)
    assert res.status("distributed.straggler_ratio") == "pass"
    assert res.status("distributed.rank_memory") == "pass"
    assert res.check("distributed.straggler_ratio")["category"] == "distributed"


def test_a_straggler_and_a_heavier_rank_fail(record_dir, compare):
    base = record_dir("base", distributed(make_record(seed=1), [0.02, 0.02], [400.0, 400.0]))
    # Rank 1 takes 2x as long per step and holds 100 MB more than before.
    cur = record_dir("cur", distributed(make_record(seed=2), [0.02, 0.04], [400.0, 500.0]))
    res = compare(cur, base)
    assert res.code == 1
    straggler = res.check("distributed.straggler_ratio")
    assert straggler["status"] == "fail" and straggler["current"] == 0.04 / 0.03  # max over the median of 2
    assert "the whole interval is past the limit" in straggler["reason"]
    memory = res.check("distributed.rank_memory")
    assert memory["status"] == "fail" and memory["current"] == 500.0


def test_straggler_limit_holds_without_a_baseline(record_dir, compare):
    cur = record_dir("cur", distributed(make_record(seed=2), [0.02, 0.02, 0.02, 0.04], [400.0] * 4))
    res = compare(cur, "--no-baseline")
    straggler = res.check("distributed.straggler_ratio")
    assert straggler["status"] == "fail" and "above the limit 1.5" in straggler["reason"]


def test_single_process_runs_have_no_distributed_checks(record_dir, compare):
    res = compare(record_dir("cur", seed=2), record_dir("base", seed=1))
    assert not [c for c in res.doc["checks"] if c["id"].startswith("distributed.")]
    assert not [c for c in res.doc["checks"] if "/" in c["id"]]
