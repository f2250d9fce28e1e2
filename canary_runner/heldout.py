"""Held-out evaluation: a metric on a fixed set the canary never trains on, at step 0, every k steps
and at the end.

Training metrics read the training pairs: with chosen and rejected swapped consistently across the
data, DPO and reward-model accuracy on their own pairs still rises. A held-out set labelled the right
way shows the direction the model actually learned:

- dpo: preference accuracy, the share of pairs whose implicit reward margin
  [log pi(chosen) - log ref(chosen)] - [log pi(rejected) - log ref(rejected)] is positive (ties count
  half, so step 0, where pi = ref, reads 0.5), summed completion log-probs; ref = the model at step 0,
  whose log-probs are cached then. The margin is reported x beta, like TRL's rewards/margins.
- reward: the share of pairs with score(chosen) > score(rejected) (ties half); mean score margin.
- sft: mean per-token loss on the held-out completions (assistant tokens).
- ppo/grpo/rloo: not applicable (no fixed answer to score): nothing is recorded.

Rows are tokenized once, as TRL 1.12 tokenizes them (chat template, prompt with the generation
prompt, completion = the rest; EOS appended to plain-text completions), and evaluated in eval mode
under no_grad, in chunks no larger than a training batch. The time (and CUDA peak) an evaluation
takes is left out of the step records (StepCollector.outside_steps).
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

METRIC = {"dpo": "preference_accuracy", "reward": "preference_accuracy", "sft": "loss"}
EMBEDDED_HELDOUT = {"dpo": "embedded:preference_heldout", "reward": "embedded:preference_heldout",
                    "sft": "embedded:sft_heldout"}


def dataset_name(cfg) -> tuple[str | None, str | None]:
    """The held-out dataset for `cfg`, or (None, why there is none)."""
    from .workload import embedded

    if cfg.heldout.dataset:
        return cfg.heldout.dataset, None
    if cfg.dataset.name is None or embedded.is_embedded(cfg.dataset.name):
        return EMBEDDED_HELDOUT[cfg.training_type], None
    return None, ("the training dataset is not embedded, so there is no implicit held-out set: set "
                  "heldout.dataset to a held-out set of the same kind (e.g. a file, or a Hub name with heldout.split)")


def every(cfg) -> int | None:
    """Evaluate every k optimizer steps: as set, else none in the smoke tier, max_steps // 4 otherwise."""
    if "every" in cfg.heldout.model_fields_set or cfg.tier == "smoke":
        return cfg.heldout.every
    return max(1, cfg.train.max_steps // 4)


def attach(cfg, trainer, tokenizer, collector=None) -> "HeldoutCallback | None":
    """Add the held-out evaluation to `trainer` (None: disabled or not applicable to the type).
    A held-out dataset that cannot be loaded raises sources.WorkloadError (bad input)."""
    if not cfg.heldout.enabled or cfg.training_type not in METRIC:
        return None
    name, why = dataset_name(cfg)
    if why is None and cfg.distributed.nproc_per_node > 1 and cfg.distributed.strategy == "fsdp":
        why = "FSDP shards the parameters across ranks; the held-out evaluation runs on DDP or one process only"
    rows = None
    if why is None:
        from .workload import sources

        ds = sources.load_dataset(name, cfg.training_type, cfg.heldout.split, cfg.heldout.max_rows,
                                  cfg.dataset.format)
        rows = encode(cfg, tokenizer, ds)
        if not rows:
            raise sources.WorkloadError(f"heldout.dataset '{name}': no row fits train.max_length "
                                        f"({cfg.train.max_length} tokens)")
    cb = HeldoutCallback(cfg, tokenizer, name, rows, every(cfg), collector, why)
    trainer.add_callback(cb)
    return cb


def result_of(trainer) -> dict | None:
    """The held-out result of a trainer `attach` instrumented (None: none attached)."""
    if trainer is None:
        return None
    cb = next((c for c in trainer.callback_handler.callbacks if isinstance(c, HeldoutCallback)), None)
    return cb.result() if cb is not None else None


# -- tokenization, as TRL 1.12 does it ------------------------------------------------------------------


def _chat_ids(tok, messages, generation_prompt=False) -> list[int]:
    return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=generation_prompt)["input_ids"])


def _with_eos(text: str, tok) -> str:
    return text if text.endswith(tok.eos_token) else text + tok.eos_token


def _prompt_completion(tok, prompt, completion) -> tuple[list[int], int]:
    """(prompt + completion ids, prompt length), DPOTrainer's way: the prompt with the generation
    prompt, the completion = what the whole conversation adds after it."""
    if isinstance(prompt, list):
        head = _chat_ids(tok, prompt, generation_prompt=True)
        full = _chat_ids(tok, prompt + completion)
    else:
        head = list(tok(prompt)["input_ids"])
        full = list(tok(prompt + _with_eos(completion, tok))["input_ids"])
    return full, len(head)


def encode(cfg, tok, ds) -> list[dict]:
    """Token ids (and loss/score positions) per held-out row, truncated as the trainer truncates."""
    from trl.data_utils import extract_prompt

    limit = cfg.train.max_length
    out = []
    for row in ds:
        if cfg.training_type == "sft":
            item = _sft_row(tok, row)
            ids, mask = item[0][:limit], item[1][:limit]
            if sum(mask[1:]):  # at least one scored target after truncation
                out.append({"ids": ids, "mask": mask})
            continue
        if "prompt" not in row:
            row = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
        pair = {}
        for side in ("chosen", "rejected"):
            ids, start = _prompt_completion(tok, row["prompt"], row[side])
            if cfg.training_type == "reward":
                # RewardTrainer scores prompt + completion whole (chat template without a generation
                # prompt, which for a chat template is the same ids) and drops pairs over max_length.
                if isinstance(row["prompt"], list):
                    ids = _chat_ids(tok, row["prompt"] + row[side])
                pair[side] = {"ids": ids}
            else:
                # DPO keeps the start (truncation_mode keep_start) and scores the completion tokens.
                mask = ([0] * start + [1] * (len(ids) - start))[:limit]
                pair[side] = {"ids": ids[:limit], "mask": mask}
        if cfg.training_type == "reward" and max(len(p["ids"]) for p in pair.values()) > limit:
            continue
        out.append(pair)
    return out


def _sft_row(tok, row) -> tuple[list[int], list[int]]:
    """(ids, loss mask): the assistant's last turn in a conversation, the completion of a
    prompt/completion row, every token of plain text."""
    if "messages" in row:
        msgs = row["messages"]
        if msgs and msgs[-1]["role"] == "assistant":
            full = _chat_ids(tok, msgs)
            start = len(_chat_ids(tok, msgs[:-1], generation_prompt=True))
            return full, [0] * start + [1] * (len(full) - start)
        full = _chat_ids(tok, msgs)
        return full, [1] * len(full)
    if "prompt" in row:
        ids, start = _prompt_completion(tok, row["prompt"], row["completion"])
        return ids, [0] * start + [1] * (len(ids) - start)
    ids = list(tok(_with_eos(row["text"], tok))["input_ids"])
    return ids, [1] * len(ids)


# -- evaluation ------------------------------------------------------------------------------------------


def _batches(seqs: list[dict], size: int):
    for i in range(0, len(seqs), size):
        yield seqs[i: i + size]


def _pad(chunk: list[dict], pad_id: int, device):
    import torch

    width = max(len(s["ids"]) for s in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(chunk), width), dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.bool)
    for i, s in enumerate(chunk):
        n = len(s["ids"])
        ids[i, :n] = torch.tensor(s["ids"])
        attn[i, :n] = 1
        if "mask" in s:
            mask[i, :n] = torch.tensor(s["mask"], dtype=torch.bool)
    return ids.to(device), attn.to(device), mask.to(device)


def _token_logps(model, chunk, pad_id, device):
    """Per sequence: the log-probs of its masked target tokens, summed, and how many there were."""
    import torch

    ids, attn, mask = _pad(chunk, pad_id, device)
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    target = mask[:, 1:]
    return (logp * target).sum(-1), target.sum(-1)


def _scores(model, chunk, pad_id, device):
    ids, attn, _ = _pad(chunk, pad_id, device)
    return model(input_ids=ids, attention_mask=attn, use_cache=False).logits.reshape(len(chunk), -1)[:, 0].float()


def _accuracy(margins) -> float:
    """Share of positive margins, ties counting half (no preference either way)."""
    wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    return wins / len(margins)


class HeldoutCallback(TrainerCallback):
    def __init__(self, cfg, tokenizer, name, rows, every_k, collector=None, skipped=None):
        self.training_type = cfg.training_type
        self.beta = float(cfg.dpo.extra_args.get("beta", cfg.dpo.beta)) if cfg.dpo is not None else 1.0
        self.name, self.rows, self.every, self.collector = name, rows, every_k, collector
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.chunk = max(2 * cfg.train.per_device_batch_size, 2)  # sequences per forward: a training batch's worth
        self.skipped = skipped
        self.points: list[dict] = []
        self.ref: list[tuple[float, float]] | None = None  # DPO: (chosen, rejected) log-probs at step 0
        self.error: str | None = None
        self.seconds: list[float] = []

    # -- TrainerCallback
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._evaluate(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.points or self.points[-1]["step"] != state.global_step:
            self._evaluate(model, state.global_step)

    def result(self) -> dict:
        out = {"metric": METRIC[self.training_type], "dataset": self.name,
               "rows": len(self.rows) if self.rows else 0, "every": self.every, "points": self.points}
        if self.skipped:
            out["skipped"] = self.skipped
        if self.error:
            out["error"] = self.error
        if self.seconds:
            out["seconds_per_eval"] = sum(self.seconds) / len(self.seconds)
        return out

    def _evaluate(self, model, step: int) -> None:
        if self.skipped or self.error or model is None:
            return
        import contextlib

        import torch

        outside = self.collector.outside_steps() if self.collector is not None else contextlib.nullcontext()
        with outside:
            t0 = time.perf_counter()
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    point = {"step": step, **self._measure(model)}
                self.points.append(point)
            except Exception as e:  # an evaluation bug must not crash the training it watches
                self.error = f"step {step}: {type(e).__name__}: {e}"
            finally:
                if was_training:
                    model.train()
            self.seconds.append(time.perf_counter() - t0)

    def _measure(self, model) -> dict:
        device = next(model.parameters()).device
        if self.training_type == "sft":
            total, count = 0.0, 0
            for chunk in _batches(self.rows, self.chunk):
                logp, n = _token_logps(model, chunk, self.pad_id, device)
                total -= float(logp.sum())
                count += int(n.sum())
            return {"value": total / count, "tokens": count}
        pairs = self.rows
        seqs = [p[side] for p in pairs for side in ("chosen", "rejected")]
        if self.training_type == "reward":
            scores = [float(x) for c in _batches(seqs, self.chunk) for x in _scores(model, c, self.pad_id, device)]
            margins = [scores[2 * i] - scores[2 * i + 1] for i in range(len(pairs))]
        else:
            logps = [float(x) for c in _batches(seqs, self.chunk)
                     for x in _token_logps(model, c, self.pad_id, device)[0]]
            now = [(logps[2 * i], logps[2 * i + 1]) for i in range(len(pairs))]
            if self.ref is None:
                self.ref = now  # the first evaluation is at step 0: the model is the reference
            margins = [self.beta * ((c - rc) - (r - rr)) for (c, r), (rc, rr) in zip(now, self.ref)]
        n = len(margins)
        mean = sum(margins) / n
        sd = (sum((m - mean) ** 2 for m in margins) / (n - 1)) ** 0.5 if n > 1 else 0.0
        return {"value": _accuracy(margins), "margin": mean, "margin_se": sd / n ** 0.5}

