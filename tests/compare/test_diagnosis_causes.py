"""The diagnosis names the right cause, with a stable `kind` for machines, and advice valid for the trainer.

Real runs on the embedded model where a run shows the cause (a frozen policy, a GRPO collapse, PPO without
its KL penalty; each a few seconds, shared with the other compare tests through the session's `trained`
fixture); controlled records where the test must choose the numbers (a penalty zeroed in code, a reward
function that stopped scoring, a NaN in PPO).
"""

from __future__ import annotations

import copy
import json
import math
import random

from canary_runner import results
from canary_runner.compare.diagnosis import KINDS

from .conftest import REPO, make_record, write_record
from .test_learning_signal import _frozen_lr

# Timing depends on the machine's load, not on the change under test.
TIMING_OFF = "checks:\n" + "".join(f"  {cid}: {{enabled: false}}\n" for cid in (
    "perf.step_time", "perf.tokens_per_s", "perf.phase", "memory.cpu_rss_anon_peak", "memory.cpu_rss_anon_rise"))


def _timing_off(tmp_path):
    path = tmp_path / "timing-off.yaml"
    path.write_text(TIMING_OFF)
    return path


def _kinds(r) -> list[str]:
    return [d["kind"] for d in r.doc["diagnosis"]]


def _upgraded(run_dir, tmp_path, name: str, **packages):
    """The run's record with env.packages edited, as if a library had been upgraded beside the change.
    Simulated in the record: another TRL cannot be installed here (its PPO is gone from 1.13 on)."""
    record = copy.deepcopy(results.load_metrics(run_dir))
    record["env"]["packages"].update(packages)
    return write_record(tmp_path / name, record)


def _noisy(level, sd, n=20, seed=0):
    rng = random.Random(seed)
    return [level + sd * rng.gauss(0, 1) for _ in range(n)]


def test_every_kind_is_in_the_schema(compare, record_dir):
    schema = json.loads((REPO / "canary_runner" / "schemas" / "comparison.schema.json").read_text())
    assert schema["properties"]["diagnosis"]["items"]["properties"]["kind"]["enum"] == list(KINDS)
    # a comparison written before kinds existed still validates
    from canary_runner.compare.engine import validate

    r = compare(record_dir("cur", series={"loss": [0.7] * 30}), record_dir("base"))
    assert r.doc["diagnosis"] and all(d["kind"] in KINDS for d in r.doc["diagnosis"])
    old = json.loads(json.dumps(results.encode(r.doc)))
    for d in old["diagnosis"]:
        del d["kind"]
    assert not validate(old)


# -- frozen policy ---------------------------------------------------------------------------------------


def test_a_learning_rate_of_1e9_is_a_frozen_policy_with_its_numbers(compare, trained, tmp_path):
    base = trained("sft-base", "sft_embedded")
    frozen = trained("sft-lr-1e-9", "sft_embedded", "train.learning_rate=1e-9")
    r = compare(frozen, base, "--thresholds", _timing_off(tmp_path))
    top = r.doc["diagnosis"][0]
    assert top["kind"] == "frozen_policy", r.doc["diagnosis"]
    assert top["cause"].startswith("The learning rate was lowered (0.001 -> 1e-09, 1000000x)"), top["cause"]
    ev = " ".join(top["evidence"])
    assert "update ||dθ||/||θ|| per optimizer step" in ev and "x smaller" in ev, ev
    assert "learning rate applied 1.00e-09 vs the baseline's 1.00e-03" in ev, ev
    steps = " ".join(top["next_steps"])
    assert "requires_grad" in steps and "param groups" in steps and "warmup" in steps, steps
    assert {"stability.update_ratio", "stability.learning"} <= set(top["checks"])
    assert "not_learning" not in _kinds(r)  # the frozen policy explains why it does not learn


def test_a_frozen_policy_beside_a_library_upgrade_ranks_above_the_upgrade(compare, trained, tmp_path):
    base = trained("sft-base", "sft_embedded")
    # as code, the config unchanged: the optimizer's learning rate overwritten in a callback
    code = trained("sft-lr-code", "sft_embedded", callbacks=[_frozen_lr()])
    upgraded = _upgraded(code, tmp_path, "upgraded", trl="1.13.0")
    r = compare(upgraded, base, "--thresholds", _timing_off(tmp_path))
    assert r.status("environment.stack") == "warn"
    kinds = _kinds(r)
    assert kinds[0] == "frozen_policy" and "library_change" in kinds, r.doc["diagnosis"]
    top = r.doc["diagnosis"][0]
    assert "with the same config" in top["cause"], top["cause"]
    assert any("libraries changed too (trl 1.12.0 -> 1.13.0)" in e for e in top["evidence"]), top["evidence"]
    lib = r.doc["diagnosis"][kinds.index("library_change")]
    assert lib["cause"] == "Library versions changed: trl 1.12.0 -> 1.13.0"
    assert any("pip install trl==1.12.0" in s for s in lib["next_steps"])


# -- collapse vs not learning ------------------------------------------------------------------------------


def test_a_grpo_collapse_is_a_collapse_not_a_missing_learning_signal(compare, trained, tmp_path):
    base = trained("grpo", "grpo_embedded")
    # lr 0.1: within 20 steps the policy writes one completion (entropy ~1e-5, KL ~5 nats)
    collapsed = trained("grpo-lr-0.1", "grpo_embedded", "train.learning_rate=0.1")
    r = compare(collapsed, base, "--thresholds", _timing_off(tmp_path))
    assert r.status("rl.grpo.zero_std_fraction") == "fail" and r.status("rl.grpo.kl") == "fail"
    top = r.doc["diagnosis"][0]
    assert top["kind"] == "collapse", r.doc["diagnosis"]
    assert top["cause"] == "The learning rate was raised (0.004 -> 0.1) and training collapsed (no NaN)"
    ev = " ".join(top["evidence"])
    assert "entropy fell to" in ev and "KL to the reference" in ev and "the completions are identical" in ev, ev
    assert not any(d["cause"].startswith("No learning signal") for d in r.doc["diagnosis"]), r.doc["diagnosis"]
    assert "not_learning" not in _kinds(r)


def _grpo(run_id: str, n: int = 20, *, kl: float, entropy: float, zero: float, std: float, seed: int = 0) -> dict:
    return make_record("grpo", steps=n, warmup=3, run_id=run_id, seed=seed, series={
        "reward": _noisy(0.6, 0.02, n, seed), "reward_std": [std] * n, "frac_reward_zero_std": [zero] * n,
        "kl": [0.0] + _noisy(kl, 0.05 * kl, n - 1, seed), "entropy": [6.2] * 3 + [entropy] * (n - 3),
        "rewards/lowercase/mean": [0.6] * n, "rewards/lowercase/std": [std] * n,
        "update_ratio": _noisy(0.02, 0.002, n, seed), "loss": [0.0] * n})


def test_collapse_and_a_lost_learning_signal_are_told_apart(compare, record_dir):
    base = record_dir("base", _grpo("base", kl=0.4, entropy=5.8, zero=0.0, std=0.1))
    # the same zero spread in both: with KL 5.2 nats and entropy ~0 it is the policy that collapsed ...
    collapsed = record_dir("collapsed", _grpo("collapsed", kl=5.2, entropy=1e-5, zero=1.0, std=0.0, seed=1))
    r = compare(collapsed, base)
    assert _kinds(r)[0] == "collapse", r.doc["diagnosis"]
    assert r.doc["diagnosis"][0]["cause"] == ("The policy collapsed to a single output (entropy near 0, far from "
                                              "its reference)")
    # ... with the KL and entropy of the baseline, the reward stopped telling completions apart: it says which
    flat = record_dir("flat", _grpo("flat", kl=0.4, entropy=5.8, zero=1.0, std=0.0, seed=2))
    r = compare(flat, base)
    top = r.doc["diagnosis"][0]
    assert top["kind"] == "not_learning", r.doc["diagnosis"]
    assert top["cause"] == "The reward function lowercase stopped scoring: every completion gets the same score"
    assert "collapse" not in _kinds(r)


def test_a_run_whose_parameters_move_but_do_not_learn_is_not_learning(compare, record_dir):
    # SFT whose loss stays flat while the parameters move as much as the baseline's (a loss that does not
    # follow the weights, e.g. labels masked out): not a frozen policy
    moving = {"update_ratio": [0.01] * 30}
    base = record_dir("base", training_type="sft", series=moving)
    flat = record_dir("flat", training_type="sft", series=moving | {"loss": [6.29 + 0.01 * (-1) ** i for i in range(30)]})
    r = compare(flat, base)
    assert r.status("stability.learning") == "fail" and r.status("stability.update_ratio") == "pass"
    assert _kinds(r)[0] == "not_learning", r.doc["diagnosis"]


# -- KL penalty removed --------------------------------------------------------------------------------------


def test_ppo_without_its_kl_penalty_names_the_config_field(compare, trained, tmp_path):
    base = trained("ppo-base", "ppo_embedded")
    nokl = trained("ppo-kl-coef-0", "ppo_embedded", "ppo.kl_coef=0")
    r = compare(nokl, base, "--thresholds", _timing_off(tmp_path))
    assert r.status("rl.ppo.kl") == "fail", r.check("rl.ppo.kl")["reason"]
    top = r.doc["diagnosis"][0]
    assert top["kind"] == "kl_penalty_removed", r.doc["diagnosis"]
    assert top["cause"].startswith("The KL penalty was removed (ppo.kl_coef 0.02 -> 0.0)"), top["cause"]
    assert any("KL weight applied 0 vs the baseline's 0.02" in e for e in top["evidence"]), top["evidence"]
    # beside a library upgrade the cause is the same
    r = compare(_upgraded(nokl, tmp_path, "nokl-upgraded", trl="1.13.0"), base, "--thresholds", _timing_off(tmp_path))
    assert _kinds(r)[0] == "kl_penalty_removed", r.doc["diagnosis"]


def _ppo(run_id: str, coef: float, kl: list[float], **overrides) -> dict:
    n = len(kl)
    return make_record("ppo", steps=n, warmup=3, run_id=run_id, series={
        "objective/kl": kl, "objective/non_score_reward": [-coef * k for k in kl],
        "objective/scores": [0.01 * i for i in range(n)], "policy/entropy_avg": [6.2 - 0.01 * i for i in range(n)],
        "update_ratio": [0.01] * n, "effective_lr": [3e-3] * n}, **overrides)


def test_a_kl_penalty_zeroed_in_code_is_read_from_what_ppo_logs(compare, record_dir):
    """The config still says kl_coef 0.02; the trainer applied 0 (objective/non_score_reward is 0 while KL
    is not): the code path zeroed it."""
    base = record_dir("base", _ppo("base", 0.02, [0.0] + _noisy(5.0, 0.5, 19)))
    code = record_dir("code", _ppo("code", 0.0, [0.0] + _noisy(10.0, 1.0, 19, seed=1)))
    r = compare(code, base)
    assert r.status("rl.ppo.kl") == "fail" and r.status("run.config") == "pass"
    top = r.doc["diagnosis"][0]
    assert top["kind"] == "kl_penalty_removed", r.doc["diagnosis"]
    assert top["cause"] == ("The KL penalty applied is gone (0.02 -> ~0) with ppo.kl_coef 0.02 in the config: "
                            "the code path changes its weight")
    # the same KL rise with the penalty applied as before is another cause (the policy moves too fast)
    hot = record_dir("hot", _ppo("hot", 0.02, [0.0] + _noisy(10.0, 1.0, 19, seed=1)))
    r = compare(hot, base)
    assert _kinds(r)[0] == "instability" and "kl_penalty_removed" not in _kinds(r), r.doc["diagnosis"]


# -- advice valid for the trainer at hand ------------------------------------------------------------------


def _nan_at(record: dict, step: int) -> dict:
    for key in ("loss", "grad_norm"):
        record["series"][key] = record["series"][key][:step - 1] + [math.nan] * (len(record["series"][key]) - step + 1)
    record["summary"] = results.summarize(record["series"])
    return record


def test_the_nan_advice_names_only_knobs_the_trainer_applies(compare, record_dir):
    """TRL's PPO trainer steps its optimizer without clipping gradients (no clip_grad_norm_ in
    trl/experimental/ppo/ppo_trainer.py): train.max_grad_norm does nothing there."""
    ppo = record_dir("ppo", _nan_at(make_record("ppo", steps=20, warmup=3, run_id="ppo"), 8))
    r = compare(ppo, "--no-baseline")
    top = r.doc["diagnosis"][0]
    assert top["kind"] == "nan_inf", r.doc["diagnosis"]
    steps = " ".join(top["next_steps"])
    assert "keep train.max_grad_norm set" not in steps and "does not clip gradients" in steps, steps
    assert "ppo.cliprange" in steps and "ppo.kl_coef" in steps
    # a trainer that clips (DPO, through the transformers Trainer) is told to keep clipping
    dpo = record_dir("dpo", _nan_at(make_record("dpo", run_id="dpo"), 8))
    steps = " ".join(compare(dpo, "--no-baseline").doc["diagnosis"][0]["next_steps"])
    assert "keep train.max_grad_norm set" in steps and "ppo." not in steps, steps
