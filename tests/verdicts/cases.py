"""The verdict suite's catalog: real regressions of the six embedded canaries, each arriving as a config
change and as code (the config unchanged), plus A/A reruns and healthy changes, with what the verdict
must say about each. tests/verdicts/test_verdicts.py asserts it; benchmarks/verdict_suite.py prints
the detection and false-alarm table from the same catalog.

Every comparison runs with the timing and memory checks off (TIMING_OFF): on a shared CI machine step
times are the performance benchmarks' subject, and these cases are about whether training happened.

Besides its own comparison, every regression is compared again with the current record's
`env.packages` edited as if a library had been upgraded beside the change (another TRL cannot be
installed here: its PPO is gone from 1.13 on, so the upgrade is simulated in the record): a stack
difference must not soften the verdict. And an A/A rerun is compared with one of its series renamed,
as a library renames a logged metric: a known rename (loading.ALIASES) changes nothing, an unknown one
is a named `run.metrics` warning, never a silent skip.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

TYPES = ("sft", "dpo", "reward", "ppo", "grpo", "rloo")

# Timing and memory depend on the machine's load, not on the change under test.
TIMING_OFF = {"checks": {cid: {"enabled": False} for cid in (
    "perf.step_time", "perf.tokens_per_s", "perf.phase", "memory.cpu_rss_anon_peak", "memory.cpu_rss_anon_rise",
    "memory.cuda_max_allocated", "memory.cuda_max_reserved", "distributed.rank_memory",
    "distributed.straggler_ratio")}}

# A library upgrade beside the change (simulated in the current record, see the module docstring).
UPGRADE = {"trl": "1.13.0", "transformers": "5.25.0"}


@dataclass(frozen=True)
class Run:
    """One training run: the shipped config `<type>_embedded` with `sets` (`--set` overrides) and,
    optionally, a code change from tests/verdicts/breaks.py."""

    key: str
    type: str
    sets: tuple[str, ...] = ()
    code: str | None = None

    @property
    def config(self) -> str:
        return f"{self.type}_embedded"


@dataclass(frozen=True)
class Case:
    """One comparison and what its verdict must be.

    arrival: config | code (regressions), aa, healthy, rename. `must_fail`: check ids (fnmatch
    patterns; "a|b" means either) that must fail. `kinds`: the acceptable `kind`s of the first-ranked
    cause (None: not asserted). `variant`: how the current record is edited before comparing (None,
    "upgrade", "alias:<old>=<new>", "rename:<old>=<new>"). For A/A and healthy cases `verdict` is the
    worst verdict allowed once the warnings in `allow_warn` are set aside; `never_fail` lists checks
    that must not fail and `never_kinds` causes that must not come first.
    """

    name: str
    type: str
    arrival: str
    breaks: str
    current: Run
    baseline: Run
    verdict: str
    must_fail: tuple[str, ...] = ()
    must_warn: tuple[str, ...] = ()
    kinds: tuple[str, ...] | None = None
    variant: str | None = None
    allow_warn: tuple[str, ...] = ()
    never_fail: tuple[str, ...] = ()
    never_kinds: tuple[str, ...] = ()
    mentions: tuple[str, ...] = field(default=())  # text the must_warn checks' reasons must contain

    @property
    def id(self) -> str:
        return self.name.replace(" ", "-")


def base(t: str) -> Run:
    return Run(f"{t}/base", t)


# -- the regressions ---------------------------------------------------------------------------------
# family -> (types, what it breaks, config overrides per type, code change per type, must fail, kinds)
FROZEN = ("stability.update_ratio",)
NOT_LEARNING = ("stability.learning|stability.update_ratio",)
COLLAPSE = ("stability.collapse",)


def _per_type(value, t):
    return value(t) if callable(value) else value


FAMILIES = {
    # A policy that never moves: the learning rate 1e-9 in the config, or overwritten in a callback.
    "frozen-lr": dict(types=TYPES, breaks="frozen policy: learning rate 1e-9",
                      sets=("train.learning_rate=1e-9",), code="lr:1e-9", must_fail=FROZEN,
                      kinds=("frozen_policy",)),
    # A learning-rate warmup far longer than the run (config), or a loss whose gradient never reaches
    # the weights (code: gradients zeroed before the optimizer step). Frozen as well.
    "frozen-warmup": dict(types=TYPES, breaks="frozen policy: warmup 1e5 steps / zero gradients",
                          sets=lambda t: ("train.lr_scheduler=constant_with_warmup", f"{t}.extra_args.warmup_steps=100000"),
                          code="grad_scale:0", must_fail=FROZEN, kinds=("frozen_policy",)),
    # A learning rate 1000x too low: the model barely learns.
    "slow-lr": dict(types=TYPES, breaks="not learning: learning rate 1000x lower",
                    sets=lambda t: (f"train.learning_rate={SLOW_LR[t]}",), code=lambda t: f"lr:{SLOW_LR[t]}",
                    must_fail=NOT_LEARNING, kinds=("not_learning", "frozen_policy")),
    # DPO's aot loss with label smoothing 0.5 has zero gradient (config); code: the loss scaled by 1e-12.
    "dpo-zero-gradient": dict(types=("dpo",), breaks="not learning: zero gradient",
                              sets=("dpo.loss_type=aot", "dpo.extra_args.label_smoothing=0.5"), code="grad_scale:1e-12",
                              must_fail=NOT_LEARNING, kinds=("not_learning", "frozen_policy")),
    # A learning rate so high that training collapses to a degenerate model (no NaN).
    "collapse-lr": dict(types=("sft", "reward", "dpo", "grpo", "rloo"), breaks="collapse: learning rate far too high",
                        sets=lambda t: (f"train.learning_rate={COLLAPSE_LR[t]}",), code=lambda t: f"lr:{COLLAPSE_LR[t]}",
                        must_fail=COLLAPSE, kinds=("collapse",)),
    # The KL penalty removed: kl_coef / beta 0 in the config (GRPO/RLOO then log no KL at all); in code,
    # PPO's kl_coef zeroed on the trainer's arguments, or GRPO/RLOO's KL term dropped from the loss (KL
    # still logged; over 20 steps GRPO's KL barely moves without it, its loss loses the beta x KL term).
    "kl-removed": dict(types=("ppo", "grpo", "rloo"), breaks="KL penalty removed",
                       sets=lambda t: ("ppo.kl_coef=0",) if t == "ppo" else (f"{t}.beta=0",),
                       code=lambda t: "args:kl_coef=0" if t == "ppo" else "kl_term_dropped",
                       # a KL check (level, growth, vanishing, or the KL weight applied)
                       must_fail=lambda t: (f"rl.{t}.kl*",),
                       kinds=("kl_penalty_removed",)),
    # PPO's scores drop by 1.0: a missing-EOS penalty on a model that never emits EOS.
    "ppo-reward-drop": dict(types=("ppo",), breaks="reward drop: missing_eos_penalty 1.0",
                            sets=("ppo.missing_eos_penalty=1.0",), code="args:missing_eos_penalty=1.0",
                            must_fail=("rl.ppo.*reward*|rl.ppo.*score*",), kinds=("reward_drop",)),
    # GRPO/RLOO's reward function stopped scoring (the same value for every completion): the config
    # names another function, or the code of the one it names changed. Every group's advantages are 0,
    # so no gradient reaches the policy: it does not move.
    "reward-stopped": dict(types=("grpo", "rloo"), breaks="reward function stopped scoring",
                           sets=lambda t: (f"{t}.reward_funcs=[tests.verdicts.breaks:no_score]",),
                           code="reward_no_score:lowercase", must_fail=lambda t: (f"rl.{t}.reward*",),
                           # the function the baseline logged now scores every completion alike
                           must_fail_code=lambda t: (f"rl.{t}.reward_func_collapse",),
                           kinds=("frozen_policy", "not_learning")),
}
# 1000x below the shipped learning rates.
SLOW_LR = {"sft": 1e-6, "reward": 1e-6, "dpo": 5e-7, "ppo": 3e-6, "grpo": 4e-6, "rloo": 5e-6}
# Learning rates that collapse each type within its smoke steps (measured: loss or entropy pinned, no NaN).
COLLAPSE_LR = {"sft": 1e3, "reward": 1e3, "dpo": 1e3, "grpo": 1.0, "rloo": 1.0}


def regressions() -> list[Case]:
    out = []
    for family, f in FAMILIES.items():
        for t in f["types"]:
            for arrival in ("config", "code"):
                if arrival == "config":
                    cur = Run(f"{t}/{family}-config", t, sets=tuple(_per_type(f["sets"], t)))
                else:
                    cur = Run(f"{t}/{family}-code", t, code=_per_type(f["code"], t))
                must_fail = _per_type(f["must_fail"], t) + _per_type(f.get(f"must_fail_{arrival}", ()), t)
                common = dict(type=t, breaks=f["breaks"], current=cur, baseline=base(t), verdict="fail",
                              must_fail=tuple(must_fail), kinds=f["kinds"])
                out.append(Case(f"{t} {family} {arrival}", arrival=arrival, **common))
                # The same regression beside a library upgrade: no softer verdict, the same cause.
                out.append(Case(f"{t} {family} {arrival} upgrade", arrival="upgrade", variant="upgrade", **common))
    return out


# -- runs that must not fail -------------------------------------------------------------------------
# Known renames (loading.ALIASES) and unknown ones, per type: (old name, new name).
ALIAS = {"ppo": ("objective/kl", "kl"), "grpo": ("kl", "objective/kl"), "rloo": ("kl", "objective/kl"),
         "sft": ("learning_rate", "lr"), "dpo": ("learning_rate", "lr"), "reward": ("learning_rate", "lr")}
RENAME = {"ppo": ("objective/kl", "objective/kl_mean"), "grpo": ("kl", "kl/mean"), "rloo": ("kl", "kl/mean"),
          "sft": ("mean_token_accuracy", "token_accuracy"), "dpo": ("rewards/margins", "rewards/margin_mean"),
          "reward": ("accuracy", "pairwise_accuracy")}


def others() -> list[Case]:
    out = []
    for t in TYPES:
        rerun = Run(f"{t}/rerun", t)
        out.append(Case(f"{t} aa rerun", t, "aa", "nothing (same config rerun)", rerun, base(t), "pass"))
        # Another seed is another config: run.config says so, and nothing else may warn or fail.
        out.append(Case(f"{t} aa seed", t, "aa", "nothing (another seed)", Run(f"{t}/seed1", t, sets=("seed=1",)),
                        base(t), "pass", allow_warn=("run.config",)))
        old, new = ALIAS[t]
        out.append(Case(f"{t} rename known", t, "rename", f"nothing ({old} logged as {new}, a known alias)",
                        rerun, base(t), "pass", variant=f"alias:{old}={new}"))
        old, new = RENAME[t]
        out.append(Case(f"{t} rename unknown", t, "rename", f"metric renamed by a library ({old} -> {new})",
                        rerun, base(t), "warn", must_warn=("run.metrics",), variant=f"rename:{old}={new}",
                        mentions=(old,)))
    # Healthy changes of gradient scale: they may change the numbers (run.config warns) but are no
    # instability. LoRA rank 8 -> 1, and DPO's ipo loss.
    instab = dict(verdict="any", never_fail=("stability.grad_norm",), never_kinds=("instability",))
    for t in ("sft", "dpo"):
        out.append(Case(f"{t} healthy lora r8-r1", t, "healthy", "nothing (LoRA rank 8 -> 1)",
                        Run(f"{t}/lora1", t, sets=("model.lora.r=1",)), Run(f"{t}/lora8", t, sets=("model.lora.r=8",)),
                        **instab))
    out.append(Case("dpo healthy ipo", "dpo", "healthy", "nothing (DPO loss sigmoid -> ipo)",
                    Run("dpo/ipo", "dpo", sets=("dpo.loss_type=ipo",)), base("dpo"), **instab))
    return out


CASES: list[Case] = regressions() + others()


def runs(cases: list[Case] = CASES) -> list[Run]:
    """Every run the cases need, once each, baselines first."""
    seen: dict[str, Run] = {}
    for c in cases:
        seen.setdefault(c.baseline.key, c.baseline)
    for c in cases:
        seen.setdefault(c.current.key, c.current)
    return list(seen.values())


# -- judging -----------------------------------------------------------------------------------------


def matches(pattern: str, check_ids) -> bool:
    return any(fnmatch.fnmatchcase(cid, alt) for alt in pattern.split("|") for cid in check_ids)


def problems(case: Case, got: dict) -> list[str]:
    """What in `got` (a `judge` summary) departs from the case's expectations; empty when it meets them."""
    out = []
    fails, warns = got["fail"], got["warn"]
    first = got["kinds"][0] if got["kinds"] else None
    if case.arrival in ("config", "code", "upgrade"):
        if got["verdict"] != case.verdict:
            out.append(f"verdict {got['verdict']}, expected {case.verdict}")
        for pattern in case.must_fail:
            if not matches(pattern, fails):
                out.append(f"{pattern} did not fail")
        if case.variant == "upgrade" and "environment.stack" not in fails + warns:
            out.append("the simulated upgrade was not seen (environment.stack neither warned nor failed)")
        if case.kinds is not None and first not in case.kinds:
            out.append(f"first cause kind {first!r} ({got['causes'][0] if got['causes'] else 'no cause'}), "
                       f"expected {'/'.join(case.kinds)}")
        return out
    if case.arrival == "healthy":  # only instability is ruled out
        for pattern in case.never_fail:
            if matches(pattern, fails):
                out.append(f"{pattern} failed")
        if first in case.never_kinds:
            out.append(f"first cause kind {first!r}")
        return out
    if fails:
        out.append(f"verdict fail ({', '.join(fails)}), expected {case.verdict}")
    other_warns = [w for w in warns if w not in case.allow_warn and w not in case.must_warn]
    if case.verdict == "pass" and other_warns:
        out.append(f"warned ({', '.join(other_warns)}), expected pass")
    for pattern in case.must_warn:
        if not matches(pattern, warns):
            out.append(f"{pattern} did not warn")
    for text in case.mentions:
        if not any(text in got["reasons"].get(w, "") for w in warns if matches("|".join(case.must_warn), [w])):
            out.append(f"the {'/'.join(case.must_warn)} warning does not name {text!r}")
    return out


def outcome(case: Case, got: dict) -> str:
    """detected | warned | missed (regressions), or false-fail | false-warn | ok (the others)."""
    if case.arrival in ("config", "code", "upgrade"):
        return {"fail": "detected", "warn": "warned"}.get(got["verdict"], "missed")
    if case.arrival == "healthy":
        return "false-fail" if problems(case, got) else "ok"
    if got["fail"]:
        return "false-fail"
    return "false-warn" if problems(case, got) else "ok"
