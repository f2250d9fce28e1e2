"""Equivalence classes: variants of one canary that must train identically, checked without a baseline.

A baseline cannot catch a bug it shares (the gradient-accumulation loss-normalisation bug trained both
sides alike). Some facts hold whatever the code's history: `batch 8 x accumulation 1` and `batch 4 x
accumulation 2` see the same samples per optimizer step, so in fp32 with the same seed their loss and
grad-norm curves agree to float precision. Each class names such a set of variants; the variants run
after the canary (short, fp32, deterministic) and their curves are compared step by step.

Shipped classes are built from the canary's own config; a user's class lists its variants as plain
config overrides. Variants with the same resolved config run once (the canary itself is the first
variant of most classes).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import CanaryConfig, ConfigError, EquivalenceClass, with_overrides

MAX_DEFAULT_STEPS = 8
# What every variant runs with: the same seed, fp32, deterministic kernels, no warm-up exclusion,
# one thread on the CPU (the same reduction order in every variant), no held-out evaluation.
FIXED = {"train.precision": "fp32", "train.deterministic": True, "train.warmup_steps": 0}

# Where each shipped class applies, and why not elsewhere (said in the skip reason).
NOT_FOR = {
    "data_parallel": ({"ppo", "grpo", "rloo"}, "each rank samples its own completions, so 1 and 2 processes "
                                               "generate different text; the curves are not expected to agree"),
    "padding": ({"ppo", "grpo", "rloo"}, "the online trainers pad prompts for generation, where extra padding "
                                         "changes the sampled text"),
    "resume": ({"ppo"}, "TRL's PPO trainer has no checkpoint resume"),
    # Measured: batch 16 x 1 and 8 x 2 part at step 1 (loss 5.7e-4 vs 5.3e-4). TRL's PPO averages the
    # policy loss over each micro-batch's tokens, so with responses of different lengths accumulation
    # weighs tokens differently: a property of the trainer, not a regression.
    "grad_accumulation": ({"ppo"}, "TRL's PPO averages its loss over each micro-batch's own tokens, so "
                                   "accumulation reweighs tokens when response lengths differ"),
    "lora_merge": ({"reward"}, "a LoRA adapter on the reward model's score head is not merged the same way"),
}


@dataclass
class Variant:
    label: str
    overrides: dict[str, Any]
    resume_at: int | None = None  # stop at this step, checkpoint, and resume in a fresh trainer


@dataclass
class Plan:
    cls: EquivalenceClass
    variants: list[Variant] = field(default_factory=list)
    skip: str | None = None  # why the class does not apply to this canary


def _steps(cls: EquivalenceClass, cfg: CanaryConfig) -> int:
    return cls.steps or max(2, min(cfg.train.max_steps, MAX_DEFAULT_STEPS))


def _smallest_factor(n: int) -> int | None:
    return next((k for k in range(2, n + 1) if n % k == 0), None)


def shipped_variants(name: str, cfg: CanaryConfig, steps: int) -> list[Variant] | str:
    """The variants of a shipped class for `cfg`, or why the class does not apply."""
    t, tr = cfg.training_type, cfg.train
    excluded, why = NOT_FOR.get(name, (set(), ""))
    if t in excluded:
        return f"not for {t}: {why}"
    me = Variant("this canary", {})
    if name == "grad_accumulation":
        b, a = tr.per_device_batch_size, tr.gradient_accumulation_steps
        k = _smallest_factor(b)
        if k is not None:
            return [me, Variant(f"batch {b // k} x accumulation {a * k}",
                                {"train.per_device_batch_size": b // k, "train.gradient_accumulation_steps": a * k})]
        if a > 1:
            return [me, Variant(f"batch {b * a} x accumulation 1",
                                {"train.per_device_batch_size": b * a, "train.gradient_accumulation_steps": 1})]
        return "batch 1 x accumulation 1 cannot be split: set train.per_device_batch_size to 2 or more"
    if name == "data_parallel":
        n, b = cfg.distributed.nproc_per_node, tr.per_device_batch_size
        if n == 1:
            if b % 2:
                return f"per_device_batch_size {b} is odd: 2 processes cannot share the same global batch"
            return [me, Variant(f"2 processes x batch {b // 2}",
                                {"distributed.nproc_per_node": 2, "train.per_device_batch_size": b // 2})]
        return [me, Variant(f"1 process x batch {b * n}",
                            {"distributed.nproc_per_node": 1, "train.per_device_batch_size": b * n})]
    if name == "attention":
        other = "sdpa" if cfg.model.attn_implementation == "eager" else "eager"
        return [me, Variant(f"attention {other}", {"model.attn_implementation": other})]
    if name == "padding":
        return [me, Variant("padded to a multiple of 64", {f"{t}.extra_args.pad_to_multiple_of": 64})]
    if name == "resume":
        if steps < 2:
            return "resume needs at least 2 steps"
        return [me, Variant(f"{steps // 2} steps, checkpoint, resume", {}, resume_at=steps // 2)]
    if name == "lora_merge":
        return [Variant("LoRA model", {} if cfg.model.lora else {"model.lora": {}})]
    raise ValueError(name)


def plan(cfg: CanaryConfig) -> list[Plan]:
    """What each class of `cfg` will run (ConfigError for a variant that is not a valid config)."""
    plans = []
    for cls in cfg.equivalence:
        steps = _steps(cls, cfg)
        if cls.variants is not None:
            vs: list[Variant] | str = [Variant(f"variant {j + 1}", dict(v)) for j, v in enumerate(cls.variants)]
        else:
            vs = shipped_variants(cls.name, cfg, steps)
        p = Plan(cls)
        if isinstance(vs, str):
            p.skip = vs
        else:
            p.variants = vs
        plans.append(p)
    return plans


def variant_config(cfg: CanaryConfig, cls: EquivalenceClass, v: Variant) -> CanaryConfig:
    fixed = dict(FIXED, **{"train.max_steps": _steps(cls, cfg)})
    if "heldout" in CanaryConfig.model_fields:
        fixed["heldout.enabled"] = False
    if cfg.train.device != "cuda" and not cfg.train.cpu_threads:
        fixed["train.cpu_threads"] = 1
    return with_overrides(cfg, {**v.overrides, **fixed}, f"equivalence {cls.name} ({v.label})")


# -- running ---------------------------------------------------------------------------------------------


class _StopAt:
    """Stop training after `step` and write a checkpoint there (the first half of a resumed run)."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class StopAndCheckpoint(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= step:
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return StopAndCheckpoint()


class _MergedLogits:
    """At the end of training: the LoRA model's logits and the merged model's, on a fixed input."""

    def __new__(cls, sink: dict):
        from transformers import TrainerCallback

        class Capture(TrainerCallback):
            def on_train_end(self, args, state, control, model=None, **kwargs):
                sink.update(lora_vs_merged(model))

        return Capture()


def lora_vs_merged(model) -> dict:
    """Logits of a PEFT model and of a merged copy, on the same fixed tokens."""
    import torch
    from peft import PeftModel

    model = getattr(model, "module", model)
    model = getattr(model, "policy", model)  # PPO wraps policy and value model
    if not isinstance(model, PeftModel):
        return {"error": f"the trained model is a {type(model).__name__}, not a PEFT model: no adapter to merge"}
    was_training = model.training
    model.eval()
    try:
        vocab = model.get_input_embeddings().weight.shape[0]
        device = next(model.parameters()).device
        ids = torch.randint(0, vocab, (2, 32), generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            lora = model(input_ids=ids).logits.float()
            merged_model = copy.deepcopy(model).merge_and_unload()
            merged = merged_model(input_ids=ids).logits.float()
        del merged_model
    finally:
        model.train(was_training)
    return {"lora": lora.flatten().tolist(), "merged": merged.flatten().tolist()}


def _run_one(cfg: CanaryConfig, out: Path, resume_at: int | None, extra_callbacks=()) -> tuple[dict, int]:
    from .distributed import run_canary
    from .runner import run

    if resume_at is None:
        if extra_callbacks:
            return run(cfg, out, callbacks=extra_callbacks)
        return run_canary(cfg, out)
    first, code = run(cfg, out / "first", callbacks=[_StopAt(resume_at), *extra_callbacks])
    if code != 0:
        return first, code
    ckpt = out / "first" / "trainer" / f"checkpoint-{resume_at}"
    if not ckpt.is_dir():
        return first, 3
    second, code = run(cfg, out / "resumed", callbacks=list(extra_callbacks), resume_from=str(ckpt))
    a, b = first["series"], second["series"]
    series = {k: list(a.get(k) or [None] * len(a["step"])) + list(b.get(k) or [None] * len(b["step"]))
              for k in {*a, *b}}
    return dict(second, series=series), code


def compare_curves(a: dict, b: dict, metrics: list[str], rtol: float, atol: float) -> dict:
    """Step-by-step agreement of two runs' series: |a - b| <= atol + rtol * max(|a|, |b|) (NaN agrees
    only with NaN). Per metric: the first step past the tolerance, the worst step, max and mean |a - b|."""
    out = {}
    for m in metrics:
        sa = dict(zip(a.get("step", []), a.get(m) or []))
        sb = dict(zip(b.get("step", []), b.get(m) or []))
        common = [s for s in sa if s in sb and sa[s] is not None and sb[s] is not None]
        if not common:
            out[m] = {"compared": 0}
            continue
        diffs, first, worst, worst_excess = [], None, None, -math.inf
        for s in common:
            x, y = float(sa[s]), float(sb[s])
            if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
                d = 0.0 if (math.isnan(x) and math.isnan(y)) or x == y else math.inf
            else:
                d = abs(x - y)
            allowed = atol + rtol * max(abs(x), abs(y)) if math.isfinite(d) else 0.0
            diffs.append(d)
            excess = d / allowed if allowed > 0 else (math.inf if d > 0 else 0.0)
            if d > allowed and first is None:
                first = s
            if excess > worst_excess:
                worst, worst_excess = s, excess
        finite = [d for d in diffs if math.isfinite(d)]
        out[m] = {"compared": len(common), "first_step": first, "worst_step": worst,
                  "max_abs": max(diffs), "mean_abs": (sum(finite) / len(finite)) if finite else math.inf,
                  "agree": first is None}
    return out


def run_all(cfg: CanaryConfig, out_dir: Path, say=None) -> list[dict]:
    """Run every class of `cfg` under `out_dir/equivalence/`; the results for the run record."""
    say = say or (lambda msg: print(f"canary: {msg}", file=sys.stderr, flush=True))
    results, cache = [], {}
    for p in plan(cfg):
        t0 = time.perf_counter()
        res = _run_class(cfg, p, Path(out_dir) / "equivalence" / p.cls.name, cache)
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results.append(res)
        say(f"equivalence {p.cls.name}: {res['status']} ({res['summary']})")
    return results


def _run_class(cfg: CanaryConfig, p: Plan, out: Path, cache: dict) -> dict:
    cls = p.cls
    res: dict = {"name": cls.name, "shipped": cls.variants is None, "rtol": cls.rtol, "atol": cls.atol,
                 "metrics": list(cls.metrics), "steps": _steps(cls, cfg), "variants": []}
    if p.skip:
        return res | {"status": "skip", "summary": p.skip}
    if cls.name == "lora_merge" and cls.variants is None:
        return res | _lora_merge(cfg, p, out)
    runs = []
    for j, v in enumerate(p.variants):
        try:
            vcfg = variant_config(cfg, cls, v)
        except ConfigError as e:
            return res | {"status": "error", "summary": str(e)}
        key = (vcfg.hash(), v.resume_at)
        if key not in cache:
            cache[key] = _run_one(vcfg, out / f"variant-{j + 1}", v.resume_at)
        record, code = cache[key]
        series = {k: record["series"].get(k) for k in ("step", *cls.metrics)}
        res["variants"].append({"label": v.label, "overrides": v.overrides, "resume_at": v.resume_at,
                                "status": record["status"], "series": series})
        if code != 0 or record["status"] != "completed":
            err = (record.get("error") or {}).get("message", "")
            return res | {"status": "error", "summary": f"variant '{v.label}' {record['status']}: {err}"[:500]}
        runs.append(record["series"])
    diffs = [compare_curves(runs[0], r, cls.metrics, cls.rtol, cls.atol) for r in runs[1:]]
    res["differences"] = diffs
    return res | _verdict(diffs, p.variants, cls)


def _verdict(diffs: list[dict], variants: list[Variant], cls: EquivalenceClass) -> dict:
    parted = []
    for j, d in enumerate(diffs, start=1):
        for m, x in d.items():
            if x.get("compared", 0) == 0:
                continue
            if not x["agree"]:
                parted.append((x["first_step"], m, j, x))
    if not any(x.get("compared") for d in diffs for x in d.values()):
        return {"status": "error", "summary": f"no common steps with {', '.join(cls.metrics)} logged"}
    if not parted:
        worst = max((x["max_abs"] for d in diffs for x in d.values() if x.get("compared")), default=0.0)
        return {"status": "pass", "summary": f"{len(variants)} variants agree at every step (max |difference| "
                                             f"{worst:.3g}, tolerance rtol {cls.rtol:g} + atol {cls.atol:g})"}
    step, m, j, x = min(parted, key=lambda t: t[0])
    return {"status": "fail", "first_step": step, "metric": m,
            "summary": f"'{variants[j].label}' parts from '{variants[0].label}' at step {step}: {m} differs by "
                       f"up to {x['max_abs']:.3g} (worst at step {x['worst_step']}; tolerance rtol {cls.rtol:g} + "
                       f"atol {cls.atol:g})"}


def _lora_merge(cfg: CanaryConfig, p: Plan, out: Path) -> dict:
    cls, v = p.cls, p.variants[0]
    try:
        vcfg = variant_config(cfg, cls, v)
    except ConfigError as e:
        return {"status": "error", "summary": str(e)}
    if vcfg.distributed.nproc_per_node > 1:
        vcfg = with_overrides(vcfg, {"distributed.nproc_per_node": 1}, "equivalence lora_merge")
    sink: dict = {}
    record, code = _run_one(vcfg, out / "variant-1", None, extra_callbacks=[_MergedLogits(sink)])
    variants = [{"label": v.label, "overrides": v.overrides, "status": record["status"]}]
    if code != 0 or record["status"] != "completed":
        err = (record.get("error") or {}).get("message", "")
        return {"variants": variants, "status": "error", "summary": f"the LoRA run {record['status']}: {err}"[:500]}
    if "error" in sink or not sink:
        return {"variants": variants, "status": "error", "summary": sink.get("error", "no logits were captured")}
    lora, merged = sink["lora"], sink["merged"]
    idx = list(range(len(lora)))
    d = compare_curves({"step": idx, "logits": lora}, {"step": idx, "logits": merged}, ["logits"], cls.rtol, cls.atol)
    x = d["logits"]
    step = record["series"]["step"][-1]
    res = {"variants": variants, "differences": [{"logits": {k: x[k] for k in ("compared", "max_abs", "mean_abs",
                                                                                 "agree")}}]}
    if x["agree"]:
        return res | {"status": "pass", "summary": f"merged and unmerged logits agree after step {step} (max "
                                                   f"|difference| {x['max_abs']:.3g} over {x['compared']} logits)"}
    return res | {"status": "fail", "first_step": step, "metric": "logits",
                  "summary": f"after step {step} the merged model's logits differ from the LoRA model's by up to "
                             f"{x['max_abs']:.3g} (mean {x['mean_abs']:.3g}; tolerance rtol {cls.rtol:g} + atol "
                             f"{cls.atol:g})"}
