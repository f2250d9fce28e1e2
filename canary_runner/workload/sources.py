"""Where a canary's model, tokenizer and dataset come from: embedded, a local path, or the Hub.

`embedded:*` names are built or read offline; anything else goes to `from_pretrained` /
`load_dataset`, which take a Hub name (`EleutherAI/pythia-70m`, `Anthropic/hh-rlhf`) or a local
directory alike.
"""

from __future__ import annotations

from pathlib import Path

from ..plugins import PluginError, is_import_string, load
from . import embedded
from .make_data import DATA_DIR

# The dataset each training type trains on, and the embedded default for it.
DATASET_KIND = {"sft": "sft", "dpo": "preference", "reward": "preference",
                "grpo": "prompts", "rloo": "prompts", "ppo": "prompts"}


class WorkloadError(Exception):
    """A model or dataset that cannot be loaded; the message says which and what to do."""


class HubUnreachable(WorkloadError):
    """The Hub (or the network to it) could not be reached: a network failure, not a bad config."""


_NETWORK_WORDS = ("couldn't connect", "could not connect", "couldn't reach", "offline mode", "connection refused",
                  "timed out", "name or service not known", "temporary failure in name resolution")


def is_unreachable(exc: BaseException) -> bool:
    """Did loading fail because the Hub could not be reached (offline, DNS, refused, timeout)?
    transformers and datasets wrap the network error in an OSError, ConnectionError or their own type,
    so the whole chain is looked at, types first, then the libraries' stock wording."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        names = {t.__name__ for t in type(seen).__mro__}
        if isinstance(seen, (ConnectionError, TimeoutError)) or names & {
                "LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectTimeout",
                "TimeoutException", "NetworkError", "ProxyError"}:
            return True
        if any(w in str(seen).lower() for w in _NETWORK_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _load_error(message: str, exc: BaseException) -> WorkloadError:
    if is_unreachable(exc):
        return HubUnreachable(f"{message} (the Hub or the network could not be reached)")
    return WorkloadError(message)


def model_path(name: str, head: str = "causal") -> str:
    """A path or Hub name that `from_pretrained` accepts."""
    if embedded.is_embedded(name):
        try:
            return str(embedded.model_path(name, head))
        except ValueError as e:
            raise WorkloadError(str(e)) from None
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path(name))
    except OSError as e:
        raise _load_error(f"cannot load tokenizer '{name}': {e}", e) from None
    if tok.pad_token is None:  # pythia and most base models ship without one
        tok.pad_token = tok.eos_token
    return tok


def load_dataset(name: str | None, training_type: str, split: str = "train", max_rows: int | None = None,
                 fmt: str = "auto"):
    """The training dataset for `training_type`, in the column layout TRL expects for it."""
    import datasets

    kind = DATASET_KIND[training_type]
    name = name or f"embedded:{kind}"
    try:
        if embedded.is_embedded(name):
            # embedded:preference-heldout and embedded:preference_heldout name the same file
            file = DATA_DIR / f"{name.removeprefix(embedded.PREFIX).replace('-', '_')}.jsonl"
            if not file.is_file():
                avail = ", ".join(f"embedded:{p.stem}" for p in sorted(DATA_DIR.glob("*.jsonl")))
                raise WorkloadError(f"unknown embedded dataset '{name}'; available: {avail}")
            ds = datasets.load_dataset("json", data_files=str(file), split="train")
        elif is_import_string(name):
            ds = _dataset_from_code(name)
        elif _local_file(name) is not None:
            name = str(_local_file(name))
            suffix = Path(name).suffix.lstrip(".")
            builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(suffix)
            if builder is None:
                raise WorkloadError(f"dataset file '{name}': unsupported type .{suffix} (use jsonl, parquet or csv)")
            ds = datasets.load_dataset(builder, data_files=name, split="train")
        else:
            ds = datasets.load_dataset(name, split=split)
    except (WorkloadError, PluginError):
        raise
    except Exception as e:  # datasets raises many types for "not found" / offline
        raise _load_error(f"cannot load dataset '{name}' (split '{split}'): {type(e).__name__}: {e}", e) from None
    if max_rows is not None and len(ds) > max_rows:
        ds = ds.select(range(max_rows))
    if fmt == "hh" or (fmt == "auto" and _looks_like_hh(ds)):
        ds = ds.map(lambda row: from_hh(row, kind), remove_columns=ds.column_names)
    _check_columns(ds, kind, name)
    return ds


def _local_file(name: str) -> Path | None:
    """A dataset file, relative to the working directory or else to the workspace (the config's repo)."""
    import os

    from ..plugins import WORKSPACE_ENV

    for base in (Path.cwd(), os.environ.get(WORKSPACE_ENV)):
        if base is not None and (Path(base) / name).is_file():
            return Path(base) / name
    return None


def _dataset_from_code(spec: str):
    """`dataset.name: my_project.data:build`: a datasets.Dataset, or a function returning one."""
    import datasets

    obj = load(spec, "dataset.name")
    if callable(obj) and not isinstance(obj, datasets.Dataset):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginError(f"dataset.name: {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, datasets.Dataset):
        raise PluginError(f"dataset.name: {spec!r} gave a {type(obj).__name__}, not a datasets.Dataset")
    return obj


_REQUIRED = {"sft": ({"messages"}, {"text"}, {"prompt", "completion"}),
             "preference": ({"chosen", "rejected"},),
             "prompts": ({"prompt"},)}


def _check_columns(ds, kind: str, name: str) -> None:
    cols = set(ds.column_names)
    if not any(req <= cols for req in _REQUIRED[kind]):
        wanted = " or ".join("+".join(sorted(r)) for r in _REQUIRED[kind])
        missing = min((sorted(req - cols) for req in _REQUIRED[kind]), key=len)
        raise WorkloadError(f"dataset '{name}' is missing column(s) {', '.join(missing)}: it has {sorted(cols)}; "
                            f"a {kind} dataset needs {wanted} (set dataset.format: hh for Anthropic HH-style data)")


def _looks_like_hh(ds) -> bool:
    if set(ds.column_names) != {"chosen", "rejected"} or len(ds) == 0:
        return False
    first = ds[0]["chosen"]
    return isinstance(first, str) and first.lstrip().startswith("Human:")


_ASSISTANT = "\n\nAssistant:"


def _split_hh(text: str) -> tuple[str, str]:
    i = text.rfind(_ASSISTANT)
    if i < 0:
        return text, ""
    return text[: i + len(_ASSISTANT)], text[i + len(_ASSISTANT):]


def from_hh(row: dict, kind: str) -> dict:
    """Anthropic HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") to TRL's standard columns."""
    prompt, chosen = _split_hh(row["chosen"])
    if kind == "sft":
        return {"text": row["chosen"].strip()}
    if kind == "prompts":
        return {"prompt": prompt.lstrip()}
    _, rejected = _split_hh(row["rejected"])
    return {"prompt": prompt.lstrip(), "chosen": chosen, "rejected": rejected}
