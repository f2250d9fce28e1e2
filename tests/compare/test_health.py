"""Stability, RL health, invariants and curve correctness on controlled per-step series."""

from __future__ import annotations

import math

import pytest

from .conftest import make_record

NAN = float("nan")


def test_nan_in_grad_norm_first_is_diagnosed_as_gradient_overflow(compare, record_dir):
    grad = [1.0] * 30
    loss = [0.7 - 0.005 * i for i in range(30)]
    grad[5] = 8.0            # an oversized update ...
    grad[6] = float("inf")   # ... then the backward overflows at step 7 while the loss is still finite
    for i in range(7, 30):
        grad[i] = NAN
        loss[i] = NAN
    r = compare(record_dir("cur", series={"grad_norm": grad, "loss": loss}), record_dir("base"))
    assert r.code == 1
    c = r.check("stability.nan_inf")
    assert c["status"] == "fail" and c["step"] == 7 and "grad_norm" in c["reason"]
    top = r.doc["diagnosis"][0]
    assert top["cause"] == "Gradients overflowed at step 7 (the loss was still finite)"
    ev = " ".join(top["evidence"])
    assert "8.0x the median before it" in ev and "the baseline is finite at every step" in ev


def test_nan_in_any_logged_metric_fails_without_a_baseline(compare, record_dir):
    margins = [0.01 * i for i in range(30)]
    margins[20] = NAN
    r = compare(record_dir("cur", series={"rewards/margins": margins}), "--no-baseline")
    assert r.doc["verdict"] == "fail" and r.code == 1
    assert r.check("stability.nan_inf")["step"] == 21


@pytest.mark.parametrize("loss, status", [
    ([0.69 + 0.03 * i for i in range(10)], "fail"),                          # rises from the start
    ([0.69 - 0.01 * i + (0.02 if i % 2 else -0.02) for i in range(10)], "pass"),  # noisy but falling
    ([6.0 - 0.5 * i for i in range(6)] + [3.5 + 0.6 * i for i in range(6)], "fail"),  # gives back its progress
])
def test_loss_divergence_on_short_runs(compare, record_dir, loss, status):
    n = len(loss)
    r = compare(record_dir("cur", series={"loss": loss}, steps=n, warmup=2), "--no-baseline")
    assert r.status("stability.loss_divergence") == status, r.check("stability.loss_divergence")["reason"]


def test_loss_divergence_is_not_applied_to_grpo(compare, record_dir):
    r = compare(record_dir("cur", training_type="grpo", series={"loss": [0.0, 0.02, 0.0] * 10}), "--no-baseline")
    assert r.status("stability.loss_divergence") == "skip" and "~0 by design" in \
        r.check("stability.loss_divergence")["reason"]


def test_grad_norm_explosion_fails_but_a_recovered_spike_does_not(compare, record_dir):
    grow = [1.0 * 1.25 ** i for i in range(30)]
    r = compare(record_dir("grow", series={"grad_norm": grow}), "--no-baseline")
    assert r.status("stability.grad_norm") == "fail" and "exploded" in r.check("stability.grad_norm")["reason"]
    spike = [1.0] * 30
    spike[12] = 80.0
    r = compare(record_dir("spike", series={"grad_norm": spike}), "--no-baseline")
    c = r.check("stability.grad_norm")
    assert c["status"] == "pass" and "spike at step 13" in c["reason"]


# -- RL invariants ---------------------------------------------------------------------------------------


def test_dpo_loss_is_ln2_at_step_one(compare, record_dir):
    good = [math.log(2)] + [0.6] * 29
    r = compare(record_dir("good", series={"loss": good}), "--no-baseline")
    assert r.status("invariant.dpo.initial_loss") == "pass"
    bad = [0.75] + [0.6] * 29
    r = compare(record_dir("bad", series={"loss": bad}), "--no-baseline")
    c = r.check("invariant.dpo.initial_loss")
    assert c["status"] == "fail" and c["step"] == 1 and abs(c["baseline"] - math.log(2)) < 1e-12
    assert any("reference disagree" in d["cause"] for d in r.doc["diagnosis"])


def test_dpo_initial_loss_follows_the_loss_type(compare, record_dir):
    beta = 0.1
    ipo = [1 / (4 * beta * beta)] + [20.0] * 29
    r = compare(record_dir("ipo", series={"loss": ipo}, overrides=("dpo.loss_type=ipo",)), "--no-baseline")
    assert r.status("invariant.dpo.initial_loss") == "pass"
    r = compare(record_dir("exo", overrides=("dpo.loss_type=exo_pair",)), "--no-baseline")
    assert r.status("invariant.dpo.initial_loss") == "skip"


def test_ppo_importance_ratio_and_clipping_at_step_one(compare, record_dir):
    ok = {"val/ratio": [1.0] * 30, "policy/clipfrac_avg": [0.0] * 30}
    assert compare(record_dir("ok", training_type="ppo", series=ok), "--no-baseline") \
        .status("invariant.ppo.first_minibatch") == "pass"
    bad = {"val/ratio": [1.3] + [1.0] * 29, "policy/clipfrac_avg": [0.4] + [0.0] * 29}
    r = compare(record_dir("bad", training_type="ppo", series=bad), "--no-baseline")
    c = r.check("invariant.ppo.first_minibatch")
    assert c["status"] == "fail" and "importance ratio 1.3" in c["reason"] and "clip fraction 0.4" in c["reason"]
    many = record_dir("many", training_type="ppo", series=bad, overrides=("ppo.num_mini_batches=4",))
    assert compare(many, "--no-baseline").status("invariant.ppo.first_minibatch") == "skip"


def test_grpo_clip_ratio_at_step_one(compare, record_dir):
    clip = {"clip_ratio/region_mean": [0.3] + [0.0] * 29}
    r = compare(record_dir("cur", training_type="grpo", series=clip), "--no-baseline")
    assert r.status("invariant.grpo.first_clip") == "fail"


# -- RL health -------------------------------------------------------------------------------------------


def ppo_series(kl, entropy, clip=0.0, value=0.01):
    n = len(kl)
    return {"objective/kl": kl, "policy/entropy_avg": entropy, "policy/clipfrac_avg": [clip] * n,
            "loss/value_avg": [value] * n, "val/ratio": [1.0] * n, "objective/scores": [0.0] * n}


def test_ppo_kl_blow_up_and_entropy_collapse(compare, record_dir):
    n = 20
    base = record_dir("base", training_type="ppo", steps=n, warmup=3,
                      series=ppo_series([0.01 * (i % 3) for i in range(n)], [6.2] * n))
    kl = [0.5 * i * i / 10 for i in range(n)]
    ent = [6.2 - 0.25 * i for i in range(n)]
    cur = record_dir("cur", training_type="ppo", steps=n, warmup=3, series=ppo_series(kl, ent))
    r = compare(cur, base)
    for cid in ("rl.ppo.kl", "rl.ppo.kl_growth", "rl.ppo.entropy", "rl.ppo.entropy_collapse"):
        assert r.status(cid) == "fail", (cid, r.check(cid)["reason"])
    assert r.status("rl.ppo.clipfrac") == "pass"
    assert any("KL blow-up" in d["cause"] for d in r.doc["diagnosis"])


def test_ppo_value_loss_explosion(compare, record_dir):
    n = 20
    value = [0.01] * 10 + [0.01 * 3 ** i for i in range(10)]
    r = compare(record_dir("cur", training_type="ppo", steps=n, warmup=3,
                           series=ppo_series([0.0] * n, [6.2] * n, value=0.0) | {"loss/value_avg": value}),
                "--no-baseline")
    assert r.status("rl.ppo.value_loss_explosion") == "fail"
    assert r.check("rl.ppo.value_loss_explosion")["step"] == 20


def grpo_series(n, reward_std, clipped=1.0, length=16.0, zero=0.0):  # KL 0 at step 1: invariant.grpo.initial_kl
    return {"reward": [0.5] * n, "reward_std": reward_std, "frac_reward_zero_std": [zero] * n,
            "kl": [0.0] + [0.001] * (n - 1), "clip_ratio/region_mean": [0.0] * n, "completions/mean_length": [length] * n,
            "completions/clipped_ratio": [clipped] * n, "loss": [0.0] * n}


def test_grpo_always_truncated_completions_do_not_fail_by_default(compare, record_dir, tmp_path):
    n = 20
    cur = record_dir("cur", training_type="grpo", steps=n, warmup=3, series=grpo_series(n, [0.2] * n))
    r = compare(cur, "--no-baseline")
    assert r.doc["verdict"] == "no-baseline" and r.status("rl.grpo.truncation") == "skip"
    th = tmp_path / "th.yaml"
    th.write_text("checks:\n  rl.grpo.truncation: {max: 0.5}\n")
    r = compare(cur, "--no-baseline", "--thresholds", th)
    assert r.status("rl.grpo.truncation") == "fail"


def test_grpo_reward_std_collapse_and_length_blow_up(compare, record_dir):
    n = 20
    base = record_dir("base", training_type="grpo", steps=n, warmup=3,
                      series=grpo_series(n, [0.2 + 0.01 * (i % 3) for i in range(n)], length=10.0, clipped=0.1))
    cur = record_dir("cur", training_type="grpo", steps=n, warmup=3,
                     series=grpo_series(n, [0.2] * 5 + [0.0] * 15, length=16.0, clipped=1.0, zero=0.95))
    r = compare(cur, base)
    for cid in ("rl.grpo.reward_std", "rl.grpo.zero_std_fraction", "rl.grpo.completion_length",
                "rl.grpo.truncation"):
        assert r.status(cid) == "fail", (cid, r.check(cid)["reason"])
    assert r.status("rl.grpo.reward") == "pass"


def test_dpo_accuracy_and_margin_drop(compare, record_dir):
    base = record_dir("base", series={"rewards/accuracies": [0.5] * 10 + [0.9] * 20,
                                      "rewards/margins": [0.05 * i for i in range(30)]})
    cur = record_dir("cur", series={"rewards/accuracies": [0.5] * 30, "rewards/margins": [0.001 * i for i in range(30)]})
    r = compare(cur, base)
    assert r.status("rl.dpo.reward_accuracy") == "fail" and r.status("rl.dpo.margins") == "fail"
    assert any("Preference learning weakened" in d["cause"] for d in r.doc["diagnosis"])


# -- correctness -----------------------------------------------------------------------------------------


def test_curves_that_diverge_at_step_k_report_k(compare, record_dir):
    loss = [0.7 * math.exp(-i / 40) for i in range(30)]
    moved = loss[:11] + [v * 1.3 for v in loss[11:]]
    r = compare(record_dir("cur", series={"loss": moved}), record_dir("base"))
    c = r.check("correctness.loss_curve")
    assert c["status"] == "fail" and c["step"] == 12
    assert "step 12" in c["reason"] and c["details"]["steps_outside"] == 19
    top = next(d for d in r.doc["diagnosis"] if "departs" in d["cause"])
    assert top["cause"] == "Training departs from the baseline at step 12"
    assert r.status("correctness.reward_curve") == "skip"  # the synthetic record logs no margins


def test_curve_departure_with_a_changed_config_only_warns(compare, record_dir):
    loss = [0.7 * math.exp(-i / 40) for i in range(30)]
    moved = loss[:4] + [v * 1.5 for v in loss[4:]]
    r = compare(record_dir("cur", series={"loss": moved}, overrides=("train.learning_rate=0.01",)),
                record_dir("base"))
    c = r.check("correctness.loss_curve")
    assert c["status"] == "warn" and c["step"] == 5 and "configs differ (train.learning_rate)" in c["reason"]
    assert r.status("run.config") == "warn"


def test_curve_within_band_passes_and_other_seed_skips(compare, record_dir):
    loss = [0.7 * math.exp(-i / 40) * (1 + 0.01 * (-1) ** i) for i in range(30)]
    assert compare(record_dir("cur", series={"loss": loss}), record_dir("base")) \
        .status("correctness.loss_curve") == "pass"
    r = compare(record_dir("seed", overrides=("seed=7",)), record_dir("base2"))
    assert r.status("correctness.loss_curve") == "skip" and "different seeds" in \
        r.check("correctness.loss_curve")["reason"]


def test_deterministic_mode_requires_near_bitwise_equality(compare, record_dir):
    det = ("train.deterministic=true",)
    base = record_dir("base", overrides=det)
    same = record_dir("same", record=make_record(overrides=det, run_id="same"))
    r = compare(same, base)
    c = r.check("correctness.deterministic")
    assert c["status"] == "pass" and "bitwise identical" in c["reason"] and c["details"]["bitwise_identical"]
    loss = make_record()["series"]["loss"]
    tiny = [v + 1e-9 for v in loss]
    r = compare(record_dir("tiny", overrides=det, series={"loss": tiny}), base)
    c = r.check("correctness.deterministic")
    assert c["status"] == "pass" and "not bitwise" in c["reason"]
    off = list(loss)
    off[4] += 1e-3
    r = compare(record_dir("off", overrides=det, series={"loss": off}), base)
    c = r.check("correctness.deterministic")
    assert c["status"] == "fail" and c["step"] == 5 and c["metric"] == "loss"
    # the loose curve band still accepts it: only deterministic mode is exact
    assert r.status("correctness.loss_curve") == "pass"
    r = compare(record_dir("nondet"), base)
    assert r.status("correctness.deterministic") == "skip"


def test_crashed_current_run_fails_with_the_error(compare, record_dir):
    rec = make_record(steps=30, status="crashed",
                      error={"type": "RuntimeError", "message": "CUDA error: an illegal memory access",
                             "traceback": "...", "step": 12},
                      series={k: None for k in ()})
    for k, v in rec["series"].items():
        rec["series"][k] = v[:12]
    rec["run"]["steps_completed"] = 12
    from canary_runner import results
    rec["summary"] = results.summarize(rec["series"])
    r = compare(record_dir("cur", rec), record_dir("base"))
    assert r.code == 1 and r.doc["verdict"] == "fail"
    c = r.check("run.status")
    assert "crashed after 12/30 steps" in c["reason"] and "illegal memory access" in c["reason"]
    assert r.doc["current"]["status"] == "crashed" and r.doc["current"]["error"]["type"] == "RuntimeError"
    assert r.doc["diagnosis"][0]["cause"] == "The run crashed (RuntimeError)"
    r = compare(record_dir("cur2", rec), "--no-baseline")
    assert r.doc["verdict"] == "fail"


def test_timeout_is_a_failure(compare, record_dir):
    rec = make_record(status="timeout", error={"type": "Timeout", "message": "stopped after train.timeout_s=5s"})
    r = compare(record_dir("cur", rec), record_dir("base"))
    assert r.status("run.status") == "fail" and "timeout" in r.check("run.status")["reason"]
    assert r.doc["diagnosis"][0]["cause"] == "The run exceeded its time limit"


def test_run_that_crashed_before_its_first_step(compare, record_dir):
    rec = make_record(status="crashed", error={"type": "OutOfMemoryError", "message": "CUDA out of memory",
                                               "traceback": None, "step": None},
                      series={k: [] for k in ("step", "warmup", "step_time_s", "tokens", "loss", "grad_norm",
                                              "mem_rss_anon_mb", "learning_rate")})
    r = compare(record_dir("cur", rec), record_dir("base"))
    assert r.code == 1 and r.doc["verdict"] == "fail"
    assert "0/30 steps" in r.check("run.status")["reason"]
    assert r.doc["diagnosis"][0]["cause"] == "The run ran out of memory"
    ppo = make_record(training_type="ppo", status="crashed", error={"type": "RuntimeError", "message": "boom"},
                      series={k: [] for k in ("step", "warmup", "step_time_s", "tokens", "loss", "grad_norm",
                                              "mem_rss_anon_mb", "learning_rate")})
    r = compare(record_dir("ppo", ppo), "--no-baseline")
    assert r.doc["verdict"] == "fail"


def test_a_baseline_that_did_not_complete_warns(compare, record_dir):
    rec = make_record(status="interrupted", error={"type": "Interrupted", "message": "received SIGTERM"})
    r = compare(record_dir("cur"), record_dir("base", rec))
    assert r.status("run.baseline_status") == "warn" and "SIGTERM" in r.check("run.baseline_status")["reason"]
    assert r.doc["baseline"]["status"] == "interrupted"


def test_fields_a_newer_config_schema_added_are_not_a_config_change(compare, record_dir):
    old = make_record(run_id="old")
    old["config"]["train"].pop("gc_freeze")
    del old["config"]["thresholds"]
    r = compare(record_dir("cur"), record_dir("base", old))
    assert r.status("run.config") == "pass"
    paths = {d["path"]: d for d in r.doc["config_diff"]}
    assert paths["train.gc_freeze"]["absent"] == "baseline"
    lora = make_record(overrides=("model.lora.r=8",), run_id="lora")
    r = compare(record_dir("lora", lora), record_dir("base2"))
    assert r.status("run.config") == "warn" and "model.lora" in r.check("run.config")["reason"]


def test_curve_band_may_allow_a_share_of_stray_steps(compare, record_dir, tmp_path):
    loss = [0.7 * math.exp(-i / 40) for i in range(30)]
    stray = list(loss)
    stray[20] *= 1.5
    cur, base = record_dir("cur", series={"loss": stray}), record_dir("base")
    assert compare(cur, base).status("correctness.loss_curve") == "fail"
    th = tmp_path / "th.yaml"
    th.write_text("checks:\n  correctness.loss_curve: {max: 0.05}\n")
    r = compare(cur, base, "--thresholds", th)
    c = r.check("correctness.loss_curve")
    assert c["status"] == "pass" and c["step"] == 21 and "within the allowed 5%" in c["reason"]


# -- collapse and learning: failures without a NaN ---------------------------------------------------------

FALLING = [6.3 - 0.08 * i for i in range(30)]
RISING = [0.02 + 0.015 * i for i in range(30)]


@pytest.mark.parametrize("series, sign", [
    ({"loss": FALLING[:5] + [6.3e6] + FALLING[6:]}, "spiked to 6,300,000 at step 6"),  # even if it comes back
    ({"loss": FALLING[:3] + [6.2383] * 27}, "6.238 at every step from step 4 on"),
    ({"grad_norm": [1.5] * 3 + [0.0] * 27}, "gradient norm is 0 from step 4 on"),
    ({"mean_token_accuracy": RISING[:20] + [0.0] * 10}, "mean_token_accuracy is 0 at each of the last 8 steps"),
])
def test_each_sign_of_a_collapse_fails_without_a_baseline(compare, record_dir, series, sign):
    healthy = {"loss": FALLING, "mean_token_accuracy": RISING}
    r = compare(record_dir("cur", training_type="sft", series=healthy | series), "--no-baseline")
    c = r.check("stability.collapse")
    assert c["status"] == "fail" and sign in c["reason"], c["reason"]
    assert r.doc["verdict"] == "fail" and r.code == 1
    assert r.doc["diagnosis"][0]["cause"].startswith("Training collapsed")


def test_a_loss_pinned_at_the_entropy_is_a_uniform_output(compare, record_dir):
    level = math.log(512)
    series = {"loss": FALLING[:2] + [level] * 28, "entropy": [6.22] * 2 + [level] * 28}
    r = compare(record_dir("cur", training_type="sft", series=series), "--no-baseline")
    assert "a uniform distribution over ~512 tokens" in r.check("stability.collapse")["reason"]


def test_healthy_runs_and_a_recovered_grad_spike_are_not_a_collapse(compare, record_dir):
    grad = [0.3] * 30
    grad[10] = 70.0  # 230x: the embedded reward model does this and recovers
    r = compare(record_dir("cur", training_type="reward", series={"grad_norm": grad}), "--no-baseline")
    assert r.status("stability.collapse") == "pass", r.check("stability.collapse")["reason"]
    # GRPO's loss is ~0 by design: a flat loss is no sign there, dead gradients are
    grpo = grpo_series(20, [0.2] * 20)
    r = compare(record_dir("grpo", training_type="grpo", steps=20, warmup=3, series=grpo), "--no-baseline")
    assert r.status("stability.collapse") == "pass"
    dead = grpo | {"grad_norm": [1.0] * 5 + [0.0] * 15}
    r = compare(record_dir("dead", training_type="grpo", steps=20, warmup=3, series=dead), "--no-baseline")
    assert r.status("stability.collapse") == "fail"


def test_a_changed_config_does_not_excuse_a_collapse(compare, record_dir):
    series = {"loss": [6.29, 1.4e7] + [6.2383] * 28, "grad_norm": [2.3, 5e14] + [0.0] * 28}
    cur = record_dir("cur", training_type="sft", series=series, overrides=("train.learning_rate=1000",))
    r = compare(cur, record_dir("base", training_type="sft"))
    assert r.status("stability.collapse") == "fail" and r.doc["verdict"] == "fail"
    assert r.status("correctness.loss_curve") == "warn"  # the shape of the curve is excused, the run is not
    assert r.doc["diagnosis"][0]["cause"] == "The learning rate was raised (0.001 -> 1000) and training collapsed (no NaN)"


def test_a_run_that_does_not_learn_fails_with_or_without_a_baseline(compare, record_dir):
    flat = [6.29 + 0.01 * (-1) ** i for i in range(30)]
    cur = record_dir("cur", training_type="sft", series={"loss": flat}, overrides=("train.learning_rate=1e-06",))
    r = compare(cur, "--no-baseline")
    c = r.check("stability.learning")
    assert c["status"] == "fail" and "needs to fall 1%" in c["reason"], c["reason"]
    assert r.doc["verdict"] == "fail"
    r = compare(cur, record_dir("base", training_type="sft"))
    c = r.check("stability.learning")
    assert c["status"] == "fail" and "no signal learned 25% of the baseline's progress" in c["reason"], c["reason"]
    assert r.status("correctness.loss_curve") == "warn" and r.status("stability.collapse") == "pass"
    assert r.doc["diagnosis"][0]["cause"] == ("The learning rate was lowered (0.001 -> 1e-06, 1000x) and the "
                                              "model is not learning")


@pytest.mark.parametrize("share, status", [(0.1, "fail"), (0.4, "pass")])
def test_learning_is_judged_against_the_baselines_progress(compare, record_dir, share, status):
    base_loss = make_record()["series"]["loss"]
    drop = base_loss[0] - base_loss[-1]
    slow = [base_loss[0] - share * drop * i / 29 for i in range(30)]
    r = compare(record_dir("cur", series={"loss": slow}), record_dir("base"))
    c = r.check("stability.learning")
    assert c["status"] == status, c["reason"]
    assert c["details"]["signals"][0]["metric"] == "loss"


# -- runs that stopped early: compare only what both sides have ------------------------------------------


def stopped(record: dict, at: int, status: str = "crashed") -> dict:
    from canary_runner import results

    for k, v in record["series"].items():
        record["series"][k] = v[:at]
    record["run"]["steps_completed"] = at
    record["status"] = status
    record["error"] = {"type": "OutOfMemoryError", "message": "CUDA out of memory", "traceback": None, "step": at}
    record["summary"] = results.summarize(record["series"])
    return record


def test_late_windows_are_not_compared_with_a_run_that_stopped_early(compare, record_dir):
    dpo = {"rewards/accuracies": [0.5] * 10 + [0.9] * 20, "rewards/margins": [0.05 * i for i in range(30)]}
    base = record_dir("base", series=dpo)
    cur = record_dir("cur", stopped(make_record(series=dpo, run_id="cur"), 11))
    r = compare(cur, base)
    for cid in ("rl.dpo.margins", "rl.dpo.reward_accuracy"):
        c = r.check(cid)
        assert c["status"] == "skip" and c["reason"] == "not compared: run stopped at step 11/30", c
    assert r.status("stability.learning") == "pass"  # over steps 1-11 on both sides
    assert r.failing() == ["run.status"]
    assert r.doc["diagnosis"][0]["cause"] == "The run ran out of memory"
    assert not any("Preference learning" in d["cause"] for d in r.doc["diagnosis"])
    # the other way round: a baseline that stopped early
    r = compare(record_dir("full", series=dpo), record_dir("short", stopped(make_record(series=dpo, run_id="s"), 11)))
    assert r.check("rl.dpo.margins")["reason"] == "not compared: baseline stopped at step 11/30"
    assert r.doc["verdict"] == "warn" and not r.failing()


def _spreads(length_varies_at: int, format_varies_at: int, steps: int = 20) -> dict:
    """GRPO reward-function spreads: each function varies within a step at its first N steps only."""
    return {"rewards/length/std": [0.3 if i < length_varies_at else 0.0 for i in range(steps)],
            "rewards/format/std": [0.2 if i < format_varies_at else 0.0 for i in range(steps)],
            "reward": [0.5 + 0.01 * i for i in range(steps)], "reward_std": [0.3] * steps}


@pytest.mark.parametrize("base_format, cur_format, status", [
    (20, 20, "pass"),    # both score throughout
    (20, 0, "fail"),     # format scored at every step of the baseline and at none now: it broke
    (12, 0, "fail"),     # ... or at most of the baseline's steps
    (2, 0, "pass"),      # a reward the baseline earned at 2 steps of 20: another seed may never earn it
])
def test_a_reward_function_that_stopped_scoring(compare, record_dir, base_format, cur_format, status):
    kw = dict(training_type="grpo", steps=20, warmup=3)
    r = compare(record_dir("cur", series=_spreads(20, cur_format), **kw),
                record_dir("base", series=_spreads(20, base_format), **kw))
    c = r.check("rl.grpo.reward_func_collapse")
    assert c["status"] == status, c["reason"]
    if status == "fail":
        assert c["reason"].startswith("format gives every completion the same score at all 20 steps")


def test_a_constant_reward_function_only_warns_without_a_baseline(compare, record_dir):
    r = compare(record_dir("cur", series=_spreads(0, 20), training_type="grpo", steps=20, warmup=3), "--no-baseline")
    c = r.check("rl.grpo.reward_func_collapse")
    assert c["status"] == "warn" and "length gives every completion the same score" in c["reason"]
