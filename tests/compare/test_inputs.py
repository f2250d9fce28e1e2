"""Bad input is exit 2 with a message that says what is wrong; good input writes a valid comparison.json."""

from __future__ import annotations

import json

import pytest

from canary_runner.cli import main as canary_main

from .conftest import make_record


def test_missing_file_is_exit_2(compare, tmp_path, record_dir):
    base = record_dir("base")
    r = compare(tmp_path / "nope", base)
    assert r.code == 2
    assert "nope" in r.err and "no such file or directory" in r.err
    assert "Traceback" not in r.err


def test_directory_without_runs_is_exit_2(compare, tmp_path, record_dir):
    (tmp_path / "empty").mkdir()
    r = compare(record_dir("cur"), tmp_path / "empty")
    assert r.code == 2
    assert "no metrics.json" in r.err


def test_corrupt_json_is_exit_2(compare, tmp_path, record_dir):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"schema_version": 1, "status": "compl')
    r = compare(record_dir("cur"), bad)
    assert r.code == 2
    assert "baseline run" in r.err and "not valid JSON" in r.err
    assert "Traceback" not in r.err


def test_wrong_schema_version_is_exit_2(compare, tmp_path, record_dir):
    rec = make_record()
    rec["schema_version"] = 99
    path = tmp_path / "future"
    path.mkdir()
    (path / "metrics.json").write_text(json.dumps(rec))
    r = compare(path, record_dir("base"))
    assert r.code == 2
    assert "schema_version 99 is not supported" in r.err


def test_schema_violation_is_exit_2(compare, tmp_path, record_dir):
    rec = make_record()
    del rec["series"]
    path = tmp_path / "broken"
    path.mkdir()
    (path / "metrics.json").write_text(json.dumps(rec))
    r = compare(path, record_dir("base"))
    assert r.code == 2
    assert "does not match the metrics schema" in r.err


def test_thresholds_file_with_unknown_check_is_exit_2(compare, tmp_path, record_dir):
    th = tmp_path / "th.yaml"
    th.write_text("checks:\n  perf.step_tme: {relative: 0.1}\n")
    r = compare(record_dir("cur"), record_dir("base"), "--thresholds", th)
    assert r.code == 2
    assert str(th) in r.err and "perf.step_tme" in r.err and "did you mean 'perf.step_time'" in r.err


def test_thresholds_file_with_unknown_field_is_exit_2(compare, tmp_path, record_dir):
    th = tmp_path / "th.yaml"
    th.write_text("checks:\n  perf.step_time: {relatve: 0.1}\n")
    r = compare(record_dir("cur"), record_dir("base"), "--thresholds", th)
    assert r.code == 2
    assert "checks.perf.step_time.relatve: unknown field" in r.err


@pytest.mark.parametrize("text, expected", [
    ("confidence: 1.5\n", "confidence"),
    ("checks:\n  perf.step_time: {relative: -1}\n", "relative"),
    ("checks: [1, 2]\n", "checks"),
    ("bogus: 1\n", "bogus: unknown field"),
    ("checks: {perf.step_time: {relative: 0.1}\n", "not valid YAML"),
])
def test_invalid_thresholds_files(compare, tmp_path, record_dir, text, expected):
    th = tmp_path / "th.yaml"
    th.write_text(text)
    r = compare(record_dir("cur"), record_dir("base"), "--thresholds", th)
    assert r.code == 2
    assert expected in r.err


def test_missing_thresholds_file_is_exit_2(compare, tmp_path, record_dir):
    r = compare(record_dir("cur"), record_dir("base"), "--thresholds", tmp_path / "none.yaml")
    assert r.code == 2 and "thresholds file not found" in r.err


def test_bad_inline_thresholds_in_the_run_are_exit_2(compare, record_dir):
    rec = make_record()
    rec["config"]["thresholds"] = {"checks": {"no.such.check": {"max": 1}}}
    r = compare(record_dir("cur", rec), record_dir("base"))
    assert r.code == 2
    assert "config.thresholds" in r.err and "no.such.check" in r.err


def test_different_training_types_are_exit_2(compare, record_dir):
    r = compare(record_dir("cur", training_type="dpo"), record_dir("base", training_type="sft"))
    assert r.code == 2
    assert "the current run is dpo" in r.err and "baseline is sft" in r.err


def test_repeats_of_different_configs_are_exit_2(compare, record_dir):
    a = record_dir("a", seed=1)
    b = record_dir("b", seed=2, overrides=("train.learning_rate=0.1",))
    r = compare(a, record_dir("base"), "--current", b)
    assert r.code == 2 and "not repeats of one config" in r.err


def test_same_run_twice_is_exit_2(compare, record_dir):
    a = record_dir("a")
    r = compare(a, record_dir("base"), "--current", a)
    assert r.code == 2 and "more than once" in r.err


def test_no_baseline_flag_with_baseline_is_exit_2(compare, record_dir):
    r = compare(record_dir("cur"), record_dir("base"), "--no-baseline")
    assert r.code == 2 and "exclude each other" in r.err


def test_no_current_is_exit_2(compare):
    r = compare()
    assert r.code == 2 and "give the current run" in r.err


def test_unknown_tier_is_a_usage_error(capsys, record_dir):
    with pytest.raises(SystemExit) as e:
        canary_main(["compare", str(record_dir("cur")), "--tier", "weekly"])
    assert e.value.code == 2


def test_help_documents_the_syntax(capsys):
    with pytest.raises(SystemExit) as e:
        canary_main(["compare", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ("CURRENT", "BASELINE", "--current PATH", "--no-baseline", "--thresholds", "--tier",
                  "directory whose subdirectories are run directories", "Exit codes"):
        assert words in text


def test_list_checks(capsys):
    assert canary_main(["compare", "--list-checks"]) == 0
    out = capsys.readouterr().out
    assert "perf.step_time" in out and "relative=0.2" in out and "relative=0.05" in out


def test_repeats_from_a_directory_and_json_output(compare, tmp_path, record_dir):
    reps = tmp_path / "reps"
    for i in range(3):
        record_dir(f"reps/r{i}", seed=i)
    r = compare(reps, record_dir("base", seed=9), "--json")
    assert r.code == 0
    printed = json.loads(r.out)
    assert printed["current"]["runs"] == 3 and printed["baseline"]["runs"] == 1
    assert r.doc["schema_version"] == 1
    assert r.doc["verdict"] in ("pass", "warn")
    assert len(r.doc["current"]["run_ids"]) == 3


def test_document_fields(compare, record_dir):
    margins = {"rewards/margins": [0.02 * i for i in range(30)]}
    r = compare(record_dir("cur", seed=1, series=margins), record_dir("base", seed=2, series=margins),
                "--tier", "nightly")
    d = r.doc
    assert d["tier"] == "nightly"
    assert d["thresholds_source"] == ["canary_runner/compare/defaults.yaml#nightly"]
    assert set(d["counts"]) == {"pass", "warn", "fail", "skip"}
    assert sum(d["counts"].values()) == len(d["checks"])
    assert {"loss", "rewards/margins", "step_time_s"} <= set(d["curves"])
    assert len(d["curves"]["loss"]["current"]["value"]) == 30  # full resolution
    assert d["curves"]["loss"]["baseline"]["step"][0] == 1
    assert "loss" in d["metrics"] and set(d["metrics"]["loss"]) == {"baseline", "current"}
    assert d["environment"] == {"same_hardware": True, "changes": []}
    for c in d["checks"]:
        assert c["reason"], c["id"]
        assert c["direction"] in ("lower_is_better", "higher_is_better", "band", "none")
    step = r.check("perf.step_time")
    assert step["ci"] is not None and step["change_kind"] == "relative" and step["threshold"] == 0.05
    assert step["n_baseline"] == 25 and step["n_current"] == 25 and 0 <= step["p_value"] <= 1


def test_compare_reads_plain_data_without_torch_or_trl(record_dir):
    import subprocess
    import sys

    cur, base = record_dir("cur"), record_dir("base")
    code = f"""
import sys
import canary_runner.compare.cli, canary_runner.compare.calibrate
assert 'numpy' not in sys.modules, 'the command modules must stay import-light'
from canary_runner.compare import engine
from canary_runner.compare.loading import load_side
from canary_runner.compare.settings import resolve
doc = engine.compare(load_side([{str(cur)!r}], 'current'), load_side([{str(base)!r}], 'baseline'), resolve('smoke'))
heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'accelerate', 'datasets') if m in sys.modules)
assert not heavy, heavy
print(doc['verdict'])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("pass", "warn")


# -- a record whose parts do not fit together, and the limits on what one may hold ------------------
def _write_raw(tmp_path, name: str, record: dict | str) -> str:
    """A metrics.json written as given (not through write_record, which insists on a valid record)."""
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.json").write_text(record if isinstance(record, str) else json.dumps(record))
    return str(d)


def _broken(change) -> dict:
    from canary_runner.results import encode

    rec = encode(make_record(steps=12, warmup=3))
    change(rec)
    return rec


@pytest.mark.parametrize("change, words", [
    (lambda r: r["series"]["loss"].pop(), "series/loss: 11 values but series/step has 12"),
    (lambda r: r["series"]["step"].__setitem__(5, 5), "series/step/5: step 5 follows step 5; steps must increase"),
    (lambda r: r["series"]["step_time_s"].__setitem__(4, -0.01), "series/step_time_s/4: -0.01 is not a time"),
    (lambda r: r["series"]["step_time_s"].__setitem__(4, 0), "series/step_time_s/4: 0 is not a time"),
    (lambda r: r["series"]["step_time_s"].__setitem__(7, "Infinity"), "series/step_time_s/7: 'Infinity' is not a time"),
    (lambda r: r["series"]["warmup"].__setitem__(8, True), "series/warmup/8: true at step 9, but run.warmup_steps is 3"),
    (lambda r: r["series"]["loss"].__setitem__(2, "fast"), "series/loss/2: 'fast' is not a number"),
])
def test_inconsistent_series_are_exit_2_with_the_field_named(compare, tmp_path, record_dir, change, words):
    r = compare(_write_raw(tmp_path, "bad", _broken(change)), record_dir("base"))
    assert r.code == 2, r.err
    assert words in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("field, text", [
    ("run/duration_s", '"duration_s": NaN'),
    ("series/loss/3", None),
])
def test_bare_nan_is_rejected_with_the_field_named(compare, tmp_path, record_dir, field, text):
    rec = _broken(lambda r: None)
    raw = json.dumps(rec)
    if text:
        raw = raw.replace('"duration_s": 10.0', text)
    else:
        rec["series"]["loss"][3] = float("nan")
        raw = json.dumps(rec)  # Python writes a bare NaN: JSON has none
    assert "NaN" in raw
    r = compare(_write_raw(tmp_path, "bare", raw), record_dir("base"))
    assert r.code == 2
    assert f"{field}: bare NaN is not JSON" in r.err


def test_a_completed_baseline_without_steps_is_not_a_baseline(compare, record_dir):
    empty = make_record(run_id="empty")
    empty["series"] = {k: [] for k in empty["series"]}
    empty["run"]["steps_completed"] = 0
    r = compare(record_dir("cur"), record_dir("empty", empty))
    assert r.code == 2
    assert "completed without recording a single step" in r.err and "not a valid baseline" in r.err
    # As the current run it is compared (and judged) like any other record.
    assert compare(record_dir("empty2", dict(empty, run=dict(empty["run"], id="e2"))), "--no-baseline").code in (0, 1)


def test_records_past_the_limits_are_exit_2(compare, tmp_path, record_dir, monkeypatch):
    from canary_runner import results

    big = record_dir("big", steps=40)
    monkeypatch.setattr(results, "MAX_STEPS", 30)
    r = compare(big, record_dir("base"))
    assert r.code == 2 and "series/step: 40 steps; a metrics.json may hold at most 30" in r.err
    monkeypatch.setattr(results, "MAX_METRICS_BYTES", 1 << 10)
    r = compare(record_dir("cur"), record_dir("base2"))
    assert r.code == 2 and "; a metrics.json may be at most 1024 bytes (see the limits in README.md)" in r.err


def test_a_schema_error_quoting_a_huge_value_stays_short(compare, tmp_path, record_dir):
    rec = _broken(lambda r: r["run"].__setitem__("tier", "x" * 100_000))
    r = compare(_write_raw(tmp_path, "huge", rec), record_dir("base"))
    assert r.code == 2 and "run/tier" in r.err
    assert len(r.err) < 2000
