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
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .make_data import DATA_DIR

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
    for name in ("sft", "preference", "prompts"):
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
                  *(p.read_bytes() for p in sorted(DATA_DIR.glob("*.jsonl"))),
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
    """Build (once) and return the directory of embedded model `name` with a causal-LM head or a
    one-logit sequence-classification head (`head="score"`, for reward and value models)."""
    import torch
    import transformers

    spec_name = name.removeprefix(PREFIX)
    spec = load_spec(spec_name)
    tok_dir = tokenizer_path(spec.get("vocab_size", 512))
    key = _digest(json.dumps(spec, sort_keys=True).encode(), head.encode(), tok_dir.name.encode(),
                  torch.__version__.encode(), transformers.__version__.encode())
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
    if head == "score":
        config.num_labels = 1
        auto = transformers.AutoModelForSequenceClassification
    else:
        auto = transformers.AutoModelForCausalLM
    # Seeded init on CPU in fp32 gives the same weights on every machine.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.get("seed", 0) + (1 if head == "score" else 0))
        model = auto.from_config(config, dtype=torch.float32)
    if head == "causal":
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
