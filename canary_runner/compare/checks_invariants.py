"""Invariants that need no baseline: facts of the maths that hold on every correct run.

At step 1 the policy equals the reference and the policy that sampled is the policy being trained, so
log-prob differences between them are float noise; the reference model never changes. Each tolerance
is per token and per precision (the check id's `.bf16` / `.fp16` entry over the plain one): see
docs/invariants.md for the derivations and the figures measured on the embedded configs.
"""

from __future__ import annotations

import math

import numpy as np

from .checks_health import _first, dpo_initial_loss_check, first_clip_check, ppo_first_minibatch_check
from .loading import Run
from .model import Check, Context, cap_severity, fmt
from .settings import Limit

REFERENCE_TYPES = ("dpo", "ppo", "grpo", "rloo")
KL_METRIC = {"ppo": "objective/kl", "grpo": "kl", "rloo": "kl"}


def _limit(ctx: Context, check_id: str) -> tuple[Limit, str]:
    """The check's limit for the run's precision: `<id>.<precision>` merged over `<id>`."""
    precision = ctx.cur0.setting("train.precision", "fp32") or "fp32"
    return ctx.limit(check_id if precision == "fp32" else f"{check_id}.{precision}"), precision


def _recorded(run: Run, name: str) -> dict | None:
    inv = run.record.get("invariants")
    return inv.get(name) if isinstance(inv, dict) and isinstance(inv.get(name), dict) else None


def _facts(ctx: Context, name: str) -> list[tuple[Run, dict]]:
    """(run, what it recorded under `name`) for the current runs that recorded it."""
    return [(r, f) for r in ctx.current if (f := _recorded(r, name)) is not None]


# -- the reference model never changes -----------------------------------------------------------


def reference_frozen_check(ctx: Context) -> Check:
    t = ctx.training_type
    chk = Check(f"invariant.{t}.reference_frozen", "invariant", "Reference model unchanged", "invariants",
                "lower_is_better", "tensors")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    facts = _facts(ctx, "reference_frozen")
    if not facts:
        return chk.skip("the run record has no reference fingerprint (recorded from this version on)")
    checked = [(r, f) for r, f in facts if f.get("checked")]
    if not checked:
        return chk.skip(f"nothing to fingerprint: {facts[0][1].get('why', 'no reference model')}")
    run, worst = max(checked, key=lambda rf: rf[1].get("changed_count", 0))
    allowed = int(limit.absolute or 0)
    chk.current, chk.threshold, chk.threshold_kind = float(worst["changed_count"]), float(allowed), "absolute"
    chk.details = {"run": run.id, **worst}
    what = f"{worst['reference']}: {worst['tensors']} tensors, {worst['elements']:,} values"
    if worst["changed_count"] > allowed:
        names = ", ".join(worst["changed"]) + (" ..." if worst["changed_count"] > len(worst["changed"]) else "")
        chk.set("fail", f"{worst['changed_count']} reference tensor(s) changed during training ({names}); the "
                        f"reference must stay bit-identical ({what}): something updates the model the KL and "
                        "the implicit rewards are measured against")
    else:
        chk.set("pass", f"bit-identical at train begin and end ({what}; exact integer fingerprint of the bits)")
    return cap_severity(chk, limit)


# -- step 1: the sampler's and the trainer's log-probs agree ------------------------------------------


def logprob_mismatch_check(ctx: Context) -> Check:
    t = ctx.training_type
    chk = Check(f"invariant.{t}.logprob_mismatch", "invariant", "Generation vs training log-probs at step 1",
                "invariants", "lower_is_better", "nats")
    limit, precision = _limit(ctx, chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if limit.absolute is None:
        return chk.skip(f"no limit set for {precision} (absolute: max |log-prob difference| per token)")
    facts = _facts(ctx, "logprob_mismatch")
    if not facts:
        return chk.skip("the run record has no log-prob probe (recorded from this version on)")
    measured = [(r, f) for r, f in facts if f.get("measured")]
    if not measured:
        return chk.skip(f"not measured: {facts[0][1].get('why')}")
    run, worst = max(measured, key=lambda rf: rf[1]["max_abs"] if math.isfinite(rf[1]["max_abs"]) else math.inf)
    value = worst["max_abs"]
    chk.step, chk.current = worst["step"], value
    chk.threshold, chk.threshold_kind = limit.absolute, "absolute"
    chk.details = {"run": run.id, **worst}
    text = (f"max |log p_sampler - log p_train| {fmt(value)} nats (mean {fmt(worst['mean_abs'])}) over "
            f"{worst['tokens']} completion tokens at step {worst['step']}; tolerance {fmt(limit.absolute)} for {precision}")
    if not math.isfinite(value) or value > limit.absolute:
        return cap_severity(chk.set("fail", text + ": the policy that sampled the completions is not the policy "
                                    "being trained (weights changed between generation and loss, or the two "
                                    "forward paths compute different models)"), limit)
    return cap_severity(chk.set("pass", text), limit)


# -- step 1: KL to the reference is 0 -----------------------------------------------------------------


def initial_kl_check(ctx: Context) -> Check:
    t = ctx.training_type
    metric = KL_METRIC[t]
    chk = Check(f"invariant.{t}.initial_kl", "invariant", "KL to the reference is 0 at step 1", metric, "band", "nats")
    limit, precision = _limit(ctx, chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if limit.absolute is None:
        return chk.skip(f"no limit set for {precision} (absolute: per-token tolerance)")
    if t in ("grpo", "rloo") and ctx.cur0.setting(f"{t}.beta") == 0:
        return chk.skip(f"{t}.beta is 0: no reference model, so TRL logs no KL")
    firsts = [f for f in (_first(r, metric) for r in ctx.current) if f is not None]
    if not firsts:
        return chk.skip(f"{metric} is not logged at the first step")
    step, value = max(firsts, key=lambda f: abs(f[1]) if math.isfinite(f[1]) else math.inf)
    tol, per = limit.absolute, "per token"
    if t == "ppo":  # objective/kl is summed over the response: up to response_length tokens of noise each
        tokens = int(ctx.cur0.setting("ppo.response_length", 53) or 53)
        tol, per = limit.absolute * tokens, f"{fmt(limit.absolute)} per token x {tokens} response tokens"
    chk.step, chk.current, chk.baseline = step, value, 0.0
    chk.change, chk.change_kind = value, "absolute"
    chk.threshold, chk.threshold_kind = tol, "absolute"
    text = f"{metric} {fmt(value)} at step {step}, tolerance {fmt(tol)} ({per}, {precision})"
    if not math.isfinite(value) or abs(value) > tol:
        return cap_severity(chk.set("fail", text + ": the policy differs from the reference before any update "
                                    "(a reference loaded from other weights, or the policy changed before its "
                                    "first loss)"), limit)
    return cap_severity(chk.set("pass", text), limit)


# -- DPO: the implicit rewards are 0 at step 1 --------------------------------------------------------

DPO_REWARDS = ("rewards/margins", "rewards/chosen", "rewards/rejected")


def dpo_initial_margin_check(ctx: Context) -> Check:
    chk = Check("invariant.dpo.initial_margin", "invariant", "DPO implicit rewards are 0 at step 1",
                "rewards/margins", "band", None)
    limit, precision = _limit(ctx, chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if limit.absolute is None:
        return chk.skip(f"no limit set for {precision} (absolute)")
    worst = None
    for r in ctx.current:
        for metric in DPO_REWARDS:
            first = _first(r, metric)
            if first is not None:
                off = abs(first[1]) if math.isfinite(first[1]) else math.inf
                if worst is None or off > worst[2]:
                    worst = (metric, first[0], off, first[1])
    if worst is None:
        return chk.skip("rewards/* are not logged at the first step")
    metric, step, off, value = worst
    chk.metric, chk.step, chk.current, chk.baseline = metric, step, value, 0.0
    chk.threshold, chk.threshold_kind = limit.absolute, "absolute"
    text = (f"largest of |rewards/margins|, |chosen|, |rejected| at step {step} is {metric} {fmt(value)}, "
            f"tolerance {fmt(limit.absolute)} ({precision})")
    if off > limit.absolute:
        return cap_severity(chk.set("fail", text + ": beta x (log pi - log pi_ref) is not 0 before any update, so "
                                    "the reference is not the initial policy"), limit)
    return cap_severity(chk.set("pass", text), limit)


# -- reward modelling: an untrained scorer does not separate the first batch ---------------------------


def expected_normal_range(m: int) -> float:
    """E[max - min] of m standard normal samples: integral of 1 - F^m - (1 - F)^m."""
    x = np.linspace(-9, 9, 36001)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    return float(np.sum(1 - cdf ** m - (1 - cdf) ** m) * (x[1] - x[0]))


def binomial_two_sided(k: int, n: int) -> float:
    """P(|X - n/2| >= |k - n/2|) for X ~ Binomial(n, 1/2)."""
    d = abs(k - n / 2)
    return min(1.0, sum(math.comb(n, i) for i in range(n + 1) if abs(i - n / 2) >= d - 1e-9) / 2 ** n)


def reward_initial_check(ctx: Context) -> Check:
    """The step-1 batch of an untrained scorer: its mean margin must be small against the spread of its
    scores. Under exchangeable chosen/rejected scores with spread sigma, the mean margin of n pairs has
    sd sqrt(2/n) sigma and the 2n scores span E[range(2n)] sigma, so z = margin / range x
    E[range(2n)] / sqrt(2/n) is ~N(0, 1) (the range stands in for the sigma the record lacks). The
    accuracy itself is not judged: with 8 pairs no outcome is rarer than 1/128, and an untrained
    scorer is not a fair coin (a random head prefers whichever side a systematic feature favours)."""
    chk = Check("invariant.reward.initial_accuracy", "invariant", "Untrained scorer does not separate step 1's pairs",
                "margin", "band", "sd")
    limit = ctx.limit(chk.id)
    if not limit.enabled:
        return chk.skip("disabled by thresholds")
    if limit.max is None:
        return chk.skip("no limit set (max: |z| of the step-1 mean margin)")
    r0 = ctx.cur0
    n = int((r0.setting("train.per_device_batch_size", 8) or 8) * (r0.setting("train.gradient_accumulation_steps", 1) or 1)
            * int(r0.info.get("world_size") or 1))
    worst = None
    for r in ctx.current:
        margin, lo, hi, acc = (_first(r, m) for m in ("margin", "min_reward", "max_reward", "accuracy"))
        if margin is None or lo is None or hi is None:
            continue
        if margin[1] == 0 and acc is not None and acc[1] == 0:
            z = math.inf  # every pair tied: chosen and rejected were scored on the same text
        elif hi[1] > lo[1]:
            z = margin[1] / (hi[1] - lo[1]) * expected_normal_range(2 * n) / math.sqrt(2 / n)
        else:
            z = math.inf if margin[1] else 0.0
        if worst is None or abs(z) > abs(worst[0]):
            worst = (z, margin, acc)
    if worst is None:
        return chk.skip("margin, min_reward and max_reward are not all logged at the first step")
    z, margin, acc = worst
    chk.step, chk.current = margin[0], z
    chk.threshold, chk.threshold_kind = limit.max, "absolute"
    acc_text = ""
    if acc is not None:
        k = round(acc[1] * n)
        acc_text = f"; accuracy {acc[1]:.3g} on {n} pairs (two-sided binomial p {binomial_two_sided(k, n):.2g}, not judged)"
    text = f"step-1 mean margin {fmt(margin[1])} is z = {z:.2g} (|z| limit {limit.max:g}){acc_text}"
    if not math.isfinite(z) or abs(z) > limit.max:
        why = ("every pair tied: chosen and rejected scored the same (the same text fed as both?)" if margin[1] == 0
               else "the scorer already separates the pairs before training: a trained checkpoint as the start, "
                    "or the preference leaking into the score")
        return cap_severity(chk.set("fail", f"{text}: {why}"), limit)
    return cap_severity(chk.set("pass", text), limit)


def invariant_checks(ctx: Context) -> list[Check]:
    t = ctx.training_type
    out: list[Check] = []
    if t == "dpo":
        out += [dpo_initial_loss_check(ctx), dpo_initial_margin_check(ctx)]
    if t == "ppo":
        out += [ppo_first_minibatch_check(ctx), initial_kl_check(ctx)]
    if t in ("grpo", "rloo"):
        out += [first_clip_check(ctx), logprob_mismatch_check(ctx), initial_kl_check(ctx)]
    if t in REFERENCE_TYPES:
        out.append(reference_frozen_check(ctx))
    if t == "reward":
        out.append(reward_initial_check(ctx))
    return out
