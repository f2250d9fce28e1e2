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

# case -> (fixtures, the first that exists is used; config name in the matrix)
SOURCES = {
    "pass": (("real-dpo-self",), "dpo_embedded"),
    "speed-fail": (("handmade-speed", "real-grpo-rerun"), "sft_embedded"),
    "stability-fail": (("real-dpo-nan",), "dpo_embedded_bf16"),
    "ppo-kl-fail": (("handmade-ppo-kl", "real-ppo-no-baseline"), "ppo_embedded"),
    "crash": (("real-dpo-crashed",), "dpo_embedded_resume"),
    "no-baseline": (("real-grpo-rerun", "real-ppo-no-baseline"), "grpo_embedded"),
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


def _without_baseline(c: dict) -> dict:
    """A real GRPO run as the first run of its config: no baseline, the comparisons skipped, the run's
    own checks (stability, RL health, invariants) kept."""
    c["baseline"] = None
    c["verdict"] = "no-baseline"
    c["config_diff"] = []
    c["diagnosis"] = []  # a diagnosis explains a change, and there is none without a baseline
    if isinstance(c.get("environment"), dict):
        c["environment"]["changes"] = []
    for ch in c["checks"]:
        if ch["category"] in ("performance", "memory", "correctness") or ch["id"].startswith(("run.baseline", "run.config", "environment.")):
            ch.update(status="skip", baseline=None, change=None, ci=None, reason="no baseline to compare with")
        else:
            ch["baseline"] = None
            if ch.get("change_kind") is not None or ch.get("change") is not None:
                ch["change"] = None
                ch["ci"] = None
    for m in (c.get("metrics") or {}).values():
        m["baseline"] = None
    for curve in (c.get("curves") or {}).values():
        curve["baseline"] = None
    _recount(c)
    return c


def case(name: str) -> dict:
    """One case as an encoded comparison, renamed for the matrix."""
    if name == "nan":
        return _raw("real-dpo-nan")
    fixtures, config = SOURCES[name]
    fixture = next(f for f in fixtures if (FIXTURES / f"{f}.json").is_file())
    c = copy.deepcopy(_raw(fixture))
    if fixture == "real-ppo-no-baseline" and name == "ppo-kl-fail":
        c = _ppo_kl_fail(c)
    if name == "no-baseline" and fixture != "real-ppo-no-baseline":
        c = _without_baseline(c)
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
