"""Every training type trains for real on the embedded workload and writes a valid metrics.json."""

import json
import math
import shutil

import pytest

from canary_runner import results
from canary_runner.config import load_config
from canary_runner.runner import run
from canary_runner.workload import embedded

SHORT = ["train.max_steps=6", "train.warmup_steps=2"]
PHASED = {"ppo", "grpo", "rloo"}
# Metrics each type must log, so compare's RL health checks have something to read.
EXPECTED = {
    "sft": ["mean_token_accuracy", "entropy"],
    "dpo": ["rewards/accuracies", "rewards/margins", "logps/chosen"],
    "reward": ["accuracy", "margin"],
    "ppo": ["objective/kl", "objective/entropy", "policy/clipfrac_avg", "loss/value_avg", "val/ratio"],
    "grpo": ["reward", "reward_std", "kl", "clip_ratio/region_mean", "completions/mean_length"],
    "rloo": ["reward", "reward_std", "kl", "completions/mean_length"],
}


def check_record(out_dir, training_type, steps):
    raw = json.loads((out_dir / "metrics.json").read_text())
    results.validate(raw)  # the published JSON Schema
    rec = results.load_metrics(out_dir)
    assert rec["status"] == "completed" and rec["error"] is None
    assert rec["run"]["steps_completed"] == steps and rec["run"]["training_type"] == training_type
    series = rec["series"]
    assert series["step"] == list(range(1, steps + 1))
    assert series["warmup"] == [True, True] + [False] * (steps - 2)
    for name, values in series.items():
        assert len(values) == steps, name
    assert all(t > 0 for t in series["step_time_s"])
    assert all(n > 0 for n in series["tokens"])  # counted from the batches
    assert all(isinstance(v, float) for v in series["loss"]) and all(isinstance(v, float) for v in series["grad_norm"])
    for key in EXPECTED[training_type]:
        assert key in series, key
    # The collector's learning signal, for every type: each optimizer step moved the trainable parameters
    # (relative update ||dθ||/||θ||), at the learning rate the optimizer applied.
    assert all(0 < u < 1 for u in series["update_ratio"]), series["update_ratio"]
    assert all(lr > 0 for lr in series["effective_lr"]), series["effective_lr"]
    s = rec["summary"]
    assert s["step_time_s"]["count"] == steps - 2 and s["tokens_per_s"]["median"] > 0
    assert s["peak_memory"]["cpu_rss_anon_mb"] > 0
    if training_type in PHASED:
        assert set(s["phases"]) == {"generation_time_s", "update_time_s"}
        assert 0 < s["phases"]["generation_time_s"]["median"] < s["step_time_s"]["median"]
    assert s["nan_inf"]["total"] == 0
    # Streamed per step: steps.jsonl holds the same steps.
    lines = (out_dir / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == series["step"]
    assert rec["config_hash"].startswith("sha256:") and rec["env"]["packages"]["trl"] == "1.12.0"
    return rec


@pytest.mark.parametrize("training_type", ["sft", "dpo", "reward", "ppo", "grpo", "rloo"])
def test_embedded_smoke_run(tmp_path, configs_dir, training_type):
    cfg = load_config(configs_dir / f"{training_type}_embedded.yaml", SHORT)
    rec, code = run(cfg, tmp_path)
    assert code == 0
    rec = check_record(tmp_path, training_type, 6)
    if training_type == "dpo":
        # Policy equals reference at step 1: the DPO loss is exactly ln 2.
        assert rec["series"]["loss"][0] == pytest.approx(math.log(2), abs=1e-4)


@pytest.mark.parametrize("training_type", ["sft", "ppo"])
def test_lora_run(tmp_path, configs_dir, training_type):
    cfg = load_config(configs_dir / f"{training_type}_embedded.yaml", SHORT + ["model.lora.r=4"])
    rec, code = run(cfg, tmp_path)
    assert code == 0
    check_record(tmp_path, training_type, 6)
    assert rec["config"]["model"]["lora"]["r"] == 4


def test_reruns_are_bit_identical(tmp_path, configs_dir):
    cfg = load_config(configs_dir / "dpo_embedded.yaml", SHORT)
    a, _ = run(cfg, tmp_path / "a")
    b, _ = run(cfg, tmp_path / "b")
    assert a["series"]["loss"] == b["series"]["loss"]
    assert a["series"]["grad_norm"] == b["series"]["grad_norm"]
    assert a["config_hash"] == b["config_hash"]


def test_hub_style_names_resolve_to_local_directories(tmp_path, configs_dir):
    """Users with network pass Hub names (`EleutherAI/pythia-70m`, `Anthropic/hh-rlhf`); from_pretrained and
    load_dataset treat a local directory the same way, which is how this path is tested offline."""
    model_dir = tmp_path / "pythia-like"
    shutil.copytree(embedded.model_path("embedded:tiny-llama"), model_dir)
    reward_dir = tmp_path / "reward-like"
    shutil.copytree(embedded.model_path("embedded:tiny-llama", "score"), reward_dir)
    data_dir = tmp_path / "hh-like"
    data_dir.mkdir()
    rows = [{"chosen": f"\n\nHuman: What is {i} plus 1?\n\nAssistant: {i} plus 1 is {i + 1}.",
             "rejected": f"\n\nHuman: What is {i} plus 1?\n\nAssistant: No."} for i in range(64)]
    (data_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = SHORT + [f"model.name={model_dir}", f"dataset.name={data_dir}"]
    for training_type in ("sft", "dpo", "grpo", "ppo"):
        extra = [f"model.reward_model={reward_dir}"] if training_type == "ppo" else []
        cfg = load_config(configs_dir / f"{training_type}_embedded.yaml", common + extra)
        out = tmp_path / training_type
        rec, code = run(cfg, out)
        assert code == 0, rec["error"]
        check_record(out, training_type, 6)


def test_cpu_threads_pins_torch_for_the_run_only(tmp_path, configs_dir):
    import torch
    from transformers import TrainerCallback

    seen = []

    class Threads(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    cfg = load_config(configs_dir / "sft_embedded.yaml", SHORT + ["train.cpu_threads=1"])
    _, code = run(cfg, tmp_path, callbacks=[Threads()])
    assert code == 0 and seen == [1] * 6
    assert torch.get_num_threads() == before
