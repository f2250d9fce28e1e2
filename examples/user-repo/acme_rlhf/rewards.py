"""Rewards for GRPO/RLOO, with TRL's reward-function signature: f(completions, **columns) -> list[float]."""


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return completion


def brevity(completions, **_) -> list[float]:
    """1 for an answer of 8 to 32 characters ending a sentence, less for longer or unfinished ones."""
    scores = []
    for c in completions:
        text = _text(c).strip()
        size = 1.0 if 8 <= len(text) <= 32 else max(0.0, 1.0 - abs(len(text) - 20) / 40)
        scores.append(size * (1.0 if text[-1:] in ".!?" else 0.5))
    return scores
