"""The comment's length for the cases issue 16 names, before and after the report redesign.

    .venv/bin/python -m tests.report.comment_lengths

BEFORE holds the lengths the comment had at commit 1c3f1ed (the report before issue 16), measured on
the same fixtures with the same links; the issue asks for at most half of them.
"""

from __future__ import annotations

from canary_runner import report

from .conftest import LINKS, load_fixture

CASES = {  # case: fixtures (hand-made and from real runs)
    "pass": ["handmade-pass", "real-dpo-self"],
    "speed fail": ["handmade-speed", "handmade-fail"],
    "stability fail": ["real-dpo-nan"],
    "PPO KL fail": ["handmade-ppo-kl"],
    "crash": ["handmade-crashed", "real-dpo-crashed", "handmade-interrupted"],
    "no baseline": ["handmade-no-baseline", "real-dpo-no-baseline", "real-ppo-no-baseline"],
}
BEFORE = {"handmade-pass": 4907, "real-dpo-self": 5478, "handmade-speed": 5867, "handmade-fail": 5907,
          "real-dpo-nan": 10721, "handmade-ppo-kl": 5612, "handmade-crashed": 5608, "real-dpo-crashed": 9032,
          "handmade-interrupted": 4966, "handmade-no-baseline": 3672, "real-dpo-no-baseline": 4135,
          "real-ppo-no-baseline": 4535}


def lengths() -> dict[str, int]:
    return {name: len(report.render_comment(load_fixture(name), **LINKS)) for names in CASES.values() for name in names}


def main() -> None:
    now = lengths()
    print(f"| case | fixture | before | after | after/before |\n|:--|:--|--:|--:|--:|")
    for case, names in CASES.items():
        for name in names:
            before = BEFORE[name]
            print(f"| {case} | {name} | {before:,} | {now[name]:,} | {now[name] / before:.0%} |")


if __name__ == "__main__":
    main()
