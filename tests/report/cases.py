"""The report's showcase cases, shared by the GitHub rendering test, the matrix action test and
scripts/screenshots.py: one comparison per kind of finding (from the real fixtures where one exists), and a
six-config matrix of them.

Each case is an *encoded* comparison (as written to comparison.json: NaN as a string), valid against the
schema; `decoded(case)` gives what report.render takes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# case -> (fixture, config name in the matrix)
SOURCES = {
    "pass": ("real-dpo-self", "dpo_embedded"),
    "speed-fail": ("real-grpo-rerun", "grpo_embedded"),
    "stability-fail": ("real-dpo-nan", "dpo_embedded_bf16"),
    "ppo-kl-fail": ("real-ppo-no-baseline", "ppo_embedded"),
    "crash": ("real-dpo-crashed", "dpo_embedded_resume"),
    "no-baseline": ("real-ppo-no-baseline", "ppo_embedded_gpu"),
}
SINGLE_CASES = ("pass", "speed-fail", "stability-fail", "ppo-kl-fail", "crash", "nan", "no-baseline")


def _raw(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _recount(c: dict) -> None:
    c["counts"] = {s: sum(ch["status"] == s for ch in c["checks"]) for s in ("pass", "warn", "fail", "skip")}


def _ppo_kl_fail(c: dict) -> dict:
    """The PPO run's own KL check failing: the policy drifts from the reference 14x over the run (a
    learning rate or KL coefficient change), judged from the run alone as the shipped check does."""
    for ch in c["checks"]:
        if ch["id"] == "rl.ppo.kl_growth":
            ch.update(status="fail", current=14.2, step=12,
                      reason="KL to the reference grew 14.2x from the first to the last quarter of the run "
                             "(limit 10x): the policy is leaving the reference fast")
    c["verdict"] = "fail"
    _recount(c)
    return c


def case(name: str) -> dict:
    """One case as an encoded comparison, renamed for the matrix."""
    if name == "nan":
        return _raw("real-dpo-nan")
    fixture, config = SOURCES[name]
    c = copy.deepcopy(_raw(fixture))
    if name == "ppo-kl-fail":
        c = _ppo_kl_fail(c)
    for side in ("current", "baseline"):
        if c.get(side):
            c[side]["config_name"] = config
    return c


def matrix_cases() -> dict[str, dict]:
    """Six configs, one of each finding: artifact name -> encoded comparison."""
    return {f"canary-{SOURCES[n][1]}": case(n) for n in SOURCES}


def decoded(raw: dict) -> dict:
    from canary_runner.results import decode

    return decode(copy.deepcopy(raw))
