"""The shipped embedded RL canaries learn within their smoke budget.

PPO, GRPO and RLOO on the embedded tiny model are rewarded for writing lowercase words (the built-in
`lowercase` reward; for PPO the embedded reward model that scores the same rule). Over the 20 smoke
steps the reward must rise (Theil-Sen slope, 95% interval above 0), KL must rise from 0, and entropy
must fall; otherwise the RL health checks compare noise with noise. The runs are the session's
shared ones (`ppo-base` and `grpo` are also compared in test_real.py).
"""

from __future__ import annotations

import math
import re

import pytest

from canary_runner import results
from canary_runner.compare.stats import trend

# (reward, KL, entropy) as each trainer logs them.
KEYS = {
    "ppo": ("objective/scores", "objective/kl", "policy/entropy_avg"),
    "grpo": ("reward", "kl", "entropy"),
    "rloo": ("reward", "kl", "entropy"),
}
RUNS = {"ppo": ("ppo-base", "ppo_embedded"), "grpo": ("grpo", "grpo_embedded"), "rloo": ("rloo", "rloo_embedded")}


@pytest.mark.parametrize("training_type", ["ppo", "grpo", "rloo"])
def test_the_embedded_rl_canary_learns_within_the_smoke_steps(trained, training_type):
    rec = results.load_metrics(trained(*RUNS[training_type]))
    assert rec["status"] == "completed" and rec["run"]["steps_completed"] == 20
    s = rec["series"]
    reward, kl, entropy = (s[k] for k in KEYS[training_type])

    rise = trend(s["step"], reward)
    assert rise.slope_ci[0] > 0, f"reward does not rise: slope {rise.slope:.4f}, 95% CI {rise.slope_ci}"
    assert sum(reward[-5:]) / 5 > sum(reward[:5]) / 5

    assert abs(kl[0]) < 1e-3, f"KL at the first step is {kl[0]}, not 0: the policy starts as the reference"
    kl_trend = trend(s["step"], kl)
    assert kl_trend.slope_ci[0] > 0, f"KL does not rise: 95% CI {kl_trend.slope_ci}"
    assert sum(kl[-5:]) / 5 > 0

    fall = trend(s["step"], entropy)
    assert fall.slope_ci[1] < 0, f"entropy does not fall: 95% CI {fall.slope_ci}"
    assert entropy[-1] < entropy[0]


def test_the_lowercase_reward_scores_the_share_of_lowercase_characters():
    from canary_runner.workload.rewards import lowercase

    assert lowercase(["abc def", "ABC", "", "ab12"]) == [1.0, 0.0, 0.0, 0.5]
    assert lowercase([[{"role": "assistant", "content": "ok."}]]) == [2 / 3]


def test_the_embedded_reward_model_scores_the_lowercase_rule():
    """PPO's reward model computes the rule exactly: score ~ 2 x (share of lowercase-word tokens) - 1,
    over the non-pad tokens, whatever the left padding."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from canary_runner.workload import embedded

    path = embedded.model_path("embedded:tiny-llama", "reward")
    assert path == embedded.model_path("embedded:tiny-llama", "reward")  # cached under its key
    model = AutoModelForSequenceClassification.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    word = re.compile(r"[a-z ]+")
    gen = torch.Generator().manual_seed(0)
    pad = tok.pad_token_id
    for n_pad in (0, 3, 7):
        ids = torch.randint(4, len(tok), (12,), generator=gen).tolist()
        x = torch.tensor([[pad] * n_pad + ids])
        mask = x != pad
        with torch.no_grad():
            out = model.model(input_ids=x.masked_fill(~mask, 0), attention_mask=mask,
                              position_ids=(mask.cumsum(1) - 1).clamp(min=0))
            score = float(model.score(out.last_hidden_state)[0, -1, 0])
        share = sum(bool(word.fullmatch(tok.decode([i]))) for i in ids) / len(ids)
        m = 2 * share - 1
        assert math.isclose(score, m / math.sqrt(1 + m * m / 16), abs_tol=1e-4), (score, share)
    # a spec without the built-in reward model says so
    with pytest.raises(ValueError, match="no built-in reward model"):
        embedded.model_path("embedded:pythia-70m-shape", "reward")
