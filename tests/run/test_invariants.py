"""The invariants that need no baseline (docs/invariants.md): each passes on the shipped embedded config
of every training type it applies to, and fails, at the right step, on a deliberately broken trainer
plugged in through `trainer.class`. Every run trains for real; runs are shared per module."""

import sys
import textwrap
from pathlib import Path

import pytest

from canary_runner import plugins, runner
from canary_runner.compare import engine
from canary_runner.compare.loading import load_side
from canary_runner.compare.settings import resolve
from canary_runner.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "canary_runner" / "configs"
SHORT = ["train.max_steps=4", "train.warmup_steps=1"]

# A policy update before the first ratio is taken, and a reference that trains: the user's trainer.
BROKEN = '''
import torch
from trl import DPOTrainer, GRPOTrainer, RewardTrainer, RLOOTrainer
from trl.experimental.ppo import PPOTrainer


def nudge(model):
    """Move every trainable weight a little, deterministically."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g).to(p))


class NudgeAfterFirstSampling:
    """Changes the policy after sampling, before the first loss (mixed into a GRPO or RLOO trainer)."""
    nudged = False

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.nudged:
            self.nudged = True
            nudge(self.accelerator.unwrap_model(self.model))
        return out


class NudgedGRPO(NudgeAfterFirstSampling, GRPOTrainer):
    pass


class NudgedRLOO(NudgeAfterFirstSampling, RLOOTrainer):
    pass


class PerturbedPPO(PPOTrainer):
    """The training forward sees other logits than the rollout did (rollouts run under no_grad)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        policy = self.model.policy
        forward = policy.forward

        def perturbed(*a, **kw):
            out = forward(*a, **kw)
            if torch.is_grad_enabled():
                bias = torch.zeros(out.logits.size(-1), dtype=out.logits.dtype, device=out.logits.device)
                bias[::2] = 1.0
                out.logits = out.logits + bias
            return out

        policy.forward = perturbed


class RefTrainedDPO(DPOTrainer):
    """Updates its reference model along with the policy."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        with torch.no_grad():
            for name, p in self.ref_model.named_parameters():
                if "layers.0." in name:
                    p.mul_(1.01)
        return loss


class SameTextReward(RewardTrainer):
    """A collator slip: the chosen texts are scored as the rejected ones too."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        half = inputs["input_ids"].size(0) // 2
        for key in ("input_ids", "attention_mask"):
            inputs[key] = torch.cat([inputs[key][:half], inputs[key][:half]])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class LeakyReward(RewardTrainer):
    """The preference leaks into the score: +1 on every chosen text."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        def leaky(**kwargs):
            out = model(**kwargs)
            chosen = torch.arange(out.logits.size(0), device=out.logits.device) < out.logits.size(0) // 2
            out.logits = out.logits + chosen.to(out.logits.dtype).unsqueeze(-1)
            return out

        return super().compute_loss(leaky, inputs, return_outputs, num_items_in_batch)
'''


def _run(name: str, out: Path, overrides=()):
    cfg = load_config(CONFIGS / f"{name}_embedded.yaml", [*SHORT, *overrides])
    record, code = runner.run(cfg, out)
    assert code == 0, record["error"]
    doc = engine.compare(load_side([str(out)], "current"), [], resolve(cfg.tier))
    return record, doc, {c["id"]: c for c in doc["checks"]}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """{type: (record, comparison, checks by id)} for the shipped embedded configs."""
    root = tmp_path_factory.mktemp("shipped")
    return {t: _run(t, root / t) for t in ("dpo", "ppo", "grpo", "rloo", "reward")}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """The same configs with a broken trainer subclass from a user workspace."""
    ws = tmp_path_factory.mktemp("workspace")
    (ws / "broken_trainers.py").write_text(textwrap.dedent(BROKEN))
    classes = {"dpo": ("dpo", "RefTrainedDPO"), "ppo": ("ppo", "PerturbedPPO"), "grpo": ("grpo", "NudgedGRPO"),
               "rloo": ("rloo", "NudgedRLOO"), "reward_tie": ("reward", "SameTextReward"),
               "reward_leak": ("reward", "LeakyReward")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "path", list(sys.path))
        mp.setenv(plugins.WORKSPACE_ENV, str(ws))
        out = {key: _run(t, ws / "runs" / key, [f"trainer.class=broken_trainers:{cls}"])
               for key, (t, cls) in classes.items()}
        sys.modules.pop("broken_trainers", None)
    return out


APPLIES = {
    "dpo": ["initial_loss", "initial_margin", "reference_frozen"],
    "ppo": ["first_minibatch", "initial_kl", "reference_frozen"],
    "grpo": ["first_clip", "logprob_mismatch", "initial_kl", "reference_frozen"],
    "rloo": ["first_clip", "logprob_mismatch", "initial_kl", "reference_frozen"],
    "reward": ["initial_accuracy"],
}


@pytest.mark.parametrize("training_type", list(APPLIES))
def test_every_invariant_passes_on_the_shipped_config(shipped, training_type):
    record, doc, checks = shipped[training_type]
    invariant_ids = sorted(i for i in checks if i.startswith("invariant."))
    assert invariant_ids == sorted(f"invariant.{training_type}.{n}" for n in APPLIES[training_type])
    for cid in invariant_ids:
        assert checks[cid]["status"] == "pass", (cid, checks[cid]["reason"])
    assert doc["verdict"] == "no-baseline"


def test_the_run_record_holds_the_measured_facts(shipped):
    for t in ("dpo", "ppo", "grpo", "rloo"):
        frozen = shipped[t][0]["invariants"]["reference_frozen"]
        assert frozen["checked"] and frozen["changed_count"] == 0 and frozen["tensors"] > 0, (t, frozen)
    for t in ("grpo", "rloo"):
        probe = shipped[t][0]["invariants"]["logprob_mismatch"]
        assert probe["measured"] and probe["step"] == 1 and probe["rows_unmatched"] == 0, probe
        assert probe["tokens"] == 16 * 16 and 0 <= probe["max_abs"] < 1e-5, probe  # 16 completions x 16 tokens
    assert shipped["reward"][0]["invariants"]["reference_frozen"] == {"checked": False,
                                                                     "why": "reward has no reference model"}


def test_grpo_first_clip_says_it_is_vacuous(shipped):
    """TRL computes no old log-probs in this setup: the clip check says so and names the one that is not."""
    reason = shipped["grpo"][2]["invariant.grpo.first_clip"]["reason"]
    assert "vacuous" in reason and "logprob_mismatch" in reason
    assert "vacuous" not in shipped["rloo"][2]["invariant.rloo.first_clip"]["reason"]  # RLOO computes them


def test_reference_that_trains_fails_reference_frozen(broken):
    _, doc, checks = broken["dpo"]
    chk = checks["invariant.dpo.reference_frozen"]
    assert chk["status"] == "fail", chk["reason"]
    assert "layers.0." in chk["reason"] and "changed" in chk["reason"]
    assert any(d["cause"] == "The reference model changed during training" for d in doc["diagnosis"])
    assert doc["verdict"] == "fail"


def test_ppo_policy_changed_after_rollout_fails_at_step_1(broken):
    _, doc, checks = broken["ppo"]
    chk = checks["invariant.ppo.first_minibatch"]
    assert chk["status"] == "fail" and chk["step"] == 1, chk["reason"]
    assert checks["invariant.ppo.reference_frozen"]["status"] == "pass"
    assert doc["verdict"] == "fail"


@pytest.mark.parametrize("training_type", ["grpo", "rloo"])
def test_policy_nudged_after_generation_fails_logprob_mismatch_at_step_1(broken, training_type):
    _, doc, checks = broken[training_type]
    chk = checks[f"invariant.{training_type}.logprob_mismatch"]
    assert chk["status"] == "fail" and chk["step"] == 1, chk["reason"]
    assert chk["current"] > 1e-3
    clip = checks[f"invariant.{training_type}.first_clip"]["status"]
    # GRPO computes no old log-probs here: its clip check cannot see the nudge; RLOO's can
    assert clip == ("pass" if training_type == "grpo" else "fail")
    if training_type == "grpo":  # its KL is taken in the loss, after the nudge; RLOO's before it
        kl = checks["invariant.grpo.initial_kl"]
        assert kl["status"] == "fail" and kl["step"] == 1, kl["reason"]
    assert checks[f"invariant.{training_type}.reference_frozen"]["status"] == "pass"
    assert doc["verdict"] == "fail"


@pytest.mark.parametrize("case, why", [("reward_tie", "every pair tied"), ("reward_leak", "already separates")])
def test_reward_scorer_that_is_not_untrained_fails_at_step_1(broken, case, why):
    _, doc, checks = broken[case]
    chk = checks["invariant.reward.initial_accuracy"]
    assert chk["status"] == "fail" and chk["step"] == 1 and why in chk["reason"], chk["reason"]
    assert doc["verdict"] == "fail"


def test_the_fingerprint_sees_a_one_ulp_change_and_a_swap():
    import torch

    from canary_runner.collect.invariants import tensor_fingerprint

    w = torch.randn(4097, generator=torch.Generator().manual_seed(0))
    assert tensor_fingerprint(w) == tensor_fingerprint(w.clone())
    bumped = w.clone()
    bumped[2048] = torch.nextafter(bumped[2048], torch.tensor(float("inf")))
    assert tensor_fingerprint(bumped) != tensor_fingerprint(w)
    swapped = w.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # same values, same plain sum: the position weights tell them apart
    assert tensor_fingerprint(swapped) != tensor_fingerprint(w)
    assert tensor_fingerprint(w.bfloat16())[0] == 4097
