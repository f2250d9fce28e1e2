"""The thresholds model: strict, shared by the YAML file and the canary config; tiers and precedence."""

from __future__ import annotations

import pytest
import yaml

from canary_runner.compare.settings import resolve
from canary_runner.config import ConfigError, load_config
from canary_runner.thresholds import ThresholdsError, is_known_key, known_check_keys, parse_thresholds

from .conftest import CONFIGS, make_record


def test_nested_keys_from_set_overrides_are_check_ids():
    cfg = load_config(CONFIGS / "dpo_embedded.yaml", ["thresholds.checks.perf.step_time.relative=0.3",
                                                      "thresholds.checks.perf.phase.generation.relative=0.5",
                                                      "thresholds.checks.rl.ppo.kl.max=3"])
    assert cfg.thresholds.checks["perf.step_time"].relative == 0.3
    assert cfg.thresholds.checks["perf.phase.generation"].relative == 0.5
    assert cfg.thresholds.checks["rl.ppo.kl"].max == 3
    assert cfg.resolved()["thresholds"]["checks"]["perf.step_time"]["relative"] == 0.3


def test_config_rejects_unknown_check_ids_and_fields():
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "dpo_embedded.yaml", ["thresholds.checks.perf.stepp.relative=0.3"])
    assert "dpo_embedded.yaml" in str(e.value) and "did you mean 'perf.step_time'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "dpo_embedded.yaml", ["thresholds.checks.perf.step_time.relatve=0.3"])
    assert "thresholds.checks.perf.step_time.relatve: unknown field" in str(e.value)


@pytest.mark.parametrize("data, message", [
    ({"checks": {"perf.step_time": {"severity": "loud"}}}, "severity"),
    ({"checks": {"perf.step_time": {"relative": -0.1}}}, "greater than or equal to 0"),
    ({"version": 2}, "version"),
    ({"resamples": 10}, "resamples"),
    ([1, 2], "expected a mapping"),
])
def test_invalid_blocks(data, message):
    with pytest.raises(ThresholdsError) as e:
        parse_thresholds(data, "t.yaml")
    assert message in str(e.value) and "t.yaml" in str(e.value)


def test_family_members_are_known():
    assert is_known_key("perf.phase.generation") and is_known_key("memory.cuda_max_allocated.cuda:1")
    assert not is_known_key("perf.step_time.extra") and not is_known_key("rl.ppo")


def test_tiers_tighten_and_sources_stack():
    smoke, nightly = resolve("smoke"), resolve("nightly")
    assert smoke.limit("perf.step_time").relative == 0.20
    assert resolve("perf").limit("perf.step_time").relative == 0.10
    assert nightly.limit("perf.step_time").relative == 0.05
    assert smoke.limit("perf.phase.generation").relative == 0.25  # family default
    assert smoke.limit("correctness.reward_curve").severity == "warn"
    inline = parse_thresholds({"checks": {"perf.step_time": {"relative": 0.3, "absolute": 0.01}}}, "inline")
    file = parse_thresholds({"confidence": 0.9, "checks": {"perf.step_time": {"relative": 0.4},
                                                           "perf.phase.update": {"relative": None}}}, "file")
    s = resolve("smoke", inline, "config", file, "file")
    lim = s.limit("perf.step_time")
    assert (lim.relative, lim.absolute) == (0.4, 0.01)  # the file wins field by field
    assert s.limit("perf.phase.update").relative is None and s.limit("perf.phase.generation").relative == 0.25
    assert s.confidence == 0.9
    assert s.sources == ["canary_runner/compare/defaults.yaml#smoke", "config", "file"]


@pytest.mark.parametrize("training_type", ["sft", "dpo", "ppo", "grpo", "rloo", "reward"])
def test_every_check_compare_emits_can_be_configured(compare, record_dir, training_type):
    extra = {"generation_time_s": [0.01] * 30, "update_time_s": [0.01] * 30,
             "mem_cuda_max_allocated_mb": [100.0] * 30, "mem_cuda_max_reserved_mb": [200.0] * 30}
    rec = make_record(training_type=training_type, series=extra, run_id="cur")
    r = compare(record_dir("cur", rec), record_dir("base", training_type=training_type, series=extra))
    ids = {c["id"] for c in r.doc["checks"]} - {"run.status"}
    assert all(is_known_key(i) for i in ids), sorted(i for i in ids if not is_known_key(i))
    assert "perf.phase.generation" in ids and "memory.cuda_max_allocated.cuda:0" in ids
    used = {i if i in known_check_keys() else i.rsplit(".", 1)[0] for i in ids}
    assert used <= known_check_keys()


def test_calibration_measures_the_spread_and_leaves_out_one_disturbed_run(tmp_path):
    from canary_runner.compare.calibrate import measure, render
    from canary_runner.compare.loading import load_side

    from .conftest import write_record

    paths = []
    for i, level in enumerate([0.020, 0.021, 0.0205, 0.0198, 0.040]):  # the last run shared the machine
        rec = make_record(seed=i, run_id=f"r{i}", step_time=level, noise=0.0)
        paths.append(write_record(tmp_path / f"r{i}", rec))
    runs = load_side(paths, "calibration")
    rows = {cid: (lim, note) for cid, lim, note in measure(runs, 1.5, "smoke")}
    lim, note = rows["perf.step_time"]
    assert lim == {"relative": 0.091}  # 1.5 x (0.021 / 0.0198 - 1), rounded up
    assert "left out the farthest run, 0.04 s" in note
    assert rows["correctness.loss_curve"][0] is None  # identical curves: the default band stands
    written = yaml.safe_load(render(runs, 1.5, "smoke"))
    assert parse_thresholds(written, "calibrated").checks["perf.step_time"].relative == 0.091


def test_thresholds_file_with_a_duplicate_key_is_an_error(tmp_path):
    from canary_runner.thresholds import ThresholdsError, load_thresholds

    path = tmp_path / "t.yaml"
    path.write_text("checks:\n  perf.step_time: {relative: 0.1}\n  perf.step_time: {relative: 0.5}\n")
    with pytest.raises(ThresholdsError, match="perf.step_time"):
        load_thresholds(path)
    path.write_bytes(b"checks: {}\n\xff\xfe")
    with pytest.raises(ThresholdsError, match="not a UTF-8 text file"):
        load_thresholds(path)
