"""Overhead of `canary exec`: a training script run under it vs the same script run bare.

The script (this file with --worker) builds a TRL trainer from a shipped config with nothing of the
canary attached, trains it and prints how long `trainer.train()` took: a user's script as `canary
exec` meets it. Each repetition runs it twice as a fresh process, `python this.py --worker ...` and
`canary exec -- python this.py --worker ...`, alternating which goes first so that drift in the
machine hits both sides alike (the side-by-side ratio method of benchmarks/overhead.py). Two figures
per config, each the median of the per-repetition ratios (exec / bare) with a bootstrap 95% interval:
  training   seconds per step inside `trainer.train()`: what the collector costs every step;
  wall       the whole command, start to exit: adds the hook at start-up, attaching (the environment
             fingerprint) and writing metrics.json, a fixed cost per run, also given in seconds.
Both sides use --threads torch threads (default 1: the least noisy on CPU).

    python benchmarks/exec_overhead.py [--configs sft_embedded dpo_embedded ...] [--reps 7] [--steps 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARK = "exec-overhead-result "
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def worker(config: str, steps: int, threads: int, out: str) -> int:
    """The 'user script': a trainer with no canary collector, timed the way overhead.py times it."""
    import contextlib
    import gc
    import io

    import torch

    trainer = build_bare(config, steps, threads, out)
    cuda = torch.cuda.is_available()
    gc.collect()
    gc.freeze()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # PPO prints a banner; same cost on both sides
        trainer.train()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    print(MARK + json.dumps({"train_s": elapsed, "steps": trainer.state.global_step}), flush=True)
    return 0


def run_once(config: str, steps: int, threads: int, tmp: Path, under_exec: bool) -> tuple[float, float]:
    """(seconds per training step, wall seconds of the whole command) of one fresh process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--configs", config,
           "--steps", str(steps), "--threads", str(threads), "--out", str(tmp / "trainer")]
    if under_exec:
        cmd = [sys.executable, "-m", "canary_runner.cli", "exec", "-o", str(tmp / "exec"), "--no-summary",
               "--warmup-steps", "5", "--", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | ENV, cwd=REPO)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix(MARK))
    if under_exec:  # the collector really was attached: every step recorded
        recorded = len((tmp / "exec" / "steps.jsonl").read_text().splitlines())
        assert recorded == result["steps"], f"{recorded} steps recorded of {result['steps']}"
    return result["train_s"] / result["steps"], wall


def fixed_costs(reps: int = 5) -> dict:
    """The parts of the fixed cost measured in isolation (not through the machine's noise): the start
    of `canary exec` itself (its imports) over a bare Python's, and attaching to a built trainer (the
    imports it needs once transformers is loaded, the environment fingerprint, trainer.json)."""
    def wall(cmd):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, cwd=REPO)
        return time.perf_counter() - t0

    start = statistics.median(wall([sys.executable, "-m", "canary_runner.cli", "exec", "--help"]) -
                              wall([sys.executable, "-c", "pass"]) for _ in range(reps))
    code = ("import os, sys, tempfile, time; sys.path.insert(0, os.getcwd()); "
            "os.environ['CANARY_EXEC_DIR'] = tempfile.mkdtemp(); "
            "from benchmarks.exec_overhead import build_bare; trainer = build_bare('sft_embedded', 8, 1, os.environ['CANARY_EXEC_DIR']); "
            "from canary_runner.exec import attach; t0 = time.perf_counter(); attach.attach(trainer); "
            "print(time.perf_counter() - t0)")
    attach_s = statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                      check=True, cwd=REPO, env=os.environ | ENV).stdout.split()[-1])
                                 for _ in range(3))
    return {"start_s": start, "attach_s": attach_s}


def build_bare(config: str, steps: int, threads: int, out: str):
    """A trainer built from a shipped config with no collector of the canary's (the user's trainer)."""
    import torch

    sys.path.insert(0, str(REPO))
    from benchmarks.overhead import _bare_collector
    from canary_runner.cli import resolve_config_path
    from canary_runner.config import load_config
    from canary_runner.quiet import quiet_libraries
    from canary_runner.runner import _device, build_trainer

    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(resolve_config_path(config), [f"train.max_steps={steps}", "train.warmup_steps=5"])
    collector = _bare_collector()
    trainer = build_trainer(cfg, Path(out), collector, _device(cfg))
    trainer.remove_callback(collector)
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["sft_embedded", "dpo_embedded", "grpo_embedded"])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, 0 = torch's default")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.configs[0], args.steps, args.threads, args.out)

    sys.path.insert(0, str(REPO))
    from benchmarks.overhead import bootstrap_median
    from canary_runner.collect.env import fingerprint

    fp = fingerprint()
    where = fp["gpu"]["name"] if fp["gpu"] else f"CPU {fp['cpu_model']} ({fp['cpu_count']} cores, torch threads {args.threads or 'default'})"
    print(f"exec overhead: `canary exec -- python script.py` vs `python script.py`, {args.reps} interleaved reps "
          f"x {args.steps} steps, on {where}")
    print(f"{'config':<16} {'bare s/step':>11} {'exec s/step':>11} {'training [95% CI]':>26} "
          f"{'bare wall s':>11} {'exec wall s':>11} {'wall [95% CI]':>26} {'fixed s':>8}")
    overheads = []
    for name in args.configs:
        bare, exe, step_ratios, wall_ratios, fixed = [], [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            run_once(name, 8, args.threads, tmp, True)  # caches (embedded model, datasets) built once, unmeasured
            for rep in range(args.reps):
                order = (False, True) if rep % 2 == 0 else (True, False)
                got = {side: run_once(name, args.steps, args.threads, tmp, side) for side in order}
                (b_step, b_wall), (e_step, e_wall) = got[False], got[True]
                bare.append((b_step, b_wall))
                exe.append((e_step, e_wall))
                step_ratios.append(e_step / b_step)
                wall_ratios.append(e_wall / b_wall)
                fixed.append((e_wall - e_step * args.steps) - (b_wall - b_step * args.steps))
        train_over = statistics.median(step_ratios) - 1
        wall_over = statistics.median(wall_ratios) - 1
        (slo, shi), (wlo, whi) = bootstrap_median(step_ratios), bootstrap_median(wall_ratios)
        overheads.append(train_over)
        print(f"{name:<16} {statistics.median(b for b, _ in bare):>11.5f} {statistics.median(e for e, _ in exe):>11.5f} "
              f"{train_over:>+8.2%} [{slo - 1:+.2%}, {shi - 1:+.2%}] "
              f"{statistics.median(w for _, w in bare):>11.2f} {statistics.median(w for _, w in exe):>11.2f} "
              f"{wall_over:>+8.2%} [{wlo - 1:+.2%}, {whi - 1:+.2%}] {statistics.median(fixed):>8.2f}")
    print(f"worst training overhead: {max(overheads):+.2%}")
    costs = fixed_costs()
    print(f"fixed costs in isolation: canary exec's own start-up {costs['start_s']:.2f} s, "
          f"attaching to a trainer {costs['attach_s'] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
