"""Diagnosis: likely causes of what the checks found, each with the evidence from the data behind it.

Every rule looks at the runs and the check results and, when its evidence is present, proposes one
cause with the measurements that support it and what to do next. Each cause carries a `kind` (a
stable slug, KINDS) for machines next to its sentence for people.

Causes are ranked by how much of the comparison they explain: the number of failing checks they
account for, then warning checks, then the number of independent pieces of evidence. Two exceptions
come first: a crash leads (the rest was measured on the steps before it), and among causes that
explain a failure, a training-health cause (HEALTH_RANK) comes before the others, most specific first:
a frozen policy is not excused by the library upgrade or the config change beside it, which stay on
the list as suspects. No rule carries a fixed confidence number.
"""

from __future__ import annotations

import math
import statistics

from .checks_health import ENTROPY_METRIC, KL_FIELD, KL_METRIC, applied_kl_weight, early_window, late_window
from .checks_run import describe_error, stack_changes, training_config_diff
from .loading import Run
from .model import Check, Context, fmt, pct
from .stats import relative_change, trend

BAD = ("fail", "warn")
# Config fields that change the numbers but not the amount of work per step.
NUMERIC_ONLY = ("seed", "train.learning_rate", "train.lr_scheduler", "train.max_grad_norm", "train.timeout_s",
                "tier", "name", "description")
NUMERIC_SUFFIXES = (".beta", ".kl_coef", ".cliprange", ".vf_coef", ".loss_type", ".center_rewards_coefficient")
# Config fields known to move step time or memory, and how.
PERF_EFFECTS = {
    "train.gradient_checkpointing": "recomputes activations in the backward pass: slower steps, less memory",
    "train.max_length": "longer sequences: more tokens per step and more activation memory",
    "train.per_device_batch_size": "more samples per step: longer steps, more memory",
    "train.gradient_accumulation_steps": "more micro-batches per optimizer step: longer steps",
    "train.precision": "changes kernel speed and memory per value",
    "train.gc_freeze": "without it, garbage collection walks every live object during steps",
    "train.deterministic": "deterministic kernels are often slower",
    "model.name": "a different model",
    "model.lora": "LoRA changes the trainable parameters and optimizer state",
    "model.quantization": "quantised weights change speed and memory",
    "distributed.nproc_per_node": "a different number of processes",
}
PERF_SUFFIX_EFFECTS = {
    ".num_generations": "more completions per prompt: longer generation",
    ".max_completion_length": "longer completions: longer generation and update",
    ".response_length": "longer responses: longer generation and update",
    ".num_ppo_epochs": "more passes over each batch",
    ".num_mini_batches": "more optimizer steps per batch",
}
STABILITY_FIELDS = ("train.learning_rate", "train.max_grad_norm", "train.precision", "train.lr_scheduler")

# Every cause's `kind` (comparison.json, schemas/comparison.schema.json lists the same) and what it means.
KINDS = {
    "crash": "the run raised an error and stopped",
    "out_of_memory": "the run ran out of memory",
    "timeout": "the run exceeded train.timeout_s",
    "interrupted": "the runner stopped the job (cancelled, preempted)",
    "nan_inf": "a loss, gradient or metric became NaN/Inf",
    "collapse": "training collapsed to a degenerate model without NaN (constant or uniform output)",
    "frozen_policy": "the parameters do not move (update ratio 0 or far below the baseline's)",
    "kl_penalty_removed": "the KL penalty is gone or weakened: KL to the reference grows past the baseline's",
    "not_learning": "the parameters move but the loss, reward or entropy does not improve",
    "instability": "gradients, loss or KL grow out of bounds without NaN",
    "reward_drop": "the reward level fell below the baseline's",
    "preference_weakened": "DPO / reward-model accuracy or margin dropped",
    "completion_length": "GRPO/RLOO completions got longer, shorter or more truncated",
    "rl_health": "another RL health check regressed",
    "reference_mismatch": "at step 1 the policy is not the reference (or the scorer not untrained), or the reference changed",
    "logprob_mismatch": "sampling and training log-probabilities disagree before any update",
    "metric_missing": "a metric the baseline logged is missing from the current run",
    "divergence": "the curves leave the baseline's band",
    "slower_steps": "every step got slower for the same work",
    "more_work": "more tokens per step at the same throughput",
    "generation_slower": "RL generation (sampling, reward scoring) slowed",
    "update_slower": "the update (forward, backward, optimizer) slowed",
    "perf_regression": "a throughput or phase metric regressed while the step time held",
    "timing_noise": "a slowdown within the timing noise",
    "memory_growth": "memory grew with the same batch shape",
    "memory_workload": "memory follows a change in the workload",
    "config_change": "the canary config differs from the baseline's",
    "library_change": "library, CUDA or Python versions differ from the baseline's",
    "hardware_change": "the runs were measured on different hardware",
}
# Training-health kinds, most specific first: among causes that explain a failing check, these rank
# above every other (a config, library or hardware change beside them is a suspect, not an excuse).
HEALTH_RANK = {"nan_inf": 12, "collapse": 11, "frozen_policy": 10, "kl_penalty_removed": 9, "not_learning": 8,
               "instability": 7, "reference_mismatch": 6, "logprob_mismatch": 6, "reward_drop": 5,
               "preference_weakened": 5, "completion_length": 4, "rl_health": 3, "metric_missing": 2}
CONTEXT = ("config_change", "library_change", "hardware_change")  # explain much, name little: ties go elsewhere

COLLAPSED_ENTROPY = 0.25  # RL: late entropy at or below this share of the run's first: a collapsed policy
IDENTICAL_GROUPS = 0.9  # GRPO/RLOO: share of groups whose completions all score the same
REWARD_METRICS = ("reward", "objective/scores", "objective/rlhf_reward")
LR_FIELDS = ("learning_rate", "lr_scheduler", "lr_scheduler_type", "warmup_ratio")


def _median_tokens(runs: list[Run]) -> float | None:
    vals = [v for r in runs for v in r.steady("tokens") if v > 0]
    return statistics.median(vals) if vals else None


def _bad(checks: list[Check], prefix: tuple[str, ...] | str = "", categories=()) -> list[Check]:
    if isinstance(prefix, str):
        prefix = (prefix,)
    return [c for c in checks if c.status in BAD and c.id.startswith(prefix) and
            (not categories or c.category in categories)]


def _fmt_diff(d: dict) -> str:
    return f"{d['path']}: {d['baseline']!r} -> {d['current']!r}"


def _effect(path: str) -> str | None:
    for key, effect in PERF_EFFECTS.items():
        if path == key or path.startswith(key + "."):
            return effect
    return next((e for suffix, e in PERF_SUFFIX_EFFECTS.items() if path.endswith(suffix)), None)


def _perf_relevant(path: str) -> bool:
    return path not in NUMERIC_ONLY and not path.endswith(NUMERIC_SUFFIXES) and not path.startswith("thresholds")


def _sets_lr(path: str) -> bool:
    """A config field that sets the learning rate or its schedule (train.warmup_steps is the canary's
    timing warmup; a scheduler's warmup is in the section's extra_args)."""
    return path.split(".")[-1] in LR_FIELDS or path.endswith("extra_args.warmup_steps")


def _numbers(d: dict) -> tuple[float, float] | None:
    b, c = d["baseline"], d["current"]
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (b, c))
    return (float(b), float(c)) if ok else None


def _is_trend(c: Check) -> bool:
    """A check of how a reward moves over the run (its slope or progress), not of its level."""
    return any(w in c.id.split(".")[-1] for w in ("trend", "slope", "progress", "improve", "learn"))


def _calming_steps(t: str) -> list[str]:
    """What tames an oversized update, naming only the knobs the trainer at hand applies: TRL's PPO
    trainer steps its optimizer without clipping gradients, so max_grad_norm does nothing there."""
    if t == "ppo":
        return ["Lower train.learning_rate (or restore the baseline's). TRL's PPO trainer does not clip "
                "gradients, so train.max_grad_norm has no effect on it",
                "Shorten each PPO update: lower ppo.cliprange, ppo.num_ppo_epochs or ppo.vf_coef, and keep "
                "ppo.kl_coef above 0"]
    if t in ("grpo", "rloo"):
        return ["Lower train.learning_rate (or restore the baseline's) and keep train.max_grad_norm set",
                f"Keep the KL term ({t}.beta above 0) so the policy stays near its reference"]
    if t == "custom":
        return ["Lower the learning rate (or restore the baseline's) and keep max_grad_norm set in the "
                "script's TrainingArguments"]
    return ["Lower train.learning_rate (or restore the baseline's) and keep train.max_grad_norm set"]


def _late_mean(runs: list[Run], metric: str, window: float) -> float | None:
    vals = [v for r in runs for _, v in late_window(r, metric, window)]
    return statistics.fmean(vals) if vals else None


def _early_mean(runs: list[Run], metric: str, window: float) -> float | None:
    vals = [v for r in runs for _, v in early_window(r, metric, window)]
    return statistics.fmean(vals) if vals else None


class Diagnosis:
    def __init__(self, ctx: Context, checks: list[Check]):
        self.ctx = ctx
        self.checks = checks
        self.by_id = {c.id: c for c in checks}
        self.causes: list[dict] = []

    def add(self, kind: str, cause: str, evidence: list[str], next_steps: list[str], explained: list[Check],
            lead: bool = False, primary: list[Check] | None = None):
        """`lead`: a cause that comes first whatever else failed (a crash: the rest is measured on the
        steps before it). `primary`: the checks that found this cause (default: all it explains); when
        one of them fails, a health cause ranks above the others that explain a failure (HEALTH_RANK).
        The curves and checks that merely follow from it do not lend it that rank."""
        assert kind in KINDS, kind
        evidence = [e for e in evidence if e]
        if not evidence:
            return
        fails = sum(c.status == "fail" for c in explained)
        own = any(c.status == "fail" for c in (explained if primary is None else primary))
        self.causes.append({"kind": kind, "cause": cause, "evidence": evidence, "next_steps": next_steps,
                            "checks": sorted({c.id for c in explained}),
                            "_key": (int(lead), int(fails > 0), HEALTH_RANK.get(kind, 0) if own else 0, fails,
                                     sum(c.status == "warn" for c in explained), int(kind not in CONTEXT),
                                     len(evidence))})

    def found(self, *kinds: str) -> bool:
        return any(c["kind"] in kinds for c in self.causes)

    def claimed(self) -> set[str]:
        """Check ids a training-health cause already explains (a generic rule leaves them alone)."""
        return {cid for c in self.causes if c["kind"] in HEALTH_RANK for cid in c["checks"]}

    def lr_diff(self) -> tuple[float, float] | None:
        """(baseline, current) train.learning_rate when the config changed it."""
        d = next((x for x in training_config_diff(self.ctx) if x["path"] == "train.learning_rate"), None)
        nums = _numbers(d) if d else None
        return nums if nums and nums[0] > 0 and nums[1] > 0 else None

    def lr_applied(self) -> str | None:
        """The learning rate applied, vs the baseline's, when stability.learning_rate found them apart."""
        c = self.by_id.get("stability.learning_rate")
        if c is None or c.status not in BAD or c.change is None:
            return None
        return (f"learning rate applied {fmt(c.current)} vs the baseline's {fmt(c.baseline)} "
                f"({c.change:+.1f} orders of magnitude, {c.metric})")

    def also_changed(self) -> str | None:
        """An evidence line for a health cause when libraries changed too: a suspect, not an excuse."""
        changes = stack_changes(self.ctx) if self.ctx.has_baseline else []
        if not changes:
            return None
        names = ", ".join(f"{c['field'].removeprefix('packages.')} {c['baseline']} -> {c['current']}"
                          for c in changes[:3])
        return f"libraries changed too ({names}): a suspect for the code path, but no excuse for this failure"

    def ranked(self) -> list[dict]:
        order = sorted(range(len(self.causes)), key=lambda i: (*(-k for k in self.causes[i]["_key"]), i))
        # A library upgrade beside a training-health cause is a suspect, not the explanation: it comes
        # after the last of them (a missing metric is what an upgrade explains, so it does not count).
        kind = [self.causes[i]["kind"] for i in order]
        health = [j for j, k in enumerate(kind) if k in HEALTH_RANK and k != "metric_missing"]
        if health:
            libs = [i for j, i in enumerate(order) if kind[j] == "library_change" and j < health[-1]]
            last = order[health[-1]]
            order = [i for i in order if i not in libs]
            at = order.index(last) + 1
            order[at:at] = libs
        out = []
        for rank, i in enumerate(order, 1):
            c = dict(self.causes[i])
            c.pop("_key")
            out.append({"rank": rank, **c})
        return out

    # -- rules ------------------------------------------------------------------------------------------

    def crashed(self):
        chk = self.by_id.get("run.status")
        if chk is None or chk.status != "fail":
            return
        bad = [r for r in self.ctx.current if r.status != "completed"]
        if not bad:
            return
        r = bad[0]
        err = r.error or {}
        evidence = [f"{r.status}: {describe_error(r)}",
                    f"{r.info['steps_completed']} of {r.info['steps_planned']} steps recorded"]
        losses = r.finite_points("loss")
        if losses:
            evidence.append(f"last finite loss {fmt(losses[-1][1])} at step {losses[-1][0]}")
        steps = [f"Read the traceback: `error.traceback` in {r.path}",
                 f"Reproduce locally: canary run {r.info.get('config_path') or r.info['config_name']}"]
        if err.get("type") == "OutOfMemoryError" or "out of memory" in (err.get("message") or "").lower():
            peak = r.summary.get("peak_memory", {})
            devs = ", ".join(f"{d['device']} {fmt(d['max_allocated_mb'], 'MB')}" for d in peak.get("devices", []))
            evidence.append(f"peak memory before the crash: {devs or fmt(peak.get('cpu_rss_anon_mb'), 'MB')}")
            steps.insert(0, "Out of memory: compare the memory checks; lower train.per_device_batch_size or "
                            "train.max_length, or enable train.gradient_checkpointing")
            cause, kind = "The run ran out of memory", "out_of_memory"
        elif r.status == "timeout":
            steps.insert(0, "Find the slow phase in the step-time checks, or raise train.timeout_s if the run "
                            "legitimately got longer")
            cause, kind = "The run exceeded its time limit", "timeout"
        elif r.status == "interrupted":
            steps.insert(0, "The runner stopped the job (cancelled workflow, preempted runner): rerun it")
            cause, kind = "The run was interrupted", "interrupted"
        else:
            cause, kind = f"The run crashed ({err.get('type', 'error')})", "crash"
        self.add(kind, cause, evidence, steps, [chk], lead=True)

    def nonfinite(self):
        chk = self.by_id.get("stability.nan_inf")
        if chk is None or chk.status not in BAD or not chk.details:
            return
        d = chk.details
        k = d["first_step"]
        first = d["first_metrics"]
        run = next((r for r in self.ctx.current if r.id == d["run"]), self.ctx.cur0)
        evidence = [f"non-finite values appear first at step {k} in {', '.join(first)}"]
        loss_at = dict(run.points("loss")).get(k)
        grad_at = dict(run.points("grad_norm")).get(k)
        if "grad_norm" in first and loss_at is not None and math.isfinite(loss_at):
            cause = f"Gradients overflowed at step {k} (the loss was still finite)"
            evidence.append(f"loss at step {k} was {fmt(loss_at)} while grad_norm was {grad_at}")
        elif "loss" in first:
            cause = f"The forward pass produced NaN/Inf at step {k}"
        else:
            cause = f"A logged metric became NaN/Inf at step {k} ({', '.join(first)})"
        grads = [(s, v) for s, v in run.finite_points("grad_norm") if s < k]
        if len(grads) >= 3:
            med = statistics.median(v for _, v in grads[:-1])
            s_last, g_last = grads[-1]
            if med > 0 and g_last > 3 * med:
                evidence.append(f"grad norm at step {s_last} was {fmt(g_last)}, {g_last / med:.1f}x the median "
                                "before it: an oversized update preceded the NaN")
        diffs = [x for x in training_config_diff(self.ctx) if x["path"] in STABILITY_FIELDS or
                 x["path"].endswith((".beta", ".kl_coef"))]
        evidence += [f"config changed: {_fmt_diff(x)}" for x in diffs]
        lr = [x for x in diffs if x["path"] == "train.learning_rate"]
        if lr and isinstance(lr[0]["baseline"], (int, float)) and isinstance(lr[0]["current"], (int, float)) \
                and lr[0]["current"] > lr[0]["baseline"]:
            cause = f"The learning rate was raised ({lr[0]['baseline']:g} -> {lr[0]['current']:g}) and training blew up to NaN"
        if self.ctx.has_baseline and not chk.baseline:
            evidence.append("the baseline is finite at every step")
        if run.setting("train.precision") == "fp16":
            evidence.append("the run uses fp16, whose range overflows easily")
        steps = _calming_steps(self.ctx.training_type) + [
            "Prefer bf16 or fp32 over fp16",
            f"Inspect the steps before {k} in steps.jsonl of {run.path.parent}: which metric moved first"]
        explained = [chk] + _bad(self.checks, ("stability.", "rl.", "correctness.", "invariant."))
        self.add("nan_inf", cause, evidence + [self.also_changed()], steps, explained, primary=[chk])

    def _health_explained(self, first: list[Check]) -> list[Check]:
        """The checks a training-health cause accounts for: its own, the other stability, RL and curve
        checks that follow from it, and the config difference when there is one."""
        t = self.ctx.training_type
        explained = first + _bad(self.checks, ("correctness.", "stability.", f"rl.{t}.", "invariant."))
        if training_config_diff(self.ctx):
            explained += _bad(self.checks, "run.config")
        return explained

    def _rl_collapse_signs(self) -> tuple[list[str], list[Check]]:
        """An RL policy that collapsed to one output: its entropy fell to a small share of where it began
        (where the baseline's did not), and it moved far from the reference (a failing KL check) or every
        completion in a group scores the same."""
        t, ctx = self.ctx.training_type, self.ctx
        if t not in ENTROPY_METRIC:
            return [], []
        w = ctx.settings.window
        metric = ENTROPY_METRIC[t]
        start, late = _early_mean(ctx.current, metric, w), _late_mean(ctx.current, metric, w)
        if start is None or late is None or start <= 0 or late > COLLAPSED_ENTROPY * start:
            return [], []
        base = _late_mean(ctx.baseline, metric, w) if ctx.has_baseline else None
        if base is not None and late > 0.5 * base:
            return [], []  # the baseline's entropy fell as far: no change to explain
        kl = [c for c in _bad(self.checks, f"rl.{t}.") if c.metric == KL_METRIC[t] and c.direction == "lower_is_better"]
        same = [c for c in _bad(self.checks, f"rl.{t}.") if c.metric in ("frac_reward_zero_std", "reward_std")]
        if not kl and not same:
            return [], []
        signs = [f"{metric} fell to {fmt(late)} nats over the late window from {fmt(start)} at the start"
                 + (f" (the baseline's ends at {fmt(base)})" if base is not None else "")
                 + ": the policy puts almost all its probability on one output"]
        kl_late = _late_mean(ctx.current, KL_METRIC[t], w)
        if kl and kl_late is not None:
            kl_base = _late_mean(ctx.baseline, KL_METRIC[t], w) if ctx.has_baseline else None
            signs.append(f"KL to the reference {fmt(kl_late)} nats over the late window"
                         + (f" (the baseline's {fmt(kl_base)})" if kl_base is not None else ""))
        zero = _late_mean(ctx.current, "frac_reward_zero_std", w)
        if zero is not None and zero >= IDENTICAL_GROUPS:
            signs.append(f"{zero:.0%} of the groups give every completion the same reward over the late window: "
                         "the completions are identical")
        return signs, kl + same

    def _reward_without_spread(self) -> bool:
        """GRPO/RLOO: every completion in (almost) every group scores the same, where the baseline's did
        not. The advantages are then 0 and nothing moves the policy: the reward is the cause, not the
        optimizer (unless the policy collapsed onto one output, which the collapse rule tells)."""
        if self.ctx.training_type not in ("grpo", "rloo"):
            return False
        w = self.ctx.settings.window
        cur = _late_mean(self.ctx.current, "frac_reward_zero_std", w)
        base = _late_mean(self.ctx.baseline, "frac_reward_zero_std", w) if self.ctx.has_baseline else 0.0
        return cur is not None and cur >= IDENTICAL_GROUPS and (base is None or base < 0.5)

    def _constant_reward_funcs(self) -> list[str]:
        """Reward functions that gave every completion the same score at every step of the current run."""
        dead = self.by_id.get(f"rl.{self.ctx.training_type}.reward_func_collapse")
        if dead is not None and dead.status in BAD and dead.details.get("constant"):
            return list(dead.details["constant"])
        names = sorted({k[len("rewards/"):-len("/std")] for r in self.ctx.current for k in r.series
                        if k.startswith("rewards/") and k.endswith("/std")})
        return [fn for fn in names
                if (vals := [v for r in self.ctx.current for _, v in r.finite_points(f"rewards/{fn}/std")])
                and max(vals) <= 1e-9]

    def collapse(self):
        """Collapse without NaN: a degenerate model whose values are all finite (a loss pinned at one value,
        dead gradients, an RL policy that emits one output)."""
        chk = self.by_id.get("stability.collapse")
        hit = chk is not None and chk.status in BAD
        rl_signs, rl_checks = self._rl_collapse_signs()
        if not hit and not rl_signs:
            return
        t = self.ctx.training_type
        evidence = (list(chk.details.get("signs", [])) if hit else []) + rl_signs
        lr = self.lr_diff()
        evidence += [f"config changed: {_fmt_diff(x)}" for x in training_config_diff(self.ctx)
                     if x["path"] in STABILITY_FIELDS or x["path"].startswith(f"{t}.")]
        evidence += [self.lr_applied(), self.also_changed()]
        if lr and lr[1] > lr[0]:
            cause = f"The learning rate was raised ({lr[0]:g} -> {lr[1]:g}) and training collapsed (no NaN)"
        elif rl_signs:
            cause = "The policy collapsed to a single output (entropy near 0, far from its reference)"
        else:
            cause = "Training collapsed (no NaN: a degenerate model whose values are all finite)"
        steps = _calming_steps(t) + [
            f"Inspect the first steps in steps.jsonl of {self.ctx.cur0.path.parent}: the update that blew the "
            "model up comes before the flat stretch"]
        if rl_signs:
            steps.append("Check the reward for an output that scores high whatever the prompt: a policy that "
                         "finds one collapses onto it")
        found = ([chk] if hit else []) + rl_checks
        self.add("collapse", cause, evidence, steps, self._health_explained(found), primary=found)

    def frozen(self):
        """The parameters do not move: update ratio 0, or far below the baseline's."""
        if self.found("nan_inf", "collapse"):
            return
        up = self.by_id.get("stability.update_ratio")
        if up is None or up.status not in BAD or self._reward_without_spread():
            return
        t = self.ctx.training_type
        if up.baseline is not None and up.current is not None:
            evidence = [f"median update ||dθ||/||θ|| per optimizer step {fmt(up.current)} vs the baseline's "
                        f"{fmt(up.baseline)}" + (f" ({up.baseline / up.current:.0f}x smaller)" if up.current > 0 else "")]
        else:
            evidence = [up.reason]
        evidence.append(self.lr_applied())
        grads = [v for r in self.ctx.current for _, v in r.finite_points("grad_norm")]
        if grads and max(grads) == 0:
            evidence.append(f"grad_norm is 0 at every one of {len(grads)} logged steps: no gradient reaches the weights")
        for cid in ("stability.learning", f"rl.{t}.kl_vanish", f"rl.{t}.entropy_stuck"):
            c = self.by_id.get(cid)
            if c is not None and c.status in BAD:
                evidence.append(f"{cid}: {c.reason}")
        diffs = [x for x in training_config_diff(self.ctx) if _sets_lr(x["path"])]
        others = [x for x in training_config_diff(self.ctx) if not _sets_lr(x["path"])
                  and (x["path"] in STABILITY_FIELDS or x["path"].startswith(f"{t}."))]
        evidence += [f"config changed: {_fmt_diff(x)}" for x in diffs + others]
        evidence.append(self.also_changed())
        lr = self.lr_diff()
        if lr and lr[1] < lr[0]:
            cause = (f"The learning rate was lowered ({lr[0]:g} -> {lr[1]:g}, {lr[0] / lr[1]:.0f}x): the parameters "
                     "barely move (a frozen policy)")
        elif diffs:
            cause = f"The learning-rate schedule changed ({_fmt_diff(diffs[0])}): the parameters barely move"
        elif self.lr_applied() and (self.by_id["stability.learning_rate"].change or 0) < 0:
            cause = ("The optimizer applies a learning rate far below the baseline's with the same config: the "
                     "parameters barely move (a scheduler, warmup or optimizer change in code)")
        elif others:
            cause = f"The parameters do not move since {_fmt_diff(others[0])}"
        else:
            cause = ("The parameters do not move though the learning rate is the baseline's: no gradient reaches "
                     "them, or they are not trainable")
        steps = ["Check the learning rate the optimizer applies: train.learning_rate, the scheduler and its warmup "
                 "(a warmup longer than the run keeps it near 0)",
                 "Check which parameters train: requires_grad (frozen layers, LoRA target modules) and that "
                 "the optimizer's param groups hold them",
                 "Check that the loss still has a gradient (a detached or zero-weighted term, label smoothing 0.5 "
                 "on a loss it cancels)"]
        self.add("frozen_policy", cause, evidence, steps, self._health_explained([up]), primary=[up])

    def kl_penalty(self):
        """The KL penalty is gone or weaker: the config zeroed its weight, the weight the trainer applied
        fell (read from its logs), or KL to the reference rose past the baseline's with the same learning
        rate and config while the policy still learns."""
        t, ctx = self.ctx.training_type, self.ctx
        if t not in KL_FIELD or not ctx.has_baseline or self.found("nan_inf", "collapse", "frozen_policy"):
            return
        field = KL_FIELD[t]
        rises = [c for c in _bad(self.checks, f"rl.{t}.") if c.metric == KL_METRIC[t] and c.direction == "lower_is_better"]
        evidence = [f"{c.id}: {c.reason}" for c in rises]
        diff = next((x for x in training_config_diff(ctx) if x["path"] == field), None)
        coef = _numbers(diff) if diff else None
        lowered = coef is not None and coef[1] < coef[0]
        b_w, c_w = applied_kl_weight(ctx.baseline, t), applied_kl_weight(ctx.current, t)
        weaker = b_w is not None and c_w is not None and b_w > 0 and c_w < 0.5 * b_w
        if weaker:
            term = "objective/non_score_reward / objective/kl" if t == "ppo" else "loss / kl"
            evidence.append(f"KL weight applied {fmt(c_w)} vs the baseline's {fmt(b_w)} (median {term} per step)")
        missing = (KL_METRIC[t] not in {k for r in ctx.current for k in r.series}
                   and any(r.finite_points(KL_METRIC[t]) for r in ctx.baseline))
        if missing and t != "ppo":
            evidence.append(f"{KL_METRIC[t]} is no longer logged (TRL logs it only when {field.split('.')[1]} > 0)")
        same_lr = self.lr_diff() is None and self.lr_applied() is None
        up = self.by_id.get("stability.update_ratio")
        learns = up is None or up.status not in BAD
        # RLOO logs no weight to read: KL rising past the baseline's with the same learning rate and
        # config while the parameters move normally points at the penalty; with one, the weight decides.
        unread = t == "rloo"
        failing = any(c.status == "fail" for c in rises)  # an inference: only from a failure, not a warning
        if not (lowered or weaker or (failing and unread and same_lr and learns)):
            return
        if lowered:
            gone = coef[1] == 0
            cause = (f"The KL penalty was {'removed' if gone else 'weakened'} ({field} {diff['baseline']} -> "
                     f"{diff['current']})" + (" and the policy drifted from the reference" if rises else ""))
        elif weaker:
            gone = c_w < 0.1 * b_w
            cause = (f"The KL penalty applied is {'gone' if gone else 'weaker'} ({fmt(b_w)} -> "
                     f"{'~0' if abs(c_w) < 0.01 * b_w else fmt(c_w)}) "
                     f"with {field} {ctx.cur0.setting(field)} in the config: the code path changes its weight")
        else:
            cause = (f"KL to the reference rose past the baseline's with the same learning rate and {field}: the "
                     "code weighs the KL term less (or drops it)")
        evidence.append(self.also_changed())
        steps = [f"Restore {field} (the baseline's {ctx.baseline[0].setting(field)}) or the code that applies it: "
                 + ("the trainer's args.kl_coef at every step" if t == "ppo" else f"the trainer's beta"),
                 "If the weaker penalty is intended, record a new baseline with it"]
        explained = rises + _bad(self.checks, ("correctness.", f"rl.{t}."))
        if missing:
            explained += _bad(self.checks, "run.metrics")
        if diff:
            explained += _bad(self.checks, "run.config")
        primary = list(rises)
        if weaker and t == "grpo":  # GRPO's logged loss is its KL term: the weight moves the loss curve itself
            primary += _bad(self.checks, "correctness.loss_curve")
        self.add("kl_penalty_removed", cause, evidence, steps, explained, primary=primary)

    def not_learning(self):
        """The run trains (its parameters move) but does not learn: the loss or the reward does not
        improve as the baseline's did, the RL policy's entropy stays at its start; or a GRPO/RLOO reward
        no longer tells completions apart (a function that stopped scoring: then nothing moves the policy)."""
        if self.found("nan_inf", "collapse", "frozen_policy"):
            return
        t = self.ctx.training_type
        ids = ["stability.learning", f"rl.{t}.reward_func_collapse", f"rl.{t}.entropy_stuck",
               f"rl.{t}.reward_std", f"rl.{t}.zero_std_fraction"]
        trends = [c for c in _bad(self.checks, f"rl.{t}.") if c.metric in REWARD_METRICS and _is_trend(c)]
        if self._reward_without_spread():
            ids.append("stability.update_ratio")  # nothing moves the policy when every advantage is 0
        bad = [self.by_id[i] for i in ids if i in self.by_id and self.by_id[i].status in BAD] + trends
        bad = [c for c in bad if c.id not in self.claimed()]
        if not bad:
            return
        diffs = [x for x in training_config_diff(self.ctx) if x["path"] in STABILITY_FIELDS
                 or x["path"].startswith(f"{t}.")]
        evidence = [f"{c.id}: {c.reason}" for c in bad] + [f"config changed: {_fmt_diff(x)}" for x in diffs]
        evidence += [self.lr_applied(), self.also_changed()]
        dead = self._constant_reward_funcs() if t in ("grpo", "rloo") else []
        lr = self.lr_diff()
        steps = ["Restore the config fields above, or the baseline's, and rerun"]
        if dead:
            names = ", ".join(dead)
            cause = f"The reward function {names} stopped scoring: every completion gets the same score"
            steps = [f"Run {names} on sampled completions: a constant return or an exception turned into a default "
                     "gives the policy nothing to learn from"]
        elif lr and lr[1] < lr[0]:
            cause = (f"The learning rate was lowered ({lr[0]:g} -> {lr[1]:g}, {lr[0] / lr[1]:.0f}x) and the "
                     "model is not learning")
        elif diffs:
            cause = f"The model is not learning since {_fmt_diff(diffs[0])}"
        elif {c.id for c in bad} <= {f"rl.{t}.reward_std", f"rl.{t}.zero_std_fraction"}:
            cause = "No learning signal: completions in a group get the same reward"
            steps = ["Check the reward functions on sampled completions", "Raise temperature or num_generations"]
        else:
            cause = "The model is not learning"
        steps.append("Check that the loss still has a gradient (label smoothing 0.5 or a zero-weight term cancels "
                     "it), which parameters are trainable (frozen layers, LoRA target modules) and that the "
                     "reward still varies between completions")
        self.add("not_learning", cause, evidence, steps, self._health_explained(bad), primary=bad)

    def instability(self):
        """Gradients, loss or value loss out of bounds, or an RL policy that moves away from its reference
        too fast (KL blow-up, entropy collapse), without NaN; a collapse or NaN explains them when present,
        a removed KL penalty explains the KL."""
        if self.found("nan_inf", "collapse"):
            return
        t = self.ctx.training_type
        ids = ("stability.grad_norm", "stability.loss_divergence", "rl.ppo.value_loss_explosion",
               f"rl.{t}.kl", "rl.ppo.kl_growth", "rl.ppo.entropy", "rl.ppo.entropy_collapse")
        claimed = self.claimed()
        bad = [self.by_id[i] for i in ids if i in self.by_id and self.by_id[i].status in BAD and i not in claimed]
        if not bad:
            return
        drift = [c for c in bad if c.id.startswith("rl.") and c.id != "rl.ppo.value_loss_explosion"]
        lr = self.lr_diff()
        evidence = [f"{c.id}: {c.reason}" for c in bad]
        evidence += [f"config changed: {_fmt_diff(x)}" for x in training_config_diff(self.ctx)
                     if x["path"] in STABILITY_FIELDS or x["path"].startswith(f"{t}.")]
        scores = self.by_id.get("correctness.reward_curve")
        if drift and scores is not None and scores.status in BAD and scores.step is not None:
            evidence.append(f"reward curve ({scores.metric}) left the baseline's band at step {scores.step}")
        evidence += [self.lr_applied(), self.also_changed()]
        if drift and len(drift) == len(bad):
            what = "the policy moves away from the reference too fast (KL blow-up, entropy collapse)"
        else:
            what = "training became unstable (" + ", ".join(c.title for c in bad) + ")"
        cause = (f"The learning rate was raised ({lr[0]:g} -> {lr[1]:g}) and {what}" if lr and lr[1] > lr[0]
                 else what[0].upper() + what[1:])
        steps = _calming_steps(t)
        if drift:
            steps.append("Check the reward scale" + (" (objective/scores)" if t == "ppo" else "")
                         + ": a larger reward pushes the policy harder")
        else:
            steps.append("Check a changed loss term's scale: a larger term raises every gradient")
        self.add("instability", cause, evidence, steps,
                 bad + _bad(self.checks, ("correctness.", f"rl.{t}.entropy", f"rl.{t}.clip")), primary=bad)

    def config_changed(self):
        diffs = training_config_diff(self.ctx)
        if not diffs:
            return
        perf_paths = [x for x in diffs if _perf_relevant(x["path"])]
        explained = _bad(self.checks, ("correctness.", "rl.", "stability.", "invariant."))
        if perf_paths:
            explained += _bad(self.checks, ("perf.", "memory."))
        explained += _bad(self.checks, "run.config")
        levers = [(x, _effect(x["path"])) for x in diffs if _effect(x["path"])]
        evidence = [f"config changed: {_fmt_diff(x)}" + (f" ({effect})" if effect else "")
                    for x, effect in ((x, _effect(x["path"])) for x in diffs[:8])]
        if len(diffs) > 8:
            evidence.append(f"... and {len(diffs) - 8} more config fields")
        bt, ct = _median_tokens(self.ctx.baseline), _median_tokens(self.ctx.current)
        if bt and ct and abs(ct / bt - 1) > 0.02:
            evidence.append(f"tokens per step {fmt(bt)} -> {fmt(ct)} ({pct(ct / bt - 1)}): the work per step changed")
        cause = "The canary config differs from the baseline's"
        if levers and _bad(self.checks, ("perf.", "memory.")):
            cause = "The config changed a performance lever: " + ", ".join(
                f"{x['path']} {x['baseline']!r} -> {x['current']!r}" for x, _ in levers[:2])
        self.add("config_change", cause,
                 evidence,
                 ["If the change is intended, record a new baseline with the new config",
                  "Otherwise revert the config change and rerun the canary"],
                 explained)

    def stack_changed(self):
        changes = stack_changes(self.ctx)
        if not changes:
            return
        explained = _bad(self.checks, ("perf.", "memory.", "correctness.", "stability.", "rl.", "invariant."))
        explained += _bad(self.checks, "environment.stack")
        evidence = [f"{c['field'].removeprefix('packages.')} {c['baseline']} -> {c['current']}" for c in changes]
        first = changes[0]
        pkg = first["field"].removeprefix("packages.")
        steps = []
        if first["field"].startswith("packages.") and first["baseline"]:
            steps.append(f"Pin the old version (pip install {pkg}=={first['baseline']}) and rerun the canary; "
                         "bisect one package at a time")
        steps.append("Read the release notes of the changed packages for performance or numerics changes")
        self.add("library_change",
                 "Library versions changed: " + ", ".join(evidence[:3]) + (" ..." if len(evidence) > 3 else ""),
                 evidence, steps, explained)

    def hardware(self):
        if not self.ctx.has_baseline or self.ctx.same_hardware:
            return
        b, c = self.ctx.baseline[0].env, self.ctx.cur0.env
        evidence = [f"hardware_key {b.get('hardware_key')} -> {c.get('hardware_key')}"]
        for key in ("cpu_model", "cpu_count"):
            if b.get(key) != c.get(key):
                evidence.append(f"{key} {b.get(key)} -> {c.get(key)}")
        gb, gc = b.get("gpu") or {}, c.get("gpu") or {}
        if gb.get("name") != gc.get("name"):
            evidence.append(f"GPU {gb.get('name')} -> {gc.get('name')}")
        explained = _bad(self.checks, ("perf.", "memory.", "environment.hardware"))
        self.add("hardware_change", "The runs were measured on different hardware", evidence,
                 ["Compare against a baseline recorded on the same runner type (baselines are keyed by "
                  "hardware_key)"], explained)

    def performance(self):
        step = self.by_id.get("perf.step_time")
        slow = [c for c in _bad(self.checks, "perf.") if c.change is not None]
        if step is None or step.status not in BAD:
            for c in (c for c in slow if c.status == "fail"):
                self.add("perf_regression", f"{c.title} regressed while the step time held", [c.reason],
                         ["See the phase and throughput checks; profile the slower phase"], [c])
            warns = [c for c in slow if c.status == "warn"]
            if warns:
                self._noise(warns)
            return
        if step.status == "warn" and step.ci is not None and step.ci[0] <= 0 <= (step.ci[1] or 0):
            self._noise([step])
        tps = self.by_id.get("perf.tokens_per_s")
        bt, ct = _median_tokens(self.ctx.baseline), _median_tokens(self.ctx.current)
        tok_change = (ct / bt - 1) if bt and ct else None
        evidence = [f"median step time {pct(step.change)} ({fmt(step.baseline, 's')} -> {fmt(step.current, 's')})"]
        if tok_change is not None and tok_change > 0.05 and (tps is None or tps.status == "pass"):
            self.add("more_work", f"More work per step: tokens per step {pct(tok_change)}, throughput unchanged",
                     evidence + [f"tokens per step {fmt(bt)} -> {fmt(ct)}",
                                 f"tokens/s {pct(tps.change) if tps else 'n/a'}: the speed per token held"],
                     ["Check what grew the batch: batch size, max_length, packing, or longer completions",
                      "If intended, record a new baseline"], [step])
            return
        phases = {c.id.removeprefix("perf.phase."): c for c in self.checks if c.id.startswith("perf.phase.")
                  and c.change is not None}
        gen, upd = phases.get("generation"), phases.get("update")
        if gen is not None and upd is not None:
            g, u = gen.change, upd.change
            evidence += [f"generation time per step {pct(g)} ({fmt(gen.baseline, 's')} -> {fmt(gen.current, 's')})",
                         f"update time per step {pct(u)} ({fmt(upd.baseline, 's')} -> {fmt(upd.current, 's')})"]
            if gen.status in BAD and upd.status not in BAD:
                self.add("generation_slower", "Generation (sampling and reward scoring) slowed; the update did not",
                         evidence,
                         ["Look at generation: generate() arguments, KV cache, sampling params, reward function cost",
                          "Completion length: see the completion-length checks and curves"], [step, gen])
                return
            if upd.status in BAD and gen.status not in BAD:
                self.add("update_slower", "The update (forward, backward, optimizer) slowed; generation did not",
                         evidence,
                         ["Look at the training step: gradient checkpointing, attention implementation, "
                          "precision, optimizer, loss computation"], [step, upd])
                return
        if tok_change is not None:
            evidence.append(f"tokens per step {pct(tok_change)} (same work per step)")
        if tps is not None and tps.change is not None:
            evidence.append(f"tokens/s {pct(tps.change)}")
        evidence += self._shape(step)
        self.add("slower_steps", "Every step got slower for the same work", evidence,
                 ["Profile one step on both sides (torch profiler) and compare the top operators",
                  "Check the diff for gradient checkpointing, attention implementation, dtype or extra "
                  "synchronisation (.item(), logging) in the step"],
                 [c for c in (step, tps) if c is not None and c.status in BAD])

    def _shape(self, step: Check) -> list[str]:
        """Is the slowdown a shift of every step, or stalls in some steps?"""
        b = [v for r in self.ctx.baseline for v in r.steady("step_time_s")]
        c = [v for r in self.ctx.current for v in r.steady("step_time_s")]
        if len(b) < 8 or len(c) < 8:
            return []
        qb = statistics.quantiles(b, n=10)
        qc = statistics.quantiles(c, n=10)
        low, high = relative_change(qb[0], qc[0]), relative_change(qb[-1], qc[-1])
        if low is None or high is None:
            return []
        if high > 2 * max(low, 0.02) and high - low > 0.1:
            return [f"the slow tail grew more than the fast steps (p10 {pct(low)}, p90 {pct(high)}): "
                    "intermittent stalls (GC, synchronisation, I/O, contention) rather than uniform slowdown"]
        return [f"fast and slow steps slowed alike (p10 {pct(low)}, p90 {pct(high)}): a uniform slowdown"]

    def _noise(self, checks: list[Check]):
        evidence = []
        for c in checks:
            if c.ci is not None:
                evidence.append(f"{c.id}: {pct(c.change)} with interval {pct(c.ci[0])}..{pct(c.ci[1])}")
        for label, runs in (("baseline", self.ctx.baseline), ("current", self.ctx.current)):
            vals = [v for r in runs for v in r.steady("step_time_s")]
            if len(vals) >= 3 and statistics.median(vals) > 0:
                mad = statistics.median(abs(v - statistics.median(vals)) for v in vals)
                evidence.append(f"{label} step-time jitter {mad / statistics.median(vals):.1%} (MAD / median) "
                                f"over {len(vals)} steps in {len(runs)} run(s)")
        self.add("timing_noise", "Timing noise: the slowdown is not conclusive", evidence,
                 ["Rerun, or pass several runs per side (repeats) to narrow the interval",
                  "Fit thresholds to this runner's noise with `canary calibrate`"],
                 [c for c in checks if c.status == "warn"])

    def memory(self):
        mem = _bad(self.checks, "memory.")
        if not mem:
            return
        evidence = [c.reason for c in mem[:3]]
        bt, ct = _median_tokens(self.ctx.baseline), _median_tokens(self.ctx.current)
        same_shape = bt is not None and ct is not None and abs(ct / bt - 1) <= 0.02
        if bt and ct:
            evidence.append(f"tokens per step {fmt(bt)} -> {fmt(ct)}" + (" (batch shape unchanged)" if same_shape else ""))
        grow = self._within_run_growth()
        if grow:
            evidence.append(grow)
        config_shape = [x for x in training_config_diff(self.ctx) if _perf_relevant(x["path"])]
        if same_shape and not config_shape:
            cause, kind = "Memory grew with the same batch shape: the code keeps more memory", "memory_growth"
            steps = ["Look for tensors kept alive across steps (losses accumulated without .item()/.detach(), "
                     "caches, hooks)", "Compare optimizer/model dtype and copies (reference model, EMA)"]
        else:
            cause, kind = "Memory follows a change in the workload", "memory_workload"
            steps = ["Check batch size, max_length and model changes in the config diff"]
        self.add(kind, cause, evidence, steps, mem)

    def _within_run_growth(self) -> str | None:
        r = self.ctx.cur0
        for name in ("mem_cuda_max_allocated_mb", "mem_rss_anon_mb"):
            pts = r.finite_points(name, after_warmup=True)
            tr = trend([p[0] for p in pts], [p[1] for p in pts])
            if tr is None:
                continue
            if tr.slope_ci[0] > 0 and tr.rise > 1.0:
                return (f"{name} keeps rising during the run ({fmt(tr.slope * 100, 'MB')} per 100 steps, "
                        f"+{fmt(tr.rise, 'MB')} over the run): a leak")
            return f"{name} is flat during the run ({signed_mb(tr.rise)} over the run): a larger footprint from the start"
        return None

    def rl_health(self):
        """The RL checks no training-health cause above explains."""
        t = self.ctx.training_type
        claimed = self.claimed()
        bad = [c for c in _bad(self.checks, f"rl.{t}.") if c.id not in claimed]
        if not bad:
            return
        ids = {c.id for c in bad}
        diffs = [x for x in training_config_diff(self.ctx)
                 if x["path"].startswith(f"{t}.") or x["path"] in ("train.learning_rate", "train.max_grad_norm")]
        evidence = [f"{c.id}: {c.reason}" for c in bad[:4]] + [f"config changed: {_fmt_diff(x)}" for x in diffs]
        drops = [c for c in bad if c.metric in REWARD_METRICS and c.direction == "higher_is_better"]
        if drops:
            kind = "reward_drop"
            cause = f"The reward ({drops[0].metric}) fell below the baseline's"
            evidence.append(self.also_changed())
            steps = ["Check the reward model or functions and what shapes the reward: penalties (PPO's "
                     "ppo.missing_eos_penalty), weights, the reward model's weights and tokenizer",
                     "Compare the reward curves with the baseline's to find the first step that differs"]
        elif t in ("grpo", "rloo") and ids & {f"rl.{t}.completion_length", f"rl.{t}.truncation"}:
            kind = "completion_length"
            cause = "Completion lengths changed (longer completions or more truncation at the limit)"
            steps = ["Check EOS handling and the chat template's stop tokens",
                     "Check max_completion_length and the length-related reward terms"]
        elif t in ("dpo", "reward"):
            kind = "preference_weakened"
            cause = "Preference learning weakened (accuracy or margin dropped)"
            steps = ["Check chosen/rejected order in the data pipeline and the loss (beta, loss_type)",
                     "Compare the loss and reward curves for the first step that differs"]
        else:
            kind = "rl_health"
            cause = f"{t.upper()} health regressed"
            steps = ["Compare the RL curves with the baseline's to find when it started"]
        explained = bad + _bad(self.checks, ("correctness.reward_curve",))
        self.add(kind, cause, evidence, steps, explained, primary=bad)

    def metrics_missing(self):
        """Metrics the baseline logged and the current run lacks (no health cause above explains them)."""
        chk = self.by_id.get("run.metrics")
        if chk is None or chk.status not in BAD or chk.id in self.claimed():
            return
        changes = stack_changes(self.ctx)
        evidence = [chk.reason]
        steps = ["If a library renamed the metric, map the new name in canary_runner/compare/loading.py ALIASES",
                 "Otherwise find the change that stopped computing or logging it"]
        if changes:
            evidence.append("libraries changed: " + ", ".join(
                f"{c['field'].removeprefix('packages.')} {c['baseline']} -> {c['current']}" for c in changes[:3])
                + ": a new version may log it under another name")
        self.add("metric_missing", "Metrics the baseline logged are missing from the current run", evidence, steps,
                 [chk] + [c for c in self.checks if c.status == "skip" and "see run.metrics" in c.reason])

    def divergence(self):
        curves = [c for c in _bad(self.checks, "correctness.") if c.step is not None]
        if not curves:
            return
        first = min(curves, key=lambda c: c.step)
        start = self.ctx.cur0.steps[0] if self.ctx.cur0.steps else 1
        evidence = [f"{c.metric} leaves the baseline's band at step {c.step} "
                    f"({fmt(c.current)} vs {fmt(c.baseline)})" for c in curves]
        inv = _bad(self.checks, "invariant.")
        evidence += [f"{c.id}: {c.reason}" for c in inv]
        det = self.by_id.get("correctness.deterministic")
        if det is not None and det.status == "skip":
            evidence.append("exact replay not checked: " + det.reason)
        b_sha, c_sha = self.ctx.baseline[0].info.get("git_sha"), self.ctx.cur0.info.get("git_sha")
        steps = ["Rerun both sides with train.deterministic: true to tell nondeterminism from a real change"]
        if b_sha and c_sha and b_sha != c_sha:
            steps.append(f"Bisect the commits {b_sha[:10]}..{c_sha[:10]} with the canary")
        if first.step <= start:
            cause = "The computation differs from the first step: loss, data, or initialisation changed"
            steps.insert(0, "Diff the loss function, the data pipeline (order, tokenisation, padding) and model init")
        else:
            cause = f"Training departs from the baseline at step {first.step}"
            steps.insert(0, f"Inspect the optimizer update and the data of step {first.step - 1} and {first.step}")
        self.add("divergence", cause, evidence, steps, curves + inv)

    def invariants(self):
        for c in _bad(self.checks, "invariant."):
            if c.id == "invariant.dpo.initial_loss":
                self.add("reference_mismatch", "The policy and the reference disagree before training, or the DPO loss changed",
                         [c.reason] + ([f"rewards/margins at step 1: {fmt(c.details['rewards/margins'])}"]
                                       if "rewards/margins" in c.details else []),
                         ["Check that the reference model is loaded from the same weights and dtype as the policy",
                          "Check dropout (train mode) and the loss_type/label smoothing"], [c])
            elif c.id.endswith(".reference_frozen"):
                self.add("reference_mismatch", "The reference model changed during training", [c.reason],
                         ["Look for code that updates or reloads ref_model (an optimizer over its parameters, a "
                          "sync_ref_model, a shared module between policy and reference)",
                          "With LoRA: check that only adapter weights are trainable"], [c])
            elif c.id.endswith((".initial_kl", ".initial_margin")):
                self.add("reference_mismatch", "The policy and the reference disagree before any update", [c.reason],
                         ["Check that the reference model is loaded from the same weights and dtype as the policy",
                          "Check for a policy update before the first loss (weights changed after generation)"], [c])
            elif c.id == "invariant.reward.initial_accuracy":
                self.add("reference_mismatch", "The reward model does not start untrained", [c.reason],
                         ["Check model.name: a trained reward checkpoint as the start separates pairs at step 1",
                          "Check the collator: chosen and rejected must be scored on their own texts"], [c])
            else:
                self.add("logprob_mismatch", "Sampling and training log-probabilities disagree before any update", [c.reason],
                         ["Check the temperature used to score the rollouts vs to sample them",
                          "Check padding/attention masks and position ids between generation and training",
                          "Check dropout in the policy during the update"], [c])


def signed_mb(x: float) -> str:
    return ("+" if x >= 0 else "") + fmt(x, "MB")


def diagnose(ctx: Context, checks: list[Check]) -> list[dict]:
    d = Diagnosis(ctx, checks)
    d.crashed()
    d.nonfinite()
    # training health, most specific first: each later rule leaves alone what an earlier one explains
    d.collapse()
    d.frozen()
    d.kl_penalty()
    d.not_learning()
    d.instability()
    d.invariants()
    d.rl_health()
    d.metrics_missing()
    d.divergence()
    d.performance()
    d.memory()
    if ctx.has_baseline:
        d.config_changed()
        d.stack_changed()
        d.hardware()
    return d.ranked()
