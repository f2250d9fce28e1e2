"""A/B of a torchrun config: each run of each side is a two-rank launch (gloo on CPU), forked from the
side's fork server where runs are forked, and its record the ranks' merged one."""

from pathlib import Path

from canary_runner import ab, results
from canary_runner.compare import engine

REPO = Path(__file__).resolve().parents[2]


def test_ab_of_a_two_process_config(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    plan = ab.Plan(config="sft_embedded", base=str(REPO), head=str(REPO), out=tmp_path / "ab", min_pairs=2,
                   max_pairs=2, sets=["distributed.nproc_per_node=2", "train.max_steps=4", "train.warmup_steps=1"])
    doc, code = ab.run_ab(plan)
    assert engine.validate(doc) == []
    assert code in (ab.EXIT_OK, ab.EXIT_FAIL)  # A/A on a shared 2-core machine: the verdict is not the point
    info = doc["ab"]
    assert info["pairs"] == 2
    for side in ab.SIDES:
        assert len(info["runs"][side]) == 2
        for run in info["runs"][side]:
            rec = results.load_metrics(Path(run))
            assert rec["status"] == "completed", rec.get("error")
            assert rec["run"]["world_size"] == 2 and rec["summary"]["distributed"]["world_size"] == 2
            assert (Path(run) / "ranks" / "rank1" / "metrics.json").is_file()
    for metric in ("step_time", "memory"):
        assert len(info["decisions"][metric]["ratios"]) == 2, info["decisions"][metric]
    assert (tmp_path / "ab" / "comparison.json").is_file()
