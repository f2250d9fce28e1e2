"""The learning signal (update ratio, learning rate applied), two-sided scale-aware KL and entropy checks,
metrics the current run lacks, and health that no config or library difference downgrades.

Real runs where a run shows it (a frozen PPO policy, arriving as config and as code); controlled records
for the scale and noise cases, whose numbers a test must choose."""

from __future__ import annotations

import copy
import math
import random

from .conftest import ENV, make_record


def _frozen_lr(optimizer_lr: float = 1e-9):
    """A trainer change with the config unchanged: the optimizer's learning rate overwritten before
    every step (a scheduler bug, a wrong unit)."""
    from transformers import TrainerCallback

    class Freeze(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            for g in optimizer.param_groups:
                g["lr"] = optimizer_lr

    return Freeze()


def test_frozen_policy_fails_whether_config_or_code(compare, trained):
    base = trained("sft-base", "sft_embedded")
    # as config: the learning rate explains the lr series (a warning), not the frozen parameters (a failure)
    cfg = trained("sft-lr-1e-9", "sft_embedded", "train.learning_rate=1e-9")
    r = compare(cfg, base)
    assert r.code == 1
    up = r.check("stability.update_ratio")
    assert up["status"] == "fail" and "near-frozen" in up["reason"], up["reason"]
    lr = r.check("stability.learning_rate")
    assert lr["status"] == "warn" and "train.learning_rate" in lr["reason"], lr["reason"]
    # as code, config unchanged: the learning rate applied departs from the baseline's with nothing to explain it
    code = trained("sft-lr-code", "sft_embedded", callbacks=[_frozen_lr()])
    r = compare(code, base)
    assert r.code == 1
    assert r.status("stability.update_ratio") == "fail"
    lr = r.check("stability.learning_rate")
    assert lr["status"] == "fail" and lr["change"] < -4, lr["reason"]
    # baseline-free: below float32 resolution
    r = compare(code, "--no-baseline")
    assert r.status("stability.update_ratio") == "fail"
    # the base run's own record: every step moved the parameters
    r = compare(base, base)
    assert r.status("stability.update_ratio") == "pass" and r.status("stability.learning_rate") == "pass"


def _ppo(run_id: str, kl, entropy=None, steps: int = 20, env=None, overrides=(), **series) -> dict:
    s = {"objective/kl": kl, "update_ratio": [2e-4] * steps, "effective_lr": [3e-5] * steps}
    if entropy is not None:
        s["policy/entropy_avg"] = entropy
    s.update(series)
    return make_record("ppo", steps=steps, warmup=3, series=s, env=env, overrides=overrides, run_id=run_id)


def _noisy(level, sd, n=20, seed=0, slope=0.0):
    rng = random.Random(seed)
    return [level + slope * i + sd * rng.gauss(0, 1) for i in range(n)]


def test_kl_that_vanishes_fails_and_the_kl_rise_is_relative_to_the_baseline_scale(compare, record_dir):
    base = record_dir("base", _ppo("base", _noisy(0.02, 0.005)))
    same = record_dir("same", _ppo("same", _noisy(0.02, 0.005, seed=1)))
    r = compare(same, base)
    assert r.status("rl.ppo.kl_vanish") == "pass" and r.status("rl.ppo.kl") == "pass"
    gone = record_dir("gone", _ppo("gone", [0.0] * 20))
    r = compare(gone, base)
    c = r.check("rl.ppo.kl_vanish")
    assert c["status"] == "fail" and "vanished" in c["reason"], c["reason"]
    # no KL penalty: +0.4 nats where the baseline had 0.02, far below any fixed floor of 1 nat
    nokl = record_dir("nokl", _ppo("nokl", _noisy(0.44, 0.1, seed=2)))
    r = compare(nokl, base)
    c = r.check("rl.ppo.kl")
    assert c["status"] == "fail", c["reason"]
    assert r.status("rl.ppo.kl_vanish") == "pass"
    # a baseline KL that is noise around 0 has nothing to vanish
    noise = record_dir("noise", _ppo("noise", _noisy(0.0, 0.03, seed=3)))
    assert compare(gone, noise).status("rl.ppo.kl_vanish") == "pass"


def test_entropy_stuck_at_its_maximum_fails_where_the_baseline_fell(compare, record_dir):
    top = math.log(512)
    base = record_dir("base", _ppo("base", _noisy(0.02, 0.005), entropy=_noisy(top, 0.01, slope=-0.05)))
    rerun = record_dir("rerun", _ppo("rerun", _noisy(0.02, 0.005, seed=1),
                                     entropy=_noisy(top, 0.01, seed=1, slope=-0.05)))
    stuck = record_dir("stuck", _ppo("stuck", _noisy(0.02, 0.005), entropy=_noisy(top, 0.001, seed=2)))
    assert compare(rerun, base).status("rl.ppo.entropy_stuck") == "pass"
    c = compare(stuck, base).check("rl.ppo.entropy_stuck")
    assert c["status"] == "fail" and "not learning" in c["reason"], c["reason"]
    # the other way round: the baseline that never fell gives nothing to compare with
    assert compare(base, stuck).status("rl.ppo.entropy_stuck") == "pass"


def test_a_metric_the_baseline_logged_is_a_named_warning_and_renames_are_aliases(compare, record_dir):
    kl = _noisy(0.02, 0.005)
    base = record_dir("base", _ppo("base", kl))
    # a newer library logs KL under the GRPO/RLOO name, and `lr` for `learning_rate`: read as the same metrics
    renamed = _ppo("renamed", kl)
    renamed["series"]["kl"] = renamed["series"].pop("objective/kl")
    renamed["series"]["lr"] = renamed["series"].pop("learning_rate")
    r = compare(record_dir("renamed", renamed), base)
    c = r.check("run.metrics")
    assert c["status"] == "pass" and "logged objective/kl as kl" in c["reason"], c["reason"]
    assert r.status("rl.ppo.kl") == "pass" and r.check("rl.ppo.kl")["current"] is not None
    # a metric gone under a name nobody maps: a warning that names it, not a silent skip
    lost = _ppo("lost", None)  # None: not logged
    r = compare(record_dir("lost", lost), base)
    c = r.check("run.metrics")
    assert c["status"] == "warn" and "objective/kl" in c["reason"], c["reason"]
    assert "baseline logs it" in r.check("rl.ppo.kl")["reason"]


def test_health_is_not_downgraded_by_a_library_or_config_difference(compare, record_dir):
    env = copy.deepcopy(ENV)
    env["packages"]["trl"] = "1.13.0"
    base = record_dir("base", _ppo("base", _noisy(0.02, 0.005)))
    frozen = _ppo("frozen", [0.0] * 20, env=env, overrides=("ppo.kl_coef=0.1",),
                  update_ratio=[0.0] * 20, loss=[0.9 * math.exp(-i / 30) for i in range(20)])
    r = compare(record_dir("frozen", frozen), base)
    assert r.status("environment.stack") == "warn" and r.status("run.config") == "warn"
    for cid in ("stability.update_ratio", "rl.ppo.kl_vanish"):
        assert r.status(cid) == "fail", (cid, r.check(cid)["reason"])
    # only the curve shape is excused by the differences
    c = r.check("correctness.loss_curve")
    assert c["status"] == "warn" and "expected to differ" in c["reason"], c["reason"]
