"""Diagnosis: likely causes of what the checks found, each with the evidence from the data behind it.

Every rule looks at the runs and the check results and, when its evidence is present, proposes one
cause with the measurements that support it and what to do next. Causes are ranked by how much of
the comparison they explain: the number of failing checks they account for, then warning checks,
then the number of independent pieces of evidence. No rule carries a fixed confidence number.
"""

from __future__ import annotations

import math
import statistics

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


class Diagnosis:
    def __init__(self, ctx: Context, checks: list[Check]):
        self.ctx = ctx
        self.checks = checks
        self.by_id = {c.id: c for c in checks}
        self.causes: list[dict] = []

    def add(self, cause: str, evidence: list[str], next_steps: list[str], explained: list[Check],
            lead: bool = False):
        """`lead`: a cause that comes first whatever else failed (a crash: the rest is measured on the
        steps before it)."""
        evidence = [e for e in evidence if e]
        if not evidence:
            return
        self.causes.append({"cause": cause, "evidence": evidence, "next_steps": next_steps,
                            "checks": sorted({c.id for c in explained}),
                            "_key": (int(lead), sum(c.status == "fail" for c in explained),
                                     sum(c.status == "warn" for c in explained), len(evidence))})

    def ranked(self) -> list[dict]:
        order = sorted(range(len(self.causes)), key=lambda i: (*(-k for k in self.causes[i]["_key"]), i))
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
            cause = "The run ran out of memory"
        elif r.status == "timeout":
            steps.insert(0, "Find the slow phase in the step-time checks, or raise train.timeout_s if the run "
                            "legitimately got longer")
            cause = "The run exceeded its time limit"
        elif r.status == "interrupted":
            steps.insert(0, "The runner stopped the job (cancelled workflow, preempted runner): rerun it")
            cause = "The run was interrupted"
        else:
            cause = f"The run crashed ({err.get('type', 'error')})"
        self.add(cause, evidence, steps, [chk], lead=True)

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
        steps = ["Lower train.learning_rate (or restore the baseline's) and keep train.max_grad_norm set",
                 "Prefer bf16 or fp32 over fp16", 
                 f"Inspect the steps before {k} in steps.jsonl of {run.path.parent}: which metric moved first"]
        explained = [chk] + _bad(self.checks, ("stability.", "rl.", "correctness.", "invariant."))
        self.add(cause, evidence, steps, explained)

    def collapse_or_stall(self):
        """Collapse without NaN, or a run that does not learn: most often a learning rate far off, or a
        loss whose gradient vanishes (e.g. DPO label smoothing 0.5)."""
        bad = [c for c in (self.by_id.get("stability.collapse"), self.by_id.get("stability.learning"))
               if c is not None and c.status in BAD]
        if not bad:
            return
        t = self.ctx.training_type
        diffs = [x for x in training_config_diff(self.ctx) if x["path"] in STABILITY_FIELDS
                 or x["path"].startswith(f"{t}.")]
        lr = next((x for x in diffs if x["path"] == "train.learning_rate" and isinstance(x["baseline"], (int, float))
                   and isinstance(x["current"], (int, float)) and x["baseline"] > 0), None)
        collapsed = bad[0].id == "stability.collapse"
        evidence = list(bad[0].details.get("signs", [])) if collapsed else [bad[0].reason]
        evidence += [f"config changed: {_fmt_diff(x)}" for x in diffs]
        if collapsed:
            cause = "Training collapsed (no NaN: a degenerate model whose values are all finite)"
            if lr and lr["current"] > lr["baseline"]:
                cause = (f"The learning rate was raised ({lr['baseline']:g} -> {lr['current']:g}) and training "
                         "collapsed (no NaN)")
            steps = ["Lower train.learning_rate (or restore the baseline's) and keep train.max_grad_norm set",
                     f"Inspect the first steps in steps.jsonl of {self.ctx.cur0.path.parent}: the update that "
                     "blew the loss up comes before the flat stretch"]
        else:
            cause = "The model is not learning"
            if lr and lr["current"] < lr["baseline"]:
                cause = (f"The learning rate was lowered ({lr['baseline']:g} -> {lr['current']:g}, "
                         f"{lr['baseline'] / lr['current']:.0f}x) and the model is not learning")
            elif diffs:
                cause = f"The model is not learning since {_fmt_diff(diffs[0])}"
            steps = ["Restore the config fields above, or the baseline's, and rerun",
                     "Check that the loss still has a gradient (label smoothing 0.5 or a zero-weight term "
                     "cancels it) and which parameters are trainable (frozen layers, LoRA target modules)"]
        explained = bad + _bad(self.checks, ("correctness.", "stability.", f"rl.{t}."))
        if diffs:
            explained += _bad(self.checks, "run.config")
        self.add(cause, evidence, steps, explained)

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
        self.add(cause,
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
        self.add("Library versions changed: " + ", ".join(evidence[:3]) + (" ..." if len(evidence) > 3 else ""),
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
        self.add("The runs were measured on different hardware", evidence,
                 ["Compare against a baseline recorded on the same runner type (baselines are keyed by "
                  "hardware_key)"], explained)

    def performance(self):
        step = self.by_id.get("perf.step_time")
        slow = [c for c in _bad(self.checks, "perf.") if c.change is not None]
        if step is None or step.status not in BAD:
            for c in (c for c in slow if c.status == "fail"):
                self.add(f"{c.title} regressed while the step time held", [c.reason],
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
            self.add(f"More work per step: tokens per step {pct(tok_change)}, throughput unchanged",
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
                self.add("Generation (sampling and reward scoring) slowed; the update did not", evidence,
                         ["Look at generation: generate() arguments, KV cache, sampling params, reward function cost",
                          "Completion length: see the completion-length checks and curves"], [step, gen])
                return
            if upd.status in BAD and gen.status not in BAD:
                self.add("The update (forward, backward, optimizer) slowed; generation did not", evidence,
                         ["Look at the training step: gradient checkpointing, attention implementation, "
                          "precision, optimizer, loss computation"], [step, upd])
                return
        if tok_change is not None:
            evidence.append(f"tokens per step {pct(tok_change)} (same work per step)")
        if tps is not None and tps.change is not None:
            evidence.append(f"tokens/s {pct(tps.change)}")
        evidence += self._shape(step)
        self.add("Every step got slower for the same work", evidence,
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
        self.add("Timing noise: the slowdown is not conclusive", evidence,
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
            cause = "Memory grew with the same batch shape: the code keeps more memory"
            steps = ["Look for tensors kept alive across steps (losses accumulated without .item()/.detach(), "
                     "caches, hooks)", "Compare optimizer/model dtype and copies (reference model, EMA)"]
        else:
            cause = "Memory follows a change in the workload"
            steps = ["Check batch size, max_length and model changes in the config diff"]
        self.add(cause, evidence, steps, mem)

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
        t = self.ctx.training_type
        bad = _bad(self.checks, f"rl.{t}.")
        if not bad:
            return
        ids = {c.id for c in bad}
        diffs = [x for x in training_config_diff(self.ctx)
                 if x["path"].startswith(f"{t}.") or x["path"] in ("train.learning_rate", "train.max_grad_norm")]
        evidence = [f"{c.id}: {c.reason}" for c in bad[:4]] + [f"config changed: {_fmt_diff(x)}" for x in diffs]
        if t == "ppo" and ids & {"rl.ppo.kl", "rl.ppo.kl_growth", "rl.ppo.entropy", "rl.ppo.entropy_collapse"}:
            kl = [x for x in diffs if x["path"] == "ppo.kl_coef"]
            cause = "The policy moves away from the reference too fast (KL blow-up, entropy collapse)"
            if kl:
                cause = f"The KL penalty was weakened (ppo.kl_coef {kl[0]['baseline']} -> {kl[0]['current']}) " \
                        "and the policy drifted from the reference"
            scores = self.by_id.get("correctness.reward_curve")
            if scores is not None and scores.details.get("steps_outside"):
                evidence.append(f"reward curve ({scores.metric}) left the baseline's band at step {scores.step}")
            steps = ["Restore ppo.kl_coef / train.learning_rate if they changed; lower the learning rate otherwise",
                     "Check the reward scale (objective/scores): a larger reward pushes the policy harder",
                     "Check cliprange and num_ppo_epochs: more epochs per batch move the policy further"]
        elif t in ("grpo", "rloo") and ids & {f"rl.{t}.reward_std", f"rl.{t}.zero_std_fraction"}:
            cause = "No learning signal: completions in a group get the same reward"
            steps = ["Check the reward functions on sampled completions", "Raise temperature or num_generations"]
        elif t in ("grpo", "rloo") and ids & {f"rl.{t}.completion_length", f"rl.{t}.truncation"}:
            cause = "Completion lengths changed (longer completions or more truncation at the limit)"
            steps = ["Check EOS handling and the chat template's stop tokens",
                     "Check max_completion_length and the length-related reward terms"]
        elif t in ("dpo", "reward"):
            cause = "Preference learning weakened (accuracy or margin dropped)"
            steps = ["Check chosen/rejected order in the data pipeline and the loss (beta, loss_type)",
                     "Compare the loss and reward curves for the first step that differs"]
        else:
            cause = f"{t.upper()} health regressed"
            steps = ["Compare the RL curves with the baseline's to find when it started"]
        explained = bad + _bad(self.checks, ("correctness.reward_curve",))
        self.add(cause, evidence, steps, explained)

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
        self.add(cause, evidence, steps, curves + inv)

    def invariants(self):
        for c in _bad(self.checks, "invariant."):
            if c.id == "invariant.dpo.initial_loss":
                self.add("The policy and the reference disagree before training, or the DPO loss changed",
                         [c.reason] + ([f"rewards/margins at step 1: {fmt(c.details['rewards/margins'])}"]
                                       if "rewards/margins" in c.details else []),
                         ["Check that the reference model is loaded from the same weights and dtype as the policy",
                          "Check dropout (train mode) and the loss_type/label smoothing"], [c])
            else:
                self.add("Sampling and training log-probabilities disagree before any update", [c.reason],
                         ["Check the temperature used to score the rollouts vs to sample them",
                          "Check padding/attention masks and position ids between generation and training",
                          "Check dropout in the policy during the update"], [c])


def signed_mb(x: float) -> str:
    return ("+" if x >= 0 else "") + fmt(x, "MB")


def diagnose(ctx: Context, checks: list[Check]) -> list[dict]:
    d = Diagnosis(ctx, checks)
    d.crashed()
    d.nonfinite()
    d.collapse_or_stall()
    d.invariants()
    d.rl_health()
    d.divergence()
    d.performance()
    d.memory()
    if ctx.has_baseline:
        d.config_changed()
        d.stack_changed()
        d.hardware()
    return d.ranked()
