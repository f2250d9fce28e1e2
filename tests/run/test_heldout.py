"""Held-out evaluation: trained for real on the embedded model, with the shipped data and with chosen
and rejected swapped (a data bug every training metric misses)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from canary_runner import results
from canary_runner.cli import main as canary_main
from canary_runner.config import ConfigError, load_config
from canary_runner.runner import SetupError, run
from canary_runner.workload import make_data

CONFIGS = Path(__file__).resolve().parents[2] / "canary_runner" / "configs"
STEPS = 12  # checked: 12 steps put the swapped runs' held-out accuracy below chance, the shipped ones above


def _train(out: Path, config: str, *sets: str) -> dict:
    cfg = load_config(CONFIGS / f"{config}.yaml", [f"train.max_steps={STEPS}", *sets])
    record, code = run(cfg, out)
    assert code == 0, record["error"]
    return record


@pytest.fixture(scope="module")
def swapped_file(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in (make_data.DATA_DIR / "preference.jsonl").read_text().splitlines()]
    path = tmp_path_factory.mktemp("data") / "preference_swapped.jsonl"
    path.write_text("".join(json.dumps({**r, "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, swapped_file):
    """trained(type, data) -> run directory, trained once per module: data 'shipped' or 'swapped'."""
    root = tmp_path_factory.mktemp("heldout")
    cache: dict = {}

    def get(training_type: str, data: str = "shipped") -> Path:
        key = (training_type, data)
        if key not in cache:
            sets = [] if data == "shipped" else [f"dataset.name={swapped_file}",
                                                  "heldout.dataset=embedded:preference-heldout"]
            out = root / f"{training_type}-{data}"
            _train(out, f"{training_type}_embedded", *sets)
            cache[key] = out
        return cache[key]

    return get


def _record(run_dir: Path) -> dict:
    return results.decode(json.loads((run_dir / "metrics.json").read_text()))


def _compare(run_dir: Path, tmp_path: Path, *baseline) -> dict:
    out = tmp_path / f"comparison-{run_dir.name}.json"
    args = ["compare", str(run_dir), *map(str, baseline)] + ([] if baseline else ["--no-baseline"])
    code = canary_main([*args, "-o", str(out)])
    assert code in (0, 1), f"canary compare exited {code}"
    return json.loads(out.read_text())


def _check(doc: dict) -> dict:
    return next(c for c in doc["checks"] if c["id"] == "correctness.heldout")


def _rises(values: list[float]) -> bool:
    half = len(values) // 2
    return sum(values[half:]) / (len(values) - half) > sum(values[:half]) / half


@pytest.mark.parametrize("training_type", ["dpo", "reward"])
def test_shipped_data_passes_above_chance(trained, tmp_path, training_type):
    run_dir = trained(training_type)
    h = _record(run_dir)["heldout"]
    assert h["metric"] == "preference_accuracy" and h["dataset"] == "embedded:preference_heldout" and h["rows"] == 64
    assert [p["step"] for p in h["points"]] == [0, STEPS]
    if training_type == "dpo":
        assert h["points"][0]["value"] == 0.5 and h["points"][0]["margin"] == 0.0  # policy = reference
    assert h["points"][-1]["value"] > 0.5 and h["points"][-1]["margin"] > 0
    chk = _check(_compare(run_dir, tmp_path))
    assert chk["status"] == "pass", chk["reason"]


@pytest.mark.parametrize("training_type, train_margin", [("dpo", "rewards/margins"), ("reward", "margin")])
def test_swapped_pairs_fail_without_a_baseline_while_training_looks_healthy(trained, tmp_path, training_type,
                                                                           train_margin):
    run_dir = trained(training_type, "swapped")
    record = _record(run_dir)
    # On its own (swapped) pairs the training looks healthy: the margin rises, the loss falls ...
    assert _rises(record["series"][train_margin]) and not _rises(record["series"]["loss"])
    assert record["heldout"]["points"][-1]["value"] < 0.5
    doc = _compare(run_dir, tmp_path)
    chk = _check(doc)
    assert chk["status"] == "fail", chk["reason"]
    assert "the rejected answers" in chk["reason"]
    # ... as the canary's own learning check says; the held-out check fails the verdict with no baseline
    assert next(c for c in doc["checks"] if c["id"] == "stability.learning")["status"] == "pass"
    assert doc["verdict"] == "fail"


def test_sft_heldout_loss_falls_and_passes(trained, tmp_path):
    run_dir = trained("sft")
    h = _record(run_dir)["heldout"]
    assert h["metric"] == "loss" and h["dataset"] == "embedded:sft_heldout"
    assert h["points"][-1]["value"] < h["points"][0]["value"]
    assert _check(_compare(run_dir, tmp_path))["status"] == "pass"


def test_sft_heldout_loss_rising_while_training_loss_falls_fails(trained, tmp_path):
    record = _record(trained("sft"))
    start = record["heldout"]["points"][0]["value"]
    record["heldout"]["points"][-1]["value"] = start * 1.10  # the held-out loss rose 10%
    out = tmp_path / "sft-rose"
    results.write_json_atomic(out / "metrics.json", record)
    chk = _check(_compare(out, tmp_path))
    assert chk["status"] == "fail" and "while the training loss" in chk["reason"], chk["reason"]


def test_a_fall_below_the_baselines_accuracy_warns(trained, tmp_path):
    base = trained("dpo")
    record = copy.deepcopy(_record(base))
    end = record["heldout"]["points"][-1]
    end["value"] = max(0.5, end["value"] - 0.15)  # above chance, but 0.15 below the baseline's
    out = tmp_path / "dpo-lower"
    results.write_json_atomic(out / "metrics.json", record)
    chk = _check(_compare(out, tmp_path, base))
    assert chk["status"] == "warn" and "baseline's ended at" in chk["reason"], chk["reason"]


def test_no_heldout_result_skips_with_a_reason(trained, tmp_path):
    record = _record(trained("dpo"))
    record.pop("heldout")  # a record from before the held-out evaluation
    out = tmp_path / "old"
    results.write_json_atomic(out / "metrics.json", record)
    chk = _check(_compare(out, tmp_path))
    assert chk["status"] == "skip" and "no held-out result" in chk["reason"]


def test_records_validate_against_the_schema(trained):
    for run_dir in (trained("dpo"), trained("dpo", "swapped"), trained("sft")):
        results.validate(results.encode(_record(run_dir)))


def test_periodic_evaluation_disabled_and_rl_types(tmp_path):
    cfg = load_config(CONFIGS / "dpo_embedded.yaml", ["train.max_steps=4", "train.warmup_steps=1", "heldout.every=2",
                                                     "heldout.max_rows=8"])
    record, _ = run(cfg, tmp_path / "every")
    assert [p["step"] for p in record["heldout"]["points"]] == [0, 2, 4] and record["heldout"]["rows"] == 8
    assert record["heldout"]["seconds_per_eval"] < 1.0
    cfg = load_config(CONFIGS / "dpo_embedded.yaml", ["train.max_steps=2", "train.warmup_steps=1", "heldout.enabled=false"])
    assert run(cfg, tmp_path / "off")[0]["heldout"] is None
    cfg = load_config(CONFIGS / "grpo_embedded.yaml", ["train.max_steps=2", "train.warmup_steps=1"])
    assert run(cfg, tmp_path / "grpo")[0]["heldout"] is None


def test_a_user_dataset_without_a_heldout_set_says_why(tmp_path, swapped_file):
    cfg = load_config(CONFIGS / "dpo_embedded.yaml", ["train.max_steps=2", "train.warmup_steps=1",
                                                     f"dataset.name={swapped_file}"])
    h = run(cfg, tmp_path / "user")[0]["heldout"]
    assert h["points"] == [] and "set heldout.dataset" in h["skipped"]
    chk = _check(_compare(tmp_path / "user", tmp_path))
    assert chk["status"] == "skip" and "heldout.dataset" in chk["reason"]


def test_every_tier_default():
    from canary_runner import heldout

    assert heldout.every(load_config(CONFIGS / "dpo_embedded.yaml")) is None
    assert heldout.every(load_config(CONFIGS / "dpo_embedded.yaml", ["tier=perf", "train.max_steps=40"])) == 10
    assert heldout.every(load_config(CONFIGS / "dpo_embedded.yaml", ["tier=perf", "heldout.every=null"])) is None


@pytest.mark.parametrize("override, words", [
    ("heldout.every=0", ["heldout.every", "greater than 0"]),
    ("heldout.datset=x", ["heldout.datset", "unknown field"]),
    ("heldout.max_rows=-1", ["heldout.max_rows"]),
])
def test_bad_heldout_config_is_a_clear_error(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "dpo_embedded.yaml", [override])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_heldout_dataset_on_an_rl_type_is_refused():
    with pytest.raises(ConfigError, match="grpo has no held-out evaluation"):
        load_config(CONFIGS / "grpo_embedded.yaml", ["heldout.dataset=embedded:preference_heldout"])


def test_an_unknown_heldout_dataset_is_a_setup_error(tmp_path):
    cfg = load_config(CONFIGS / "dpo_embedded.yaml", ["train.max_steps=2", "train.warmup_steps=1",
                                                     "heldout.dataset=embedded:nope"])
    with pytest.raises(SetupError, match="unknown embedded dataset 'embedded:nope'"):
        run(cfg, tmp_path / "bad")
