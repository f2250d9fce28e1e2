"""The verdict suite: every case of tests/verdicts/cases.py, one test each, on real runs of the shipped
embedded configs (trained once per session by the `suite` fixture, two worker processes).

A regression must fail, with its checks failing and its cause named (the first-ranked cause's `kind`),
as a config change, as code with the config unchanged, and beside a library upgrade (simulated in the
current record's env.packages: another TRL cannot be installed here). A/A reruns must pass; a metric
renamed by a library is a named run.metrics warning; healthy changes of gradient scale are no
instability. Timing and memory checks are off (cases.TIMING_OFF).
"""

from __future__ import annotations

import pytest

from .cases import CASES, Case, problems


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdict(case: Case, suite):
    got = suite["results"][case.name]
    assert not got["schema_errors"], f"comparison.json breaks its schema: {got['schema_errors']}"
    found = problems(case, got)
    assert not found, (f"{case.name} ({case.breaks}): " + "; ".join(found)
                       + f" | got verdict {got['verdict']}, failing {got['fail']}, warning {got['warn']}, "
                         f"causes {list(zip(got['kinds'], got['causes']))[:3]}")


def test_catalog_covers_every_type_both_ways():
    """At least 30 regressions over the six types, each arriving as config and as code, plus A/A."""
    from .cases import TYPES

    regs = [c for c in CASES if c.arrival in ("config", "code")]
    assert len({(c.type, c.breaks) for c in regs}) >= 30
    for t in TYPES:
        for arrival in ("config", "code", "upgrade"):
            assert any(c.type == t and c.arrival == arrival for c in CASES), (t, arrival)
        assert sum(c.type == t and c.arrival == "aa" for c in CASES) >= 2
    config_breaks = {(c.type, c.breaks) for c in regs if c.arrival == "config"}
    code_breaks = {(c.type, c.breaks) for c in regs if c.arrival == "code"}
    assert config_breaks == code_breaks  # each regression arrives both ways
