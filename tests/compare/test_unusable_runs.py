"""Runs compare cannot use are bad input (exit 2) with a message, never a traceback: a recorded config
with a list or a mapping where one value belongs."""

from __future__ import annotations

import pytest

from .conftest import make_record


@pytest.mark.parametrize("path, value", [
    ("seed", [1]),
    ("dpo.beta", [0.1]),
    ("dpo.extra_args.beta", [0.1, 0.2]),
    ("train.learning_rate", {"value": 1e-4}),
    ("train", [1]),
])
def test_a_list_in_place_of_a_single_config_value(compare, record_dir, path, value):
    record = make_record(run_id="cur")
    node = record["config"]
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    cur = record_dir("cur", record)
    base = record_dir("base")
    r = compare(cur, base)
    assert r.code == 2, r.err
    assert f"config.{path}" in r.err and "Traceback" not in r.err and "internal error" not in r.err
