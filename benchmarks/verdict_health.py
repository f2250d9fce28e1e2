"""False alarms and misses of the training-health checks (`stability.collapse`, `stability.learning`)
on real runs of the embedded configs.

A/A: every config is run once as the baseline, then RERUNS more times unchanged and SEEDS times with
another seed (seed 1, 2, ...: other initial weights and data order, the run-to-run variation a real GPU
run has and a CPU rerun does not). Each is compared with the baseline and without one
(`--no-baseline`); a failure of a health check there is a false alarm. Performance checks are left
out of the count: step times on a shared machine are the other benchmarks' subject.

Regressions: real runs of changes that break training without a NaN (a learning rate 10^6 too high,
one 1000x too low, a DPO loss whose gradient is zero), compared the same two ways; a health check
that does not fail there is a miss.

    python benchmarks/verdict_health.py [--configs sft_embedded dpo_embedded ...] [--reruns 2] [--seeds 3]
                                        [--json-out FILE] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
CONFIGS = ["sft_embedded", "dpo_embedded", "reward_embedded", "grpo_embedded", "rloo_embedded", "ppo_embedded"]
CHECKS = ("stability.collapse", "stability.learning")
# name: (config, --set overrides, what it breaks)
REGRESSIONS = {
    "sft lr 1e3": ("sft_embedded", ["train.learning_rate=1e3"], "collapse: uniform output"),
    "reward lr 1e3": ("reward_embedded", ["train.learning_rate=1e3"], "collapse: constant reward"),
    "sft lr 1e-6": ("sft_embedded", ["train.learning_rate=1e-6"], "not learning"),
    "dpo lr 5e-7": ("dpo_embedded", ["train.learning_rate=5e-7"], "not learning"),
    "reward lr 1e-6": ("reward_embedded", ["train.learning_rate=1e-6"], "not learning"),
    "dpo aot, label smoothing 0.5": ("dpo_embedded", ["dpo.loss_type=aot", "dpo.extra_args.label_smoothing=0.5"],
                                     "not learning: zero gradient"),
}


def train(out: Path, config: str, sets: list[str]) -> Path:
    if (out / "metrics.json").exists():  # kept from an earlier call with the same --work
        return out
    cmd = [sys.executable, "-m", "canary_runner.cli", "run", config, "-o", str(out), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    if not (out / "metrics.json").exists():
        raise SystemExit(f"no metrics.json from: {' '.join(cmd)}")
    return out


def judge(current: Path, baseline: Path | None) -> dict:
    from canary_runner.compare import engine
    from canary_runner.compare.loading import load_side
    from canary_runner.compare.settings import resolve

    cur = load_side([current], "current")
    doc = engine.compare(cur, load_side([baseline], "baseline") if baseline else [], resolve("smoke"))
    by_id = {c["id"]: c["status"] for c in doc["checks"]}
    other = sorted(c["id"] for c in doc["checks"] if c["status"] == "fail" and c["id"] not in CHECKS
                   and c["category"] != "performance")
    return {**{cid: by_id.get(cid) for cid in CHECKS}, "other_fails": other, "verdict": doc["verdict"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--reruns", type=int, default=2, help="unchanged reruns per config")
    parser.add_argument("--seeds", type=int, default=3, help="reruns with another seed per config")
    parser.add_argument("--json-out", metavar="FILE")
    parser.add_argument("--work", metavar="DIR", help="keep the runs here and reuse them on the next call")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="verdict-health-") as tmp:
        root = Path(args.work or tmp)
        base = {}
        for config in dict.fromkeys(args.configs + [c for c, _, _ in REGRESSIONS.values()]):
            base[config] = train(root / config / "base", config, [])
        for config in args.configs:
            runs = [(f"rerun {i}", []) for i in range(1, args.reruns + 1)]
            runs += [(f"seed {i}", [f"seed={i}"]) for i in range(1, args.seeds + 1)]
            for name, sets in runs:
                cur = train(root / config / name.replace(" ", "-"), config, sets)
                for side, b in (("vs baseline", base[config]), ("no baseline", None)):
                    rows.append({"kind": "A/A", "config": config, "run": name, "side": side, **judge(cur, b)})
            print(f"  {config}: {len(runs)} A/A runs ({time.perf_counter() - t0:.0f} s)", flush=True)
        for name, (config, sets, what) in REGRESSIONS.items():
            cur = train(root / "regressions" / name.replace(" ", "-").replace(",", ""), config, sets)
            for side, b in (("vs baseline", base[config]), ("no baseline", None)):
                rows.append({"kind": "regression", "config": config, "run": name, "what": what, "side": side,
                             **judge(cur, b)})
    print(f"\n{len(rows)} comparisons in {time.perf_counter() - t0:.0f} s\n")
    aa = [r for r in rows if r["kind"] == "A/A"]
    for side in ("vs baseline", "no baseline"):
        sel = [r for r in aa if r["side"] == side]
        for cid in CHECKS:
            fails = [f"{r['config']} {r['run']}" for r in sel if r[cid] == "fail"]
            warns = sum(r[cid] == "warn" for r in sel)
            print(f"A/A {side:<12} {cid:<20} false failures {len(fails)}/{len(sel)}, warnings {warns}"
                  + (f" ({', '.join(fails)})" if fails else ""))
        other = [f"{r['config']} {r['run']}: {r['other_fails']}" for r in sel if r["other_fails"]]
        print(f"A/A {side:<12} {'other checks':<20} runs with a failure outside performance {len(other)}/{len(sel)}"
              + (f" ({'; '.join(other)})" if other else ""))
    print(f"\n{'regression':<30} {'side':<12} {'collapse':<9} {'learning':<9} verdict")
    for r in (r for r in rows if r["kind"] == "regression"):
        print(f"{r['run']:<30} {r['side']:<12} {r['stability.collapse']:<9} {r['stability.learning']:<9} "
              f"{r['verdict']}")
    reg = [r for r in rows if r["kind"] == "regression"]
    missed = [f"{r['run']} ({r['side']})" for r in reg
              if r["stability.collapse"] != "fail" and r["stability.learning"] != "fail"]
    print(f"missed: {len(missed)}/{len(reg)}" + (f" ({', '.join(missed)})" if missed else ""))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
