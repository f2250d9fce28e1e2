"""Time to verdict: the whole embedded smoke flow (run, compare, report) from a warm install.

Each repetition is a fresh Python process (imports are paid as in CI) that times its phases:
imports, model build (workload + trainer construction; embedded models come from the on-disk
cache after the first build), training, compare and render. A baseline run is made once up front
and is not counted: in CI it is fetched, not trained. Target: under 60 s on 2 CPU cores.

    python benchmarks/time_to_verdict.py [--config dpo_embedded] [--reps 3]
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
PHASES = ["imports", "model_build", "training", "compare", "render", "total"]


def inner(config: str, out: Path, baseline: Path) -> dict:
    """One timed flow, in this (fresh) process."""
    t0 = time.perf_counter()
    import contextlib
    import io

    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    from canary_runner.cli import main, resolve_config_path
    from canary_runner.quiet import quiet_libraries
    from canary_runner.config import load_config
    from canary_runner.runner import run

    t_imports = time.perf_counter()
    quiet_libraries()
    cfg = load_config(resolve_config_path(config))
    with contextlib.redirect_stdout(io.StringIO()):
        rec, code = run(cfg, out / "current")
    assert code == 0, rec["error"]
    t_run = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        verdict = main(["compare", str(out / "current"), str(baseline), "-o", str(out / "comparison.json")])
    t_compare = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rendered = main(["report", str(out / "comparison.json"), "--format", "comment", "-o", str(out / "comment.md")])
    t_render = time.perf_counter()
    assert verdict in (0, 1) and rendered == 0
    setup, train = rec["run"]["setup_s"], rec["run"]["train_s"]
    return {
        "imports": t_imports - t0,
        "model_build": setup,
        # What run() spent outside setup and the training loop (fingerprint, writing metrics.json) counts as training.
        "training": (t_run - t_imports) - setup,
        "compare": t_compare - t_run,
        "render": t_render - t_compare,
        "total": t_render - t0,
        "train_loop": train,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="dpo_embedded")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--inner", nargs=2, metavar=("OUT", "BASELINE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args.config, Path(args.inner[0]), Path(args.inner[1]))))
        return 0

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The baseline (not timed) also warms the embedded model cache, as any earlier run on a runner does.
        subprocess.run([sys.executable, "-m", "canary_runner.cli", "run", args.config, "-o", str(tmp / "baseline"),
                        "--no-progress"], check=True, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
        reps = []
        for i in range(args.reps):
            out = tmp / f"rep{i}"
            proc = subprocess.run([sys.executable, __file__, "--config", args.config, "--inner", str(out),
                                   str(tmp / "baseline")], check=True, capture_output=True, text=True, env=env, cwd=REPO)
            reps.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"time to verdict: {args.config}, {args.reps} fresh processes, {os.cpu_count()} CPU cores (medians)")
    for phase in PHASES:
        values = [r[phase] for r in reps]
        print(f"  {phase:<12} {statistics.median(values):7.2f} s   ({' '.join(f'{v:.2f}' for v in values)})")
    total = statistics.median(r["total"] for r in reps)
    print(f"  of which the training loop: {statistics.median(r['train_loop'] for r in reps):.2f} s")
    print(f"total {total:.1f} s vs 60 s target: {'met' if total < 60 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
