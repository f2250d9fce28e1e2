"""Facts measured during a run that must hold whatever the baseline (`record["invariants"]`).

- reference_frozen: an exact fingerprint of the reference model's parameters at train begin and at
  the end (DPO, PPO, GRPO/RLOO with beta > 0). With LoRA the reference is the base with the adapter
  disabled, so the base weights (the parameters that do not require grad) are fingerprinted.
- logprob_mismatch (GRPO/RLOO): at the first step, the log-probs of the sampled tokens as the
  sampler computed them (generate's raw logits / temperature) against the log-probs of the same
  tokens from the training forward pass (the first policy forward with grad enabled). In TRL's
  defaults (num_iterations 1, steps_per_generation = gradient_accumulation_steps) GRPO computes no
  old log-probs: its importance ratio is exp(logp - logp.detach()) = 1 by construction, and this
  is the only measurement of whether the policy that sampled is the policy being trained. PPO needs
  no probe: its old log-probs come from the generation logits, so `val/ratio` at step 1 is this fact.

Nothing here judges: compare reads the record and applies the limits.
"""

from __future__ import annotations

import copy

import torch
from transformers import TrainerCallback

CHUNK = 1 << 24  # elements per piece when fingerprinting: bounds the int64 copy on large tensors
PROBE_BYTES = 2 << 30  # the log-prob probe keeps one generation's logits: at most this much
FIRST_CHANGED = 5  # changed tensors named in the record
_INT_VIEW = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


def tensor_fingerprint(t: torch.Tensor) -> tuple[int, int, int]:
    """(numel, sum of the bit patterns, position-weighted sum) over the raw bits, on the tensor's own
    device. Integer arithmetic is exact, so any change of any bit changes it unless two changes cancel
    in both sums at once."""
    flat = t.detach().reshape(-1)
    bits = flat.view(_INT_VIEW[flat.element_size()])
    total, weighted = 0, 0
    for i in range(0, bits.numel(), CHUNK):
        piece = bits[i:i + CHUNK].to(torch.int64)
        pos = torch.arange(i, i + piece.numel(), device=piece.device, dtype=torch.int64) % 65521 + 1
        total += int(piece.sum())
        weighted += int((piece * pos).sum())
    return flat.numel(), total, weighted


def fingerprint(params: dict[str, torch.Tensor]) -> dict[str, tuple[int, int, int]]:
    with torch.no_grad():
        return {name: tensor_fingerprint(p) for name, p in params.items()}


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def reference_params(trainer, training_type: str) -> tuple[dict | None, str]:
    """The reference model's parameters for `trainer` and what they are; (None, why) when it has none."""
    if training_type not in ("dpo", "ppo", "grpo", "rloo"):
        return None, f"{training_type} has no reference model"
    args = trainer.args
    if training_type in ("grpo", "rloo") and getattr(trainer, "beta", 0.0) == 0.0:
        return None, f"{training_type}.beta is 0: no reference model is used"
    if getattr(args, "sync_ref_model", False):
        return None, "sync_ref_model is on: the reference is updated from the policy by design"
    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        return dict(ref.named_parameters()), "ref_model"
    policy = trainer.accelerator.unwrap_model(trainer.model)
    policy = getattr(policy, "policy", policy)  # PPO wraps policy and value model together
    policy = trainer.accelerator.unwrap_model(policy)
    if _is_peft(policy):
        frozen = {n: p for n, p in policy.named_parameters() if not p.requires_grad}
        return frozen, "base weights under the adapter (the reference is the adapter-disabled model)"
    if getattr(args, "precompute_ref_log_probs", False):
        return None, "reference log-probs are precomputed before training: no reference model is kept"
    return None, "the trainer holds no reference model"


class InvariantRecorder(TrainerCallback):
    """Add to the trainer and call `attach(trainer)` before training; `result()` after it."""

    def __init__(self, training_type: str):
        self.training_type = training_type
        self.trainer = None
        self._ref: dict | None = None
        self._ref_what = "not recorded: training did not begin"
        self._begin = None
        self._gen = None  # first generation: [(prompt, completion, log-probs)], sampler settings
        self._mismatch = None
        self._probe_note = None
        self._restore = []

    # -- wiring ------------------------------------------------------------------------------------

    def attach(self, trainer) -> None:
        self.trainer = trainer
        if self.training_type in ("grpo", "rloo"):
            self._install_probes(trainer)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None or self._begin is not None:
            return
        try:
            self._ref, self._ref_what = reference_params(self.trainer, self.training_type)
            if self._ref is not None and not sum(p.numel() for p in self._ref.values()):
                self._ref, self._ref_what = None, "the reference's parameters hold no values here (partitioned " \
                                                  "across ranks, ZeRO-3, or on the meta device): not fingerprinted"
            if self._ref is not None:
                self._begin = fingerprint(self._ref)
        except Exception as e:  # a probe must never break the run: say why the fact is missing
            self._ref, self._ref_what = None, f"the reference could not be fingerprinted: {type(e).__name__}: {e}"

    def result(self) -> dict:
        self._unpatch()
        try:
            reference = self._reference_result()
        except Exception as e:  # a record must still be written: say why this fact is missing
            reference = {"checked": False, "why": f"the end fingerprint failed: {type(e).__name__}: {e}"}
        out = {"reference_frozen": reference}
        if self.training_type in ("grpo", "rloo"):
            out["logprob_mismatch"] = self._mismatch or {"measured": False, "why": self._probe_note or (
                "no generation and training forward were seen at the first step")}
        return out

    def _reference_result(self) -> dict:
        if self._ref is None or self._begin is None:
            return {"checked": False, "why": self._ref_what}
        end = fingerprint(self._ref)
        changed = [n for n, fp in self._begin.items() if end.get(n) != fp]
        return {"checked": True, "reference": self._ref_what, "tensors": len(self._begin),
                "elements": sum(fp[0] for fp in self._begin.values()), "changed_count": len(changed),
                "changed": changed[:FIRST_CHANGED]}

    # -- GRPO/RLOO: generation vs training log-probs at the first step ------------------------------

    def _install_probes(self, trainer) -> None:
        if getattr(trainer, "use_vllm", False) or getattr(trainer, "use_transformers_continuous_batching", False):
            self._probe_note = "generation runs outside model.generate (vLLM or continuous batching): not probed"
            return
        if getattr(trainer, "use_liger_kernel", False) or not hasattr(trainer, "_get_per_token_logps_and_entropies"):
            self._probe_note = "the training forward does not go through _get_per_token_logps_and_entropies"
            return
        model = trainer.accelerator.unwrap_model(trainer.model)
        gen_orig = model.generate
        logp_orig = trainer._get_per_token_logps_and_entropies
        recorder = self

        def generate(*args, **kwargs):
            if recorder._gen is not None:
                return gen_orig(*args, **kwargs)
            if not recorder._fits(kwargs, model):
                recorder._gen = []
                return gen_orig(*args, **kwargs)
            if kwargs.get("generation_config") is not None:  # a copy: TRL's own config stays as it is
                kwargs["generation_config"] = copy.deepcopy(kwargs["generation_config"])
                kwargs["generation_config"].output_logits = True
                kwargs["generation_config"].return_dict_in_generate = True
            else:
                kwargs.update(output_logits=True, return_dict_in_generate=True)
            out = gen_orig(*args, **kwargs)
            try:
                recorder._record_generation(kwargs, out)
            except Exception as e:  # a probe must never break the run
                recorder._probe_note = f"generation could not be read: {type(e).__name__}: {e}"
                recorder._gen = []
            return out.sequences

        def get_logps(model_, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
            out = logp_orig(model_, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
            if (recorder._gen and recorder._mismatch is None and torch.is_grad_enabled()
                    and model_ is not getattr(trainer, "ref_model", None)):
                try:
                    recorder._compare(input_ids, attention_mask, logits_to_keep, out[0])
                except Exception as e:
                    recorder._probe_note = f"training log-probs could not be compared: {type(e).__name__}: {e}"
                    recorder._mismatch = {"measured": False, "why": recorder._probe_note}
            return out

        model.generate = generate
        trainer._get_per_token_logps_and_entropies = get_logps
        self._restore = [(model, "generate"), (trainer, "_get_per_token_logps_and_entropies")]

    def _fits(self, kwargs, model) -> bool:
        """generate returns every step's logits (rows x new tokens x vocab, fp32 here): skip the probe where
        that would not fit comfortably (a large vocabulary and long completions)."""
        cfg = kwargs.get("generation_config")
        rows = kwargs["input_ids"].size(0) if "input_ids" in kwargs else 0
        new = getattr(cfg, "max_new_tokens", None) or 0
        vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 0
        size = rows * new * vocab * 4
        if size > PROBE_BYTES:
            self._probe_note = (f"the first generation's logits ({rows} x {new} x {vocab}, {size / 2**30:.1f} GiB) exceed "
                                f"the probe's {PROBE_BYTES / 2**30:.0f} GiB: not probed")
            return False
        return True

    def _unpatch(self) -> None:
        for obj, name in self._restore:
            obj.__dict__.pop(name, None)
        self._restore = []

    def _record_generation(self, kwargs, out) -> None:
        trainer = self.trainer
        cfg = kwargs.get("generation_config")
        temperature = float(getattr(cfg, "temperature", None) or 1.0)
        prompt_ids, prompt_mask = kwargs["input_ids"], kwargs["attention_mask"]
        tokens = out.sequences[:, prompt_ids.size(1):]
        logits = torch.stack(out.logits, dim=1).float() / temperature
        logps = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        eos = trainer.processing_class.eos_token_id if hasattr(trainer.processing_class, "eos_token_id") \
            else trainer._tokenizer.eos_token_id
        rows = []
        for p, pm, c, lp in zip(prompt_ids.cpu(), prompt_mask.cpu(), tokens.cpu(), logps.detach().cpu()):
            n = len(c)
            hits = (c == eos).nonzero()
            if len(hits):
                n = int(hits[0]) + 1  # TRL keeps the completion up to and including the first EOS
            rows.append((tuple(p[pm.bool()].tolist()), tuple(c[:n].tolist()), lp[:n]))
        self._gen = rows
        self._sampler = {name: getattr(cfg, name, None) for name in
                         ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")}

    def _compare(self, input_ids, attention_mask, logits_to_keep, train_logps) -> None:
        by_key = {}
        for prompt, completion, lp in self._gen:
            by_key.setdefault((prompt, completion), lp)
        ids, mask, lps = input_ids.cpu(), attention_mask.cpu().bool(), train_logps.detach().float().cpu()
        diffs, unmatched = [], 0
        for row_ids, row_mask, row_lp in zip(ids, mask, lps):
            p_ids, p_mask = row_ids[:-logits_to_keep], row_mask[:-logits_to_keep]
            c_ids, c_mask = row_ids[-logits_to_keep:], row_mask[-logits_to_keep:]
            key = (tuple(p_ids[p_mask].tolist()), tuple(c_ids[c_mask].tolist()))
            gen = by_key.get(key)
            if gen is None:
                unmatched += 1
                continue
            diffs.append((row_lp[c_mask] - gen).abs())
        if not diffs:
            self._mismatch = {"measured": False, "why": f"none of the {len(ids)} training rows matched a generated "
                                                        "completion (a completion rewritten between generation and loss?)"}
            return
        d = torch.cat(diffs)
        self._mismatch = {"measured": True, "step": int(self.trainer.state.global_step) + 1,
                          "tokens": int(d.numel()), "rows": len(diffs), "rows_unmatched": unmatched,
                          "max_abs": float(d.max()), "mean_abs": float(d.mean()),
                          "sampler": self._sampler,
                          "dtype": str(next(iter(self.trainer.model.parameters())).dtype).replace("torch.", "")}
