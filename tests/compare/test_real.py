"""Verdicts on runs trained for real on the embedded model (trained once per session, shared).

Other processes share the CI machine, so timing assertions use wide margins: the injected slowdown
(gradient checkpointing on DPO) is several times the step time, and A/A uses repeats on both sides,
trained interleaved, so a burst of load on the machine lands on both sides.
"""

from __future__ import annotations

import pytest

from canary_runner.thresholds import load_thresholds

DET = "train.deterministic=true"


@pytest.fixture(scope="session")
def dpo_aa(trained):
    """Two baseline and two current DPO runs of one config, trained alternately."""
    order = [("base-1", "b"), ("cur-1", "c"), ("base-2", "b"), ("cur-2", "c")]
    paths = {key: trained(f"dpo-aa-{key}", "dpo_embedded", DET) for key, _ in order}
    return [paths["cur-1"], paths["cur-2"]], [paths["base-1"], paths["base-2"]]


@pytest.fixture(scope="session")
def ppo_base(trained):
    return trained("ppo-base", "ppo_embedded")


def test_identical_reruns_pass(compare, dpo_aa):
    (c1, c2), (b1, b2) = dpo_aa
    r = compare(c1, b1, b2, "--current", c2)
    assert r.code == 0, r.out
    assert r.doc["verdict"] in ("pass", "warn"), r.out
    assert not r.failing()
    # everything but timing is exactly reproducible here
    timing = [c for c in r.doc["checks"] if c["status"] == "warn" and c["category"] != "performance"]
    assert not timing, timing
    assert r.status("correctness.loss_curve") == "pass"
    assert r.status("correctness.reward_curve") == "pass"
    det = r.check("correctness.deterministic")
    assert det["status"] == "pass" and det["details"]["bitwise_identical"], det["reason"]
    for cid in ("invariant.dpo.initial_loss", "stability.nan_inf", "stability.loss_divergence",
                "stability.grad_norm", "stability.collapse", "stability.learning", "rl.dpo.reward_accuracy", "rl.dpo.margins", "memory.cpu_rss_anon_peak"):
        assert r.status(cid) == "pass", (cid, r.check(cid)["reason"])
    assert r.doc["current"]["runs"] == 2 and r.doc["baseline"]["runs"] == 2


def test_checkpointing_and_a_bigger_batch_fail_on_step_time(compare, trained, dpo_aa):
    # Gradient checkpointing alone costs this tiny model ~20-40% per step: within smoke noise. With the
    # batch doubled as well, each step does twice the work and recomputes activations: 2x+ step time.
    _, base = dpo_aa
    slow = trained("dpo-slow", "dpo_embedded", DET, "train.gradient_checkpointing=true",
                   "train.per_device_batch_size=16")
    r = compare(slow, *base)
    assert r.code == 1
    step = r.check("perf.step_time")
    assert step["status"] == "fail", step["reason"]
    assert step["ci"][0] > 0.2, step["reason"]
    top = r.doc["diagnosis"][0]
    assert top["cause"].startswith("The config changed a performance lever"), r.doc["diagnosis"]
    assert "perf.step_time" in top["checks"]
    evidence = " ".join(top["evidence"])
    assert "train.gradient_checkpointing: False -> True" in evidence
    assert "train.per_device_batch_size: 8 -> 16" in evidence and "tokens per step" in evidence


def test_learning_rate_that_produces_nan_fails_stability(compare, trained, dpo_aa):
    _, base = dpo_aa
    nan = trained("dpo-nan", "dpo_embedded", DET, "train.learning_rate=1e30")
    r = compare(nan, *base)
    assert r.code == 1
    c = r.check("stability.nan_inf")
    assert c["status"] == "fail" and c["step"] == 2
    assert r.doc["diagnosis"][0]["cause"].startswith("The learning rate was raised")
    assert r.check("correctness.loss_curve")["step"] == 2
    r = compare(nan, "--no-baseline")
    assert r.doc["verdict"] == "fail" and r.code == 1


def test_ppo_rerun_passes(compare, trained, ppo_base):
    rerun = trained("ppo-rerun", "ppo_embedded")
    r = compare(rerun, ppo_base)
    bad = [c["id"] for c in r.doc["checks"] if c["status"] in ("fail", "warn") and c["category"] != "performance"]
    assert not bad, r.out
    assert r.status("invariant.ppo.first_minibatch") == "pass"
    assert r.status("correctness.loss_curve") == "pass"
    assert r.status("correctness.reward_curve") == "pass"


def test_ppo_kl_blow_up_with_a_weak_kl_penalty_is_flagged(compare, trained, ppo_base):
    blow = trained("ppo-kl", "ppo_embedded", "ppo.kl_coef=0", "train.learning_rate=1e-2")
    r = compare(blow, ppo_base)
    assert r.code == 1
    assert r.status("rl.ppo.kl") == "fail", r.check("rl.ppo.kl")["reason"]
    assert r.status("rl.ppo.kl_growth") == "fail"
    assert r.check("rl.ppo.kl")["current"] > 10
    kl = next(d for d in r.doc["diagnosis"] if "KL" in d["cause"])
    assert "ppo.kl_coef 0.02 -> 0.0" in kl["cause"]
    # without a baseline the absolute KL limit still catches it
    r = compare(blow, "--no-baseline")
    assert r.status("rl.ppo.kl") == "fail" and r.doc["verdict"] == "fail"


def test_embedded_grpo_passes_its_baseline_free_checks(compare, trained):
    run = trained("grpo", "grpo_embedded")
    r = compare(run, "--no-baseline")
    assert r.code == 0 and r.doc["verdict"] == "no-baseline", r.out
    assert r.doc["metrics"]["completions/clipped_ratio"]["current"] > 0.5  # the untrained model never stops
    assert r.status("invariant.grpo.first_clip") == "pass"
    assert r.status("rl.grpo.kl") == "pass"
    assert {"loss", "reward", "kl"} <= set(r.doc["curves"])


def test_calibrate_writes_thresholds_that_compare_accepts(tmp_path, capsys, compare, dpo_aa):
    from canary_runner.cli import main as canary_main

    import torch

    out = tmp_path / "thresholds.yaml"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest.trained: robust timing on a shared machine
    try:
        code = canary_main(["calibrate", "dpo_embedded", "--runs", "2", "-o", str(out),
                            "--set", "train.max_steps=8", "--set", "train.warmup_steps=2"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err
    th = load_thresholds(out)
    assert th.checks["perf.step_time"].relative >= 0.02
    assert "memory.cpu_rss_anon_peak" in th.checks
    text = out.read_text()
    assert "largest A/A change" in text and "1.5 x the largest difference" in text
    (c1, _), (b1, _) = dpo_aa
    r = compare(c1, b1, "--thresholds", out)
    assert r.code in (0, 1) and r.doc["thresholds_source"][-1] == f"file:{out}"


def test_calibrate_bad_input(capsys):
    from canary_runner.cli import main as canary_main

    assert canary_main(["calibrate", "dpo_embedded", "--runs", "1"]) == 2
    assert "at least 2 runs" in capsys.readouterr().err
    assert canary_main(["calibrate", "no_such_config.yaml", "--runs", "2"]) == 2
    assert "config file not found" in capsys.readouterr().err


# -- broken without a NaN: a config difference excuses a curve's shape, not an unhealthy run ------------


def test_a_collapsed_sft_run_fails_whatever_the_config_says(compare, broken):
    r = compare(broken("sft-collapse"), broken("sft-base"))
    assert r.code == 1 and r.doc["verdict"] == "fail"
    c = r.check("stability.collapse")
    assert c["status"] == "fail" and c["step"] == 2, c["reason"]
    assert "a uniform distribution over ~512 tokens" in c["reason"] and "gradient norm is 0" in c["reason"]
    assert r.status("stability.nan_inf") == "pass"  # every value is finite
    assert r.status("correctness.loss_curve") == "warn"  # the curve's shape is excused by the config
    assert r.doc["diagnosis"][0]["cause"] == \
        "The learning rate was raised (0.001 -> 1000) and training collapsed (no NaN)"
    r = compare(broken("sft-collapse"), "--no-baseline")
    assert r.status("stability.collapse") == "fail" and r.code == 1


def test_runs_that_do_not_learn_fail_whatever_the_config_says(compare, broken, dpo_aa):
    r = compare(broken("sft-low-lr"), broken("sft-base"))
    assert r.code == 1 and r.status("stability.learning") == "fail", r.check("stability.learning")["reason"]
    assert r.status("stability.collapse") == "pass"
    assert r.doc["diagnosis"][0]["cause"].startswith("The learning rate was lowered (0.001 -> 1e-06")
    assert compare(broken("sft-low-lr"), "--no-baseline").status("stability.learning") == "fail"
    _, base = dpo_aa
    r = compare(broken("dpo-no-gradient"), *base)
    c = r.check("stability.learning")
    assert c["status"] == "fail" and "no signal learned 25% of the baseline's progress" in c["reason"], c["reason"]
    # a loss without gradient leaves every parameter where it was: a frozen policy, named by the config field
    assert r.doc["diagnosis"][0]["kind"] == "frozen_policy"
    assert r.doc["diagnosis"][0]["cause"] == \
        "The parameters do not move since dpo.extra_args.label_smoothing: None -> 0.5"
    assert compare(broken("dpo-no-gradient"), "--no-baseline").status("stability.learning") == "fail"
    # the healthy baseline passes both without a baseline of its own
    r = compare(broken("sft-base"), "--no-baseline")
    assert r.doc["verdict"] == "no-baseline" and r.code == 0, r.out


def test_a_run_stopped_at_step_11_is_compared_only_where_both_sides_have_steps(compare, dpo_stopped, dpo_aa):
    _, base = dpo_aa
    r = compare(dpo_stopped, *base)
    assert r.doc["current"]["steps_completed"] == 11
    for cid in ("rl.dpo.margins", "rl.dpo.reward_accuracy"):
        c = r.check(cid)
        assert c["status"] == "skip" and c["reason"] == "not compared: run stopped at step 11/30", c["reason"]
    assert r.status("stability.learning") == "pass"  # steps 1-11 on both sides
    # the curves compare the steps both have: 1-10 (the crash came before step 11's loss was logged)
    assert r.check("correctness.loss_curve")["details"]["steps_compared"] == 10
    bad = [c["id"] for c in r.doc["checks"] if c["status"] == "fail" and c["category"] != "performance"]
    assert bad == ["run.status"], r.out
    assert r.doc["diagnosis"][0]["cause"] == "The run crashed (RuntimeError)"
    assert not any("Preference learning" in d["cause"] for d in r.doc["diagnosis"]), r.doc["diagnosis"]
