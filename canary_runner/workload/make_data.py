"""Writes the embedded datasets shipped in `workload/data/` (run: python -m canary_runner.workload.make_data).

Small templated tasks (arithmetic, sorting, counting, reversing) give text with structure a tiny
model can start to learn, preference pairs whose chosen answer is right and rejected one wrong or
off-format, and prompts whose completions the synthetic rewards can score. Seeded: the same bytes
every time, which a test checks against the shipped files.

The held-out sets (`*_heldout.jsonl`) come from the same templates under another seed, keeping only
questions that no training row asks: a fixed set the canary never trains on, to see whether training
learned the task's direction (canary_runner/heldout.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
SEED = 1234
ROWS = 384
HELDOUT_SEED = 4321
HELDOUT_ROWS = 64
CORPUS = ("preference", "prompts", "sft")  # the training sets; the tokenizer is trained on these alone

_WORDS = ("apple river stone cloud green quick silver lamp north paper tiger music orange "
          "window garden bridge candle forest rocket winter").split()


def _task(rng: random.Random) -> tuple[str, str, str]:
    """One (question, right answer, wrong answer) triple."""
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        wrong = a + b + rng.choice([-3, -1, 1, 2, 10])
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {wrong}."
    if kind == 1:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        wrong = a * b + rng.choice([-2, 1, a, b])
        return f"What is {a} times {b}?", f"{a} times {b} is {a * b}.", f"{a} times {b} is {wrong}."
    if kind == 2:
        nums = rng.sample(range(1, 100), rng.randint(3, 5))
        right = sorted(nums)
        wrong = right[:]
        i = rng.randrange(len(wrong) - 1)
        wrong[i], wrong[i + 1] = wrong[i + 1], wrong[i]
        listing = ", ".join(map(str, nums))
        return (f"Sort these numbers: {listing}.", "Sorted: " + ", ".join(map(str, right)) + ".",
                "Sorted: " + ", ".join(map(str, wrong)) + ".")
    if kind == 3:
        word = rng.choice(_WORDS)
        return (f"How many letters are in the word {word}?", f"The word {word} has {len(word)} letters.",
                f"The word {word} has {len(word) + rng.choice([-1, 1, 2])} letters.")
    words = rng.sample(_WORDS, 3)
    return (f"Reverse the words: {' '.join(words)}.", "Reversed: " + " ".join(reversed(words)) + ".",
            "I do not want to do that.")


def rows(seed: int = SEED, n: int = ROWS) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    return _as_rows([_task(rng) for _ in range(n)])


def _as_rows(tasks: list[tuple[str, str, str]]) -> dict[str, list[dict]]:
    sft, pref, prompts = [], [], []
    for q, right, wrong in tasks:
        sft.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": right}]})
        pref.append({
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": right}],
            "rejected": [{"role": "assistant", "content": wrong}],
        })
        prompts.append({"prompt": [{"role": "user", "content": q}], "answer": right})
    return {"sft": sft, "preference": pref, "prompts": prompts}


def heldout_rows(seed: int = HELDOUT_SEED, n: int = HELDOUT_ROWS) -> dict[str, list[dict]]:
    """`n` tasks whose question no training row asks (nor an earlier held-out row). The letter-count
    task has only 20 questions, all in the training set, so the held-out mix has none of it."""
    seen = {row["prompt"][0]["content"] for row in rows()["prompts"]}
    rng = random.Random(seed)
    tasks = []
    while len(tasks) < n:
        task = _task(rng)
        if task[0] not in seen:
            seen.add(task[0])
            tasks.append(task)
    return {f"{kind}_heldout": items for kind, items in _as_rows(tasks).items() if kind != "prompts"}


def write(data_dir: Path = DATA_DIR) -> list[Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, items in {**rows(), **heldout_rows()}.items():
        path = data_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in items))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write():
        print(p)
