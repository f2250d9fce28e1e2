"""Multi-process canaries through torchrun on CPU (gloo): per-rank records merged, dead ranks kept."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from canary_runner import results
from canary_runner.cli import main
from canary_runner.distributed import merge, rank_dir


def dist_run(tmp_path, configs_dir, training_type, *extra):
    out = tmp_path / training_type
    code = main(["run", str(configs_dir / f"{training_type}_embedded.yaml"), "-o", str(out), "--no-progress",
                 "--set", "distributed.nproc_per_node=2", "--set", "train.max_steps=6", "--set", "train.warmup_steps=2",
                 *extra])
    return out, code


def check_merged(out, steps=6):
    results.validate(json.loads((out / "metrics.json").read_text()))
    rec = results.load_metrics(out)
    assert rec["status"] == "completed", rec["error"]
    assert rec["run"]["world_size"] == 2 and rec["run"]["steps_completed"] == steps
    s = rec["series"]
    for r in (0, 1):
        assert len(s[f"rank{r}/step_time_s"]) == steps and all(t > 0 for t in s[f"rank{r}/step_time_s"])
        assert all(n > 0 for n in s[f"rank{r}/tokens"])
    # Tokens add up across ranks; a step is as slow as its slowest rank.
    assert s["tokens"] == [a + b for a, b in zip(s["rank0/tokens"], s["rank1/tokens"])]
    assert s["step_time_s"] == [max(a, b) for a, b in zip(s["rank0/step_time_s"], s["rank1/step_time_s"])]
    d = rec["summary"]["distributed"]
    assert d["world_size"] == 2 and [r["rank"] for r in d["ranks"]] == [0, 1]
    assert d["straggler_ratio"] >= 1.0 and d["peak_memory_max_mb"] > 0
    return rec


@pytest.mark.parametrize("training_type", ["sft", "dpo", "grpo"])
def test_two_process_ddp_canary(tmp_path, configs_dir, training_type):
    out, code = dist_run(tmp_path, configs_dir, training_type)
    assert code == 0
    rec = check_merged(out)
    assert rec["run"]["distributed"]["strategy"] == "ddp"


def test_two_process_fsdp_canary(tmp_path, configs_dir):
    out, code = dist_run(tmp_path, configs_dir, "sft", "--set", "distributed.strategy=fsdp")
    assert code == 0
    assert check_merged(out)["run"]["distributed"]["strategy"] == "fsdp"


def test_ppo_fsdp_is_refused(tmp_path, configs_dir, capsys):
    _, code = dist_run(tmp_path, configs_dir, "ppo", "--set", "distributed.strategy=fsdp")
    assert code == 2 and "use 'ddp'" in capsys.readouterr().err


def test_a_dead_rank_fails_the_run_and_keeps_every_rank_s_steps(tmp_path, configs_dir):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "canary_runner.cli", "run", str(configs_dir / "sft_embedded.yaml"), "-o", str(out),
         "--no-progress", "--set", "distributed.nproc_per_node=2", "--set", "train.max_steps=100000",
         "--set", "train.warmup_steps=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps1 = rank_dir(out, 1) / "steps.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if steps1.exists() and len(steps1.read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    # The OOM killer's way: SIGKILL, no chance to write a record.
    rank1 = [p for p in psutil.Process(proc.pid).children(recursive=True)
             if "canary_runner.distributed" in " ".join(p.cmdline()) and p.environ().get("RANK") == "1"]
    assert len(rank1) == 1
    os.kill(rank1[0].pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    rec = results.load_metrics(out)
    assert rec["status"] == "crashed"
    assert "rank 1" in rec["error"]["message"] and "streamed steps are kept" in rec["error"]["message"]
    s = rec["series"]
    assert len([t for t in s["rank0/step_time_s"] if t is not None]) >= 5
    assert len([t for t in s["rank1/step_time_s"] if t is not None]) >= 5
    ranks = {r["rank"]: r for r in rec["summary"]["distributed"]["ranks"]}
    assert ranks[1]["status"] == "crashed"


def _fake_rank(path, times, mem, status="completed"):
    n = len(times)
    series = {"step": list(range(1, n + 1)), "warmup": [i == 0 for i in range(n)], "step_time_s": times,
              "tokens": [100] * n, "loss": [1.0] * n, "grad_norm": [1.0] * n, "mem_rss_anon_mb": mem}
    path.mkdir(parents=True)
    (path / "steps.jsonl").write_text("".join(json.dumps({k: v[i] for k, v in series.items()}) + "\n" for i in range(n)))
    return series


def test_merge_computes_straggler_ratio_from_per_rank_medians(tmp_path, configs_dir):
    # Controlled per-rank series: rank 1 is 50% slower and uses more memory.
    from canary_runner.config import load_config
    from canary_runner.runner import run

    cfg = load_config(configs_dir / "sft_embedded.yaml", ["train.max_steps=4", "train.warmup_steps=1"])
    run(cfg, rank_dir(tmp_path, 0))  # a real rank-0 record supplies run/env/config
    real = results.load_metrics(rank_dir(tmp_path, 0))
    real["series"]["step_time_s"] = [1.0, 1.0, 1.0, 1.0]
    results.write_json_atomic(rank_dir(tmp_path, 0) / "metrics.json", real)
    _fake_rank(rank_dir(tmp_path, 1), [1.5, 1.5, 1.5, 1.5], [50000.0] * 4, status="crashed")
    rec = merge(tmp_path, 2, "ddp", launcher_code=1)
    d = rec["summary"]["distributed"]
    assert d["step_time_median_max_s"] == 1.5
    assert d["straggler_ratio"] == pytest.approx(1.5 / 1.25)
    assert d["peak_memory_max_mb"] == 50000.0
    assert rec["status"] == "crashed" and "rank 1 died" in rec["error"]["message"]
