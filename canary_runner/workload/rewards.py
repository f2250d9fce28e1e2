"""Synthetic rewards for GRPO/RLOO: cheap, deterministic, and with a signal a tiny model can move.

TRL calls a reward function as `f(prompts=..., completions=..., **columns) -> list[float]`; for
conversational data each completion is a list of messages.
"""

from __future__ import annotations

import re

TARGET_LENGTH = 24  # characters: about the length of the shipped answers


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return completion


def length(completions, **_) -> list[float]:
    """1 at TARGET_LENGTH characters, falling linearly to 0 at twice that or at empty."""
    return [max(0.0, 1.0 - abs(len(_text(c)) - TARGET_LENGTH) / TARGET_LENGTH) for c in completions]


_SENTENCE = re.compile(r"^[A-Z0-9][^\n]*[.!?]$")


def format(completions, **_) -> list[float]:  # noqa: A001 - the reward is called "format" in configs
    """1 for one capitalised sentence ending in punctuation, 0.5 for any sentence end, else 0."""
    scores = []
    for c in completions:
        t = _text(c).strip()
        scores.append(1.0 if _SENTENCE.match(t) else 0.5 if t[-1:] in ".!?" else 0.0)
    return scores


def digits(completions, answer=None, **_) -> list[float]:
    """Fraction of the reference answer's numbers that appear in the completion."""
    answers = answer or [""] * len(completions)
    scores = []
    for c, ref in zip(completions, answers):
        want = set(re.findall(r"\d+", ref or ""))
        got = set(re.findall(r"\d+", _text(c)))
        scores.append(len(want & got) / len(want) if want else 0.0)
    return scores


# The embedded RL canaries' task: write plain lowercase words. About 30% of the embedded tokenizer's
# tokens are lowercase words, so the untrained model (near-uniform over 512 tokens) scores ~0.45 and
# every group of samples differs: a dense signal the tiny model can climb within 20 steps, lowering
# its entropy as it does. The embedded PPO reward model scores the same rule (embedded.reward_model_path).
LOWERCASE = re.compile(r"[a-z ]")


def lowercase(completions, **_) -> list[float]:
    """Share of the completion's characters that are lowercase ASCII letters or spaces (0 when empty)."""
    scores = []
    for c in completions:
        t = _text(c)
        scores.append(len(LOWERCASE.findall(t)) / len(t) if t else 0.0)
    return scores


REWARD_FUNCS = {"length": length, "format": format, "digits": digits, "lowercase": lowercase}


def reward_funcs(names: list[str], field: str = "reward_funcs"):
    """Built-in rewards by name; anything else is the user's function, by import string."""
    from ..plugins import load_callable

    return [REWARD_FUNCS[n] if n in REWARD_FUNCS else load_callable(n, f"{field}[{i}]") for i, n in enumerate(names)]
