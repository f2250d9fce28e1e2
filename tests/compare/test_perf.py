"""Performance and memory verdicts on controlled per-step series: decided by intervals, not bare percentages."""

from __future__ import annotations

import copy
import random

import numpy as np

from canary_runner.compare.stats import bootstrap_change, trend

from .conftest import ENV, make_record


def times(n, level, noise, seed, warmup=5, spikes=()):
    rng = random.Random(seed)
    out = [level * (1 + noise * rng.gauss(0, 1)) for _ in range(n)]
    for i in spikes:
        out[i] *= 4
    return out


def test_bootstrap_interval_covers_no_change_and_finds_a_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(1.0, 0.05, 200)
    b = rng.normal(1.0, 0.05, 200)
    same = bootstrap_change([a], [b], "median")
    assert same.relative_ci[0] < 0 < same.relative_ci[1]
    slow = bootstrap_change([a], [b * 1.3], "median", rank_test=True)
    assert 0.25 < slow.relative_ci[0] < slow.relative < slow.relative_ci[1] < 0.35
    assert slow.p_value < 1e-6
    again = bootstrap_change([a], [b * 1.3], "median")
    assert again.relative_ci == slow.relative_ci  # seeded: the same inputs give the same verdict


def test_repeats_carry_run_to_run_noise_into_the_interval():
    rng = np.random.default_rng(2)
    base = [rng.normal(1.0, 0.02, 50)]
    # three current runs: one on a noisy neighbour's time slice
    cur = [rng.normal(1.0, 0.02, 50), rng.normal(1.0, 0.02, 50), rng.normal(1.4, 0.02, 50)]
    pooled = bootstrap_change(base, [np.concatenate(cur)], "median")
    hier = bootstrap_change(base, cur, "median")
    width = lambda c: c.relative_ci[1] - c.relative_ci[0]  # noqa: E731
    assert width(hier) > 3 * width(pooled)


def test_theil_sen_trend_on_a_short_run():
    steps = list(range(1, 11))
    up = [1.0 + 0.1 * s + (0.3 if s == 4 else 0) for s in steps]
    tr = trend(steps, up)
    assert abs(tr.slope - 0.1) < 0.02 and tr.slope_ci[0] > 0
    assert trend(steps[:4], up[:4]) is None


def test_a_real_slowdown_fails_and_noise_passes(compare, record_dir):
    base = record_dir("base", series={"step_time_s": times(40, 0.02, 0.05, 1)}, steps=40)
    same = record_dir("same", series={"step_time_s": times(40, 0.02, 0.05, 2)}, steps=40)
    slow = record_dir("slow", series={"step_time_s": times(40, 0.03, 0.05, 3)}, steps=40)
    r = compare(same, base)
    assert r.code == 0 and r.status("perf.step_time") == "pass"
    r = compare(slow, base)
    assert r.code == 1 and r.status("perf.step_time") == "fail"
    c = r.check("perf.step_time")
    assert 0.4 < c["change"] < 0.6 and c["ci"][0] > 0.2 and c["threshold"] == 0.2
    assert r.status("perf.tokens_per_s") == "fail"
    assert r.check("perf.tokens_per_s")["direction"] == "higher_is_better"
    assert r.check("perf.tokens_per_s")["change"] < -0.3
    assert any("Every step got slower" in d["cause"] for d in r.doc["diagnosis"])


def test_a_crossing_the_interval_does_not_clear_warns(compare, record_dir):
    base = record_dir("base", series={"step_time_s": times(12, 0.02, 0.25, 1)}, steps=12)
    cur = record_dir("cur", series={"step_time_s": times(12, 0.026, 0.25, 1)}, steps=12)
    r = compare(cur, base)
    c = r.check("perf.step_time")
    assert c["change"] > 0.2 and c["ci"][0] < 0.2
    assert c["status"] == "warn" and "not conclusive" in c["reason"]
    assert r.doc["verdict"] == "warn" and r.code == 0


def test_thresholds_file_and_inline_config_override_the_tier(compare, record_dir, tmp_path):
    base = record_dir("base", series={"step_time_s": times(40, 0.02, 0.02, 1)}, steps=40)
    rec = make_record(steps=40, series={"step_time_s": times(40, 0.023, 0.02, 2)},
                      overrides=("thresholds.checks.perf.step_time.relative=0.05",), run_id="cur")
    cur = record_dir("cur", rec)
    r = compare(cur, base)
    assert r.status("perf.step_time") == "fail"
    assert r.doc["thresholds_source"][-1] == "config:dpo_embedded#thresholds"
    th = tmp_path / "th.yaml"
    th.write_text("checks:\n  perf.step_time: {relative: 0.5}\n  perf.tokens_per_s: {enabled: false}\n")
    r = compare(cur, base, "--thresholds", th)
    assert r.status("perf.step_time") == "pass" and r.check("perf.step_time")["threshold"] == 0.5
    assert r.status("perf.tokens_per_s") == "skip"
    assert r.doc["thresholds_source"][-1] == f"file:{th}"


def test_different_hardware_turns_performance_failures_into_warnings(compare, record_dir):
    env = copy.deepcopy(ENV)
    env["hardware_key"] = "nvidia-h100-x1"
    base = record_dir("base", series={"step_time_s": times(40, 0.02, 0.02, 1)}, steps=40, env=env)
    cur = record_dir("cur", series={"step_time_s": times(40, 0.04, 0.02, 2)}, steps=40)
    r = compare(cur, base)
    assert r.status("perf.step_time") == "warn" and "different hardware" in r.check("perf.step_time")["reason"]
    assert r.status("environment.hardware") == "warn"
    assert r.doc["environment"]["same_hardware"] is False
    assert {"field": "hardware_key", "baseline": "nvidia-h100-x1", "current": "cpu-test-2c"} in \
        r.doc["environment"]["changes"]
    assert r.code == 0 and r.doc["verdict"] == "warn"
    assert any("different hardware" in d["cause"] for d in r.doc["diagnosis"])


def test_library_change_is_listed_and_diagnosed(compare, record_dir):
    env = copy.deepcopy(ENV)
    env["packages"]["transformers"] = "5.23.0"
    base = record_dir("base", series={"step_time_s": times(40, 0.02, 0.02, 1)}, steps=40, env=env)
    cur = record_dir("cur", series={"step_time_s": times(40, 0.03, 0.02, 2)}, steps=40)
    r = compare(cur, base)
    assert r.status("environment.stack") == "warn"
    assert "transformers 5.23.0 -> 5.24.0" in r.check("environment.stack")["reason"]
    causes = r.doc["diagnosis"]
    lib = next(d for d in causes if d["cause"].startswith("Library versions changed"))
    assert "perf.step_time" in lib["checks"] and "transformers 5.23.0 -> 5.24.0" in lib["evidence"]
    assert any("pip install transformers==5.23.0" in s for s in lib["next_steps"])


def test_generation_slowdown_is_attributed_to_generation(compare, record_dir):
    n = 30
    gen_b, upd_b = times(n, 0.030, 0.03, 1), times(n, 0.010, 0.03, 2)
    gen_c, upd_c = times(n, 0.060, 0.03, 3), times(n, 0.010, 0.03, 4)
    series_b = {"generation_time_s": gen_b, "update_time_s": upd_b,
                "step_time_s": [g + u for g, u in zip(gen_b, upd_b)]}
    series_c = {"generation_time_s": gen_c, "update_time_s": upd_c,
                "step_time_s": [g + u for g, u in zip(gen_c, upd_c)]}
    r = compare(record_dir("cur", training_type="grpo", series=series_c, steps=n),
                record_dir("base", training_type="grpo", series=series_b, steps=n))
    assert r.status("perf.phase.generation") == "fail" and r.status("perf.phase.update") == "pass"
    top = r.doc["diagnosis"][0]
    assert top["cause"].startswith("Generation (sampling and reward scoring) slowed")
    assert any("generation time per step +" in e for e in top["evidence"])


def test_more_tokens_per_step_is_told_apart_from_a_slower_step(compare, record_dir):
    base = record_dir("base", series={"step_time_s": times(40, 0.02, 0.02, 1)}, steps=40)
    cur = record_dir("cur", series={"step_time_s": times(40, 0.04, 0.02, 2), "tokens": [1000] * 40}, steps=40)
    r = compare(cur, base)
    assert r.status("perf.step_time") == "fail" and r.status("perf.tokens_per_s") == "pass"
    assert any(d["cause"].startswith("More work per step") for d in r.doc["diagnosis"])


def test_memory_needs_both_limits_and_has_an_absolute_ceiling(compare, record_dir, tmp_path):
    base = record_dir("base")
    small = record_dir("small", series={"mem_rss_anon_mb": [345.0 + 0.1 * i for i in range(30)]})
    big = record_dir("big", series={"mem_rss_anon_mb": [340.0 + 5 * i for i in range(30)]})
    r = compare(small, base)
    assert r.status("memory.cpu_rss_anon_peak") == "pass"  # +5 MB: under the 32 MB floor
    r = compare(big, base)
    assert r.status("memory.cpu_rss_anon_peak") == "fail"
    assert r.status("memory.cpu_rss_anon_rise") == "fail"
    assert r.check("memory.cpu_rss_anon_peak")["unit"] == "MB"
    mem = next(d for d in r.doc["diagnosis"] if "Memory" in d["cause"])
    assert "batch shape unchanged" in " ".join(mem["evidence"])
    assert "keeps rising during the run" in " ".join(mem["evidence"])
    th = tmp_path / "th.yaml"
    th.write_text("checks:\n  memory.cpu_rss_anon_peak: {max: 300}\n")
    r = compare(base, "--no-baseline", "--thresholds", th)
    assert r.status("memory.cpu_rss_anon_peak") == "fail" and "above the limit 300" in \
        r.check("memory.cpu_rss_anon_peak")["reason"]
    assert r.doc["verdict"] == "fail"


def test_cuda_memory_per_device(compare, record_dir):
    def cuda(alloc):
        return {"mem_cuda_max_allocated_mb": [alloc] * 30, "mem_cuda_max_reserved_mb": [alloc + 100] * 30}
    base = record_dir("base", series=cuda(1000.0))
    cur = record_dir("cur", series=cuda(1400.0))
    r = compare(cur, base)
    assert r.status("memory.cuda_max_allocated.cuda:0") == "fail"
    assert r.status("memory.cuda_max_reserved.cuda:0") == "fail"
    c = r.check("memory.cuda_max_allocated.cuda:0")
    assert c["baseline"] == 1000.0 and c["current"] == 1400.0


def test_no_baseline_still_runs_the_baseline_free_checks(compare, record_dir):
    r = compare(record_dir("cur"), "--no-baseline")
    assert r.code == 0 and r.doc["verdict"] == "no-baseline" and r.doc["baseline"] is None
    assert r.status("perf.step_time") == "skip"
    for cid in ("run.status", "stability.nan_inf", "stability.loss_divergence", "invariant.dpo.initial_loss"):
        assert r.status(cid) != "skip", cid
    r = compare(record_dir("cur2"))  # no baseline given at all
    assert r.doc["verdict"] == "no-baseline"


def test_with_repeats_the_run_is_the_unit_and_one_run_says_its_interval_is_step_noise(compare, record_dir):
    # Two runs a side, each very steady within itself, whose levels differ from run to run by ~10%: the
    # steps of one run are not independent samples of that, so the interval comes from the run medians.
    base = [record_dir(f"b{i}", series={"step_time_s": times(40, lvl, 0.01, i)}, steps=40)
            for i, lvl in enumerate((0.020, 0.022))]
    cur = [record_dir(f"c{i}", series={"step_time_s": times(40, lvl, 0.01, 10 + i)}, steps=40)
           for i, lvl in enumerate((0.021, 0.023))]
    r = compare(cur[0], *base, "--current", cur[1])
    c = r.check("perf.step_time")
    assert c["details"]["unit"] == "run" and "interval over runs (2 baseline, 2 current)" in c["reason"], c["reason"]
    assert c["ci"][1] - c["ci"][0] > 0.08, c["ci"]  # spans the run-to-run spread, not the 1% step noise
    one = compare(cur[0], base[0]).check("perf.step_time")
    assert one["details"]["unit"] == "step" and "step-to-step noise only" in one["reason"], one["reason"]
    assert one["ci"][1] - one["ci"][0] < 0.03  # the same data seen one run a side: a falsely narrow interval


def test_ab_decisions_replace_the_stored_baseline_step_time_and_every_device_memory_check(record_dir):
    # Controlled GPU-like records: a per-device peak series gives memory.cuda_max_allocated.cuda:0.
    from canary_runner.compare import engine
    from canary_runner.compare.loading import load_side
    from canary_runner.compare.settings import resolve

    gpu = {"mem_cuda_max_allocated_mb": [1000.0 + i for i in range(30)], "mem_cuda_max_reserved_mb": [1200.0] * 30}
    base, cur = record_dir("base", series=gpu), record_dir("cur", series=gpu)
    ab = {"mode": "ab", "decisions": {m: {"ratios": [1.0, 1.0, 1.0], "threshold": 0.05, "state": "pass", "pairs": 3,
                                          "change": 0.0, "ci": [-0.01, 0.01], "level": 0.99}
                                      for m in ("step_time", "memory")},
          "per_run": {"base": [{"step_time": 0.02, "memory": 1029.0}] * 3, "head": [{"step_time": 0.02, "memory": 1029.0}] * 3}}
    doc = engine.compare(load_side([str(cur)], "current"), load_side([str(base)], "baseline"), resolve("smoke"), ab=ab)
    ids = [c["id"] for c in doc["checks"]]
    assert "memory.cuda_max_allocated.cuda:0" not in ids and "perf.step_time" in ids and "memory.peak" in ids, ids
    assert next(c for c in doc["checks"] if c["id"] == "perf.step_time")["reason"].startswith("A/B on this runner")
    assert "memory.cuda_max_reserved.cuda:0" in ids  # reserved memory is not what A/B decides: still checked
