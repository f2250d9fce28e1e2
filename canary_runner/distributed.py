"""Multi-process canaries: launch through torchrun, one record per rank, merged into one metrics.json.

Each rank runs the ordinary runner into `ranks/rank<N>/` (so each rank streams its own steps.jsonl);
after torchrun returns, the launcher merges the ranks: per-rank step times and memory become
`rank<N>/...` series, and `summary.distributed` holds max/median across ranks and the straggler
ratio. A rank that died without writing its record (SIGKILL, OOM killer) is rebuilt from its
streamed steps, and the run is marked crashed: the other ranks' data is kept either way.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import results

STATUS_ORDER = ["completed", "interrupted", "timeout", "crashed"]  # later is worse


def rank_dir(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / "ranks" / f"rank{rank}"


def run_canary(cfg, out_dir: Path, config_path: str | None = None, on_step=None) -> tuple[dict, int]:
    """`canary run`'s one entry: through torchrun when the config asks for several processes (and this
    process is not already one of its ranks), else in this process."""
    if cfg.distributed.nproc_per_node > 1 and "RANK" not in os.environ:
        return launch(cfg, out_dir, config_path, on_step)
    from .runner import run

    return run(cfg, out_dir, config_path=config_path, on_step=on_step)


def launch(cfg, out_dir: Path, config_path: str | None, on_step=None) -> tuple[dict, int]:
    """Run `cfg` under torchrun with `cfg.distributed.nproc_per_node` processes; returns the merged record."""
    out_dir = Path(out_dir)
    resolved = out_dir / "config.resolved.yaml"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved.write_text(yaml.safe_dump(cfg.resolved(), sort_keys=False))
    except OSError as e:  # nothing has run yet: a usage error, said plainly
        from .runner import SetupError

        raise SetupError(f"{out_dir} cannot be written ({e.strerror or e}); pass a writable -o / output-dir") from None
    n = cfg.distributed.nproc_per_node
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "canary_runner.distributed", str(resolved), str(out_dir), config_path or str(resolved)]
    # Workers log to a file: N interleaved progress streams help nobody; the launcher shows rank 0's.
    log_path = out_dir / "torchrun.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        # Forward SIGTERM/SIGINT so each rank records itself as interrupted.
        previous = {s: signal.signal(s, lambda signum, _f: proc.send_signal(signum))
                    for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            seen = 0
            steps = rank_dir(out_dir, 0) / "steps.jsonl"
            while proc.poll() is None:
                time.sleep(0.2)
                seen = _tail_progress(steps, seen, on_step)
            _tail_progress(steps, seen, on_step)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    record = merge(out_dir, n, cfg.distributed.strategy, proc.returncode, log_path)
    results.write_json_atomic(out_dir / "metrics.json", record)
    return record, 0 if record["status"] == "completed" else 3


def _tail_progress(steps: Path, seen: int, on_step) -> int:
    if on_step is None or not steps.exists():
        return seen
    lines = steps.read_text().splitlines()
    for line in lines[seen:]:
        try:
            on_step(results.decode(json.loads(line)))
        except json.JSONDecodeError:  # a line being written right now
            return seen
        seen += 1
    return seen


def _rank_record(out_dir: Path, rank: int, launcher_code: int) -> dict | None:
    """A rank's record, or one rebuilt from its streamed steps when the rank died before writing it."""
    d = rank_dir(out_dir, rank)
    if (d / "metrics.json").is_file():
        try:
            return results.load_metrics(d)
        except results.MetricsFileError:
            pass
    if not (d / "steps.jsonl").is_file():
        return None
    from .results import to_series

    records = []
    for line in (d / "steps.jsonl").read_text().splitlines():
        try:
            records.append(results.decode(json.loads(line)))
        except json.JSONDecodeError:
            break  # the line it was writing when it died
    return {
        "status": "crashed",
        "error": {"type": "RankDied", "message": f"rank {rank} died without writing its record (torchrun exit "
                  f"code {launcher_code}); its {len(records)} streamed steps are kept", "traceback": None,
                  "step": records[-1]["step"] if records else None},
        "series": to_series(records),
    }


def merge(out_dir: Path, world: int, strategy: str, launcher_code: int, log_path: Path | None = None) -> dict:
    ranks = {r: _rank_record(out_dir, r, launcher_code) for r in range(world)}
    present = {r: rec for r, rec in ranks.items() if rec is not None}
    base_rank = min((r for r, rec in present.items() if "run" in rec), default=None)
    if base_rank is None:
        tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
        raise RuntimeError(f"no rank wrote a record (torchrun exit code {launcher_code}). torchrun output:\n{tail}")
    record = dict(present[base_rank])
    series = dict(record["series"])
    steps = series["step"]
    n = len(steps)

    def aligned(rec, name):
        values = rec["series"].get(name, []) if rec else []
        return (list(values) + [None] * n)[:n]

    per_rank_keys = ("step_time_s", "tokens", "mem_rss_anon_mb", "mem_cuda_max_allocated_mb", "mem_cuda_max_reserved_mb")
    for r, rec in ranks.items():
        for key in per_rank_keys:
            if key in series:
                series[f"rank{r}/{key}"] = aligned(rec, key)
    # A synchronous step is as slow as its slowest rank; tokens add up across ranks.
    series["step_time_s"] = [max((t for t in (series.get(f"rank{r}/step_time_s", [None] * n)[i] for r in ranks)
                                  if isinstance(t, (int, float))), default=None) for i in range(n)]
    series["tokens"] = [sum(t for t in (series[f"rank{r}/tokens"][i] for r in ranks) if isinstance(t, (int, float)))
                        for i in range(n)]

    phases = sorted(k for k in series if k.endswith("_time_s") and k != "step_time_s" and "/" not in k)
    summary = results.summarize(series, phases)
    summary["peak_memory"] = _peak_memory(ranks, series)
    summary["distributed"] = _rank_summary(ranks, series, world, strategy)

    worst = max((rec["status"] for rec in present.values()), key=STATUS_ORDER.index)
    status = "crashed" if len(present) < world else worst
    # The root cause first: a rank that died takes the others down with connection errors.
    candidates = sorted(((r, rec["error"]) for r, rec in present.items() if rec.get("error")),
                        key=lambda re: (re[1]["type"] != "RankDied", -STATUS_ORDER.index(present[re[0]]["status"])))
    error = None
    if len(present) < world:
        missing = sorted(set(ranks) - set(present))
        error = {"type": "RankDied", "message": f"rank(s) {missing} died before recording any step",
                 "traceback": None, "step": None}
    elif candidates:
        culprit, error = candidates[0]
        error = dict(error)
        if not error["message"].startswith("rank "):
            error["message"] = f"rank {culprit}: {error['message']}"

    record["series"] = series
    record["summary"] = summary
    record["status"] = status
    record["error"] = error
    record["run"] = dict(record["run"], world_size=world, steps_completed=n,
                         distributed={"nproc_per_node": world, "strategy": strategy, "launcher": "torchrun"})
    return record


def _peak_memory(ranks: dict, series: dict) -> dict:
    devices, rss = [], []
    for r, rec in ranks.items():
        rss += [v for v in series.get(f"rank{r}/mem_rss_anon_mb", []) if isinstance(v, (int, float))]
        alloc = [v for v in series.get(f"rank{r}/mem_cuda_max_allocated_mb", []) if isinstance(v, (int, float))]
        if alloc:
            reserved = [v for v in series.get(f"rank{r}/mem_cuda_max_reserved_mb", []) if isinstance(v, (int, float))]
            devices.append({"device": f"rank{r}", "max_allocated_mb": max(alloc), "max_reserved_mb": max(reserved, default=0.0)})
    return {"cpu_rss_anon_mb": max(rss) if rss else None, "cpu_rss_anon_rise_mb": None, "devices": devices}


def _rank_summary(ranks: dict, series: dict, world: int, strategy: str) -> dict:
    per_rank = []
    for r in ranks:
        stats = results.describe(results.steady(series, f"rank{r}/step_time_s"))
        mem_key = f"rank{r}/mem_cuda_max_allocated_mb" if f"rank{r}/mem_cuda_max_allocated_mb" in series else f"rank{r}/mem_rss_anon_mb"
        mem = [v for v in series.get(mem_key, []) if isinstance(v, (int, float))]
        per_rank.append({"rank": r, "step_time_median_s": stats["median"], "steps": stats["count"],
                         "peak_memory_mb": max(mem) if mem else None,
                         "status": ranks[r]["status"] if ranks[r] else "missing"})
    medians = sorted(p["step_time_median_s"] for p in per_rank if p["step_time_median_s"] is not None)
    mems = [p["peak_memory_mb"] for p in per_rank if p["peak_memory_mb"] is not None]
    mid = statistics.median(medians) if medians else None
    return {
        "world_size": world,
        "strategy": strategy,
        "ranks": per_rank,
        "step_time_median_max_s": medians[-1] if medians else None,
        "step_time_median_median_s": mid,
        # Slowest rank's median over the typical rank's: 1.0 is perfectly balanced.
        "straggler_ratio": (medians[-1] / mid) if medians and mid else None,
        "peak_memory_max_mb": max(mems) if mems else None,
        "peak_memory_median_mb": statistics.median(mems) if mems else None,
    }


def worker(config: str, out_dir: str, config_path: str) -> int:
    """One rank, started by torchrun."""
    import torch.distributed as dist

    from .config import load_config
    from .runner import run

    rank = int(os.environ.get("RANK", "0"))
    cfg = load_config(config)
    _, code = run(cfg, rank_dir(Path(out_dir), rank), config_path=config_path)
    if code == 0 and dist.is_initialized():
        # Without a clean teardown both ranks abort at exit (SIGABRT) even after a good run.
        dist.barrier()
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    exit_code = worker(*sys.argv[1:4])
    # The record is written. Leave without interpreter finalization: gloo's teardown there can still hang
    # or abort (SIGABRT) after a clean destroy_process_group (seen in 1 of 9 bare two-rank runs here),
    # which would stall or fail a run that finished.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
