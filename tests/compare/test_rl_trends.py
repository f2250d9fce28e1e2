"""Two-sided, scale-aware RL checks: a reward that stops improving (`rl.<type>.reward_trend`), a PPO
reward-model score that drops (`rl.ppo.reward`) and a PPO KL that rises further than the baseline's
(`rl.ppo.kl_growth`), each judged relative to the baseline's own rise, level and noise rather than
against a fixed floor. Controlled records give exact numbers; real runs of the shipped embedded configs
check the regressions that passed before (the KL penalty removed by config and by code, a reward drop of
1.0) and a rerun that must still pass.
"""

from __future__ import annotations

import random

from transformers import TrainerCallback


def _noisy(start: float, end: float, sd: float, n: int = 30, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [start + (end - start) * i / (n - 1) + rng.gauss(0, sd) for i in range(n)]


# -- reward trend ---------------------------------------------------------------------------------------


def test_a_reward_that_stops_improving_fails_against_the_baselines_rise(compare, record_dir):
    base = record_dir("base", training_type="grpo", series={"reward": _noisy(0.6, 0.8, 0.02)})
    flat = record_dir("flat", training_type="grpo", series={"reward": _noisy(0.6, 0.6, 0.02, seed=1)})
    r = compare(flat, base)
    c = r.check("rl.grpo.reward_trend")
    assert c["status"] == "fail", c["reason"]
    assert "the reward stopped improving" in c["reason"] and c["ci"][1] < c["threshold"]
    # a run that makes 60% of the baseline's progress still learns
    slower = record_dir("slower", training_type="grpo", series={"reward": _noisy(0.6, 0.72, 0.02, seed=2)})
    assert compare(slower, base).status("rl.grpo.reward_trend") == "pass"
    # nothing to compare with: the baseline's reward did not clearly rise, or there is no baseline
    noise = record_dir("noise", training_type="grpo", series={"reward": _noisy(0.6, 0.6, 0.02, seed=3)})
    c = compare(flat, noise).check("rl.grpo.reward_trend")
    assert c["status"] == "pass" and "did not clearly rise" in c["reason"], c["reason"]
    assert compare(flat, "--no-baseline").status("rl.grpo.reward_trend") == "skip"


# -- PPO reward level --------------------------------------------------------------------------------------


def test_a_ppo_score_drop_many_times_the_baselines_noise_fails(compare, record_dir):
    base = record_dir("base", training_type="ppo", series={"objective/scores": _noisy(-0.04, 0.1, 0.03)})
    drop = record_dir("drop", training_type="ppo", series={"objective/scores": _noisy(-1.04, -0.9, 0.03, seed=1)})
    r = compare(drop, base)
    c = r.check("rl.ppo.reward")
    assert c["status"] == "fail", c["reason"]
    assert "2 sd of the baseline's late objective/scores" in c["reason"]
    # a drop inside the baseline's own noise passes, though it is -40% of a level near 0
    near = record_dir("near", training_type="ppo", series={"objective/scores": _noisy(-0.08, 0.06, 0.03, seed=2)})
    c = compare(near, base).check("rl.ppo.reward")
    assert c["status"] == "pass", c["reason"]


# -- PPO KL growth -----------------------------------------------------------------------------------------


def test_ppo_kl_growth_is_relative_to_the_baselines_rise(compare, record_dir):
    base = record_dir("base", training_type="ppo", series={"objective/kl": _noisy(0.0, 5.0, 0.2)})
    # +80% more rise (4 nats, under the old fixed floor of 5 nats): the penalty no longer holds
    more = record_dir("more", training_type="ppo", series={"objective/kl": _noisy(0.0, 9.0, 0.2, seed=1)})
    c = compare(more, base).check("rl.ppo.kl_growth")
    assert c["status"] == "fail", c["reason"]
    assert "+30% of the baseline's rise" in c["reason"] and c["ci"][0] > c["threshold"]
    # +10%: within
    near = record_dir("near", training_type="ppo", series={"objective/kl": _noisy(0.0, 5.5, 0.2, seed=2)})
    assert compare(near, base).status("rl.ppo.kl_growth") == "pass"
    # small KL: the same +80% of a 0.05-nat rise fails too (no floor in nats hides it)
    base_small = record_dir("base-small", training_type="ppo", series={"objective/kl": _noisy(0.0, 0.05, 0.002)})
    more_small = record_dir("more-small", training_type="ppo",
                            series={"objective/kl": _noisy(0.0, 0.09, 0.002, seed=1)})
    assert compare(more_small, base_small).status("rl.ppo.kl_growth") == "fail"


# -- real runs ------------------------------------------------------------------------------------------------


class ZeroKLPenalty(TrainerCallback):
    """A code change that drops PPO's KL penalty with the config unchanged (ppo.kl_coef still 0.02 there):
    PPOTrainer reads args.kl_coef at every rollout."""

    def on_train_begin(self, args, state, control, **kwargs):
        args.kl_coef = 0.0


def test_removing_the_ppo_kl_penalty_fails_kl_growth_by_config_and_by_code(compare, trained):
    base = trained("ppo-base", "ppo_embedded")  # shared with test_real and test_rl_learning
    for run in (trained("ppo-kl-coef-0", "ppo_embedded", "ppo.kl_coef=0"),
                trained("ppo-kl-penalty-code", "ppo_embedded", callbacks=[ZeroKLPenalty()])):
        r = compare(run, base)
        c = r.check("rl.ppo.kl_growth")
        assert c["status"] == "fail", c["reason"]
        assert "the KL penalty no longer holds the policy" in c["reason"]


def test_a_ppo_reward_drop_of_one_fails(compare, trained):
    """missing_eos_penalty 1.0: the untrained model never ends a response, so every score drops by 1."""
    base = trained("ppo-base", "ppo_embedded")
    r = compare(trained("ppo-eos-penalty", "ppo_embedded", "ppo.missing_eos_penalty=1.0"), base)
    c = r.check("rl.ppo.reward")
    assert c["status"] == "fail" and c["current"] < c["baseline"] - 0.2, c["reason"]


def test_a_rerun_passes_and_a_policy_100x_too_slow_stops_improving(compare, trained):
    r = compare(trained("ppo-rerun", "ppo_embedded"), trained("ppo-base", "ppo_embedded"))
    for cid in ("rl.ppo.reward", "rl.ppo.reward_trend", "rl.ppo.kl_growth"):
        assert r.status(cid) == "pass", (cid, r.check(cid)["reason"])
    slow = trained("grpo-lr-4e-5", "grpo_embedded", "train.learning_rate=4e-5")
    r = compare(slow, trained("grpo", "grpo_embedded"))
    c = r.check("rl.grpo.reward_trend")
    assert c["status"] == "fail" and "the reward stopped improving" in c["reason"], c["reason"]


# -- the KL penalty itself ------------------------------------------------------------------------------


def test_a_kl_penalty_removed_fails_whether_the_config_or_the_code_removed_it(compare, record_dir):
    kl = _noisy(0.02, 0.4, 0.01, seed=4)
    # GRPO's loss is its KL term (the policy-gradient part averages to ~0 over a group): loss = beta x kl
    base = record_dir("base", training_type="grpo", series={"kl": kl, "loss": [0.04 * k for k in kl]})
    assert compare(base, base).status("rl.grpo.kl_penalty") == "pass"
    # config: grpo.beta 0, and TRL then logs no KL at all, so no KL check can see it
    off = record_dir("off", training_type="grpo", overrides=("grpo.beta=0",), series={"kl": None, "loss": [0.0] * 30})
    c = compare(off, base).check("rl.grpo.kl_penalty")
    assert c["status"] == "fail" and "grpo.beta in the config" in c["reason"] and "removed" in c["reason"], c["reason"]
    # code, config unchanged: the weight applied, read from loss / kl, is ~0 though KL barely moved
    code = record_dir("code", training_type="grpo", series={"kl": kl, "loss": [1e-12 * k for k in kl]})
    c = compare(code, base).check("rl.grpo.kl_penalty")
    assert c["status"] == "fail" and "the KL weight applied" in c["reason"], c["reason"]
    # a weight halved in code warns; a baseline without a penalty has nothing to lose
    half = record_dir("half", training_type="grpo", series={"kl": kl, "loss": [0.015 * k for k in kl]})
    assert compare(half, base).status("rl.grpo.kl_penalty") == "warn"
    assert compare(base, off).status("rl.grpo.kl_penalty") == "skip"
