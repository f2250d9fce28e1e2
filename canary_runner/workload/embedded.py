"""The embedded offline workload: a tokenizer and tiny models built from specs in the repo.

Nothing is downloaded. The tokenizer is a byte-level BPE trained on the shipped datasets; the models
are randomly initialised from `specs/<name>.json` under a fixed seed. Both are cached on disk under a
key that hashes the spec, the data and the library versions, and are byte-identical across builds,
so two runners that build them get the same canary.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .make_data import CORPUS, DATA_DIR

SPEC_DIR = Path(__file__).parent / "specs"
PREFIX = "embedded:"
SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML. `{% generation %}` marks assistant tokens so SFT's assistant_only_loss works.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def is_embedded(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def spec_names() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.json"))


def load_spec(name: str) -> dict:
    path = SPEC_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown embedded model '{PREFIX}{name}'; available: "
                         + ", ".join(PREFIX + n for n in spec_names()))
    return json.loads(path.read_text())


def cache_root() -> Path:
    return Path(os.environ.get("CANARY_CACHE_DIR") or Path.home() / ".cache" / "rlhf-canary")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


@contextmanager
def _build_once(target: Path):
    """Yield a temp dir to build into, then move it to `target`; a file lock keeps concurrent
    ranks or CI jobs from building the same artifact twice. Yields None when it already exists."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            yield None
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        tmp.chmod(0o755)
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _corpus() -> list[str]:
    """Every string in the shipped datasets, in a fixed order."""
    texts = []
    for name in ("sft", "preference", "prompts"):  # this order: the tokenizer's merges depend on it
        for line in (DATA_DIR / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            for value in row.values():
                for m in value if isinstance(value, list) else [{"content": value}]:
                    texts.append(m["content"])
    return texts


def tokenizer_path(vocab_size: int = 512) -> Path:
    import tokenizers
    import transformers

    key = _digest(CHAT_TEMPLATE.encode(), str(vocab_size).encode(),
                  *((DATA_DIR / f"{name}.jsonl").read_bytes() for name in sorted(CORPUS)),
                  tokenizers.__version__.encode(), transformers.__version__.encode())
    target = cache_root() / "tokenizers" / f"bpe{vocab_size}-{key}"
    with _build_once(target) as tmp:
        if tmp is not None:
            _build_tokenizer(tmp, vocab_size)
    return target


def _build_tokenizer(out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token=None,
        unk_token=None, additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
        model_max_length=2048, padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def model_path(name: str, head: str = "causal") -> Path:
    """Build (once) and return the directory of embedded model `name` with a causal-LM head, a
    one-logit sequence-classification head (`head="score"`, randomly initialised), or the embedded
    PPO reward model (`head="reward"`, see `_set_lowercase_reward`; Llama specs only)."""
    import torch
    import transformers

    spec_name = name.removeprefix(PREFIX)
    spec = load_spec(spec_name)
    tok_dir = tokenizer_path(spec.get("vocab_size", 512))
    if head == "reward" and not has_reward_model(name):
        raise ValueError(f"embedded model '{PREFIX}{spec_name}' has no built-in reward model "
                         "(only Llama specs do); set model.reward_model")
    from .rewards import LOWERCASE

    rule = LOWERCASE.pattern.encode() if head == "reward" else b""
    key = _digest(json.dumps(spec, sort_keys=True).encode(), head.encode(), tok_dir.name.encode(),
                  torch.__version__.encode(), transformers.__version__.encode(), *([rule] if rule else []))
    target = cache_root() / "models" / f"{spec_name}-{head}-{key}"
    with _build_once(target) as tmp:
        if tmp is not None:
            _build_model(tmp, spec, head, tok_dir)
    return target


def _build_model(out: Path, spec: dict, head: str, tok_dir: Path) -> None:
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    arch = dict(spec["config"])
    config = AutoConfig.for_model(
        arch.pop("model_type"), vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, **arch,
    )
    if head in ("score", "reward"):
        config.num_labels = 1
        auto = transformers.AutoModelForSequenceClassification
    else:
        auto = transformers.AutoModelForCausalLM
    # Seeded init on CPU in fp32 gives the same weights on every machine.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.get("seed", 0) + (1 if head == "score" else 0))
        model = auto.from_config(config, dtype=torch.float32)
    if head == "reward":
        _set_lowercase_reward(model, tokenizer)
    if head == "causal":
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def has_reward_model(name: str) -> bool:
    """Whether embedded model `name` has the built-in PPO reward model (`head="reward"`)."""
    return load_spec(name.removeprefix(PREFIX))["config"]["model_type"] == "llama"


def _set_lowercase_reward(model, tokenizer) -> None:
    """Turn a Llama sequence classifier into an exact scorer of the `lowercase` reward's rule.

    PPO needs its reward as a sequence-classification model. Rather than train one (slow to build,
    and CPU training is not bit-identical across machines), the weights are set by hand so the model
    computes the rule itself, in every machine's arithmetic: each token embeds as +1 (a lowercase
    word: the `lowercase` reward's characters only) or -1 (anything else) in dimension 0; layer 0's
    attention, with zero queries and keys, averages that over the sequence into dimension 1; every
    other block adds nothing; the score head reads dimension 1. The score at a position is then
    ~(2 x the share of lowercase-word tokens so far - 1), in [-1, 1]: the whole sequence at its
    last token for the reward, and a fair first value estimate for PPO's value model.
    """
    import torch

    from .rewards import LOWERCASE

    inner = model.model
    hidden = model.config.hidden_size
    word = re.compile(f"(?:{LOWERCASE.pattern})+")
    sign = torch.tensor([1.0 if word.fullmatch(tokenizer.decode([i])) else -1.0
                         for i in range(model.config.vocab_size)])
    with torch.no_grad():
        inner.embed_tokens.weight.zero_()
        inner.embed_tokens.weight[:, 0] = sign  # RMSNorm then scales it to +-sqrt(hidden)
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.down_proj):
                proj.weight.zero_()
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.fill_(1.0)
            if i == 0:
                attn.v_proj.weight[0, 0] = 1.0  # kv-head 0, dim 0 <- the sign
                attn.o_proj.weight[1, 0] = 1.0 / (4 * hidden ** 0.5)  # the mean sign, x 1/4, into dim 1
        inner.norm.weight.fill_(1.0)
        model.score.weight.zero_()
        # The final RMSNorm divides [sign, mean/4] by its rms: score = mean / sqrt(1 + mean^2/16),
        # within 3% of the mean sign.
        model.score.weight[0, 1] = 4.0 / hidden ** 0.5
