from trl import GRPOConfig, GRPOTrainer

from .online import build_online


def build(w, collector):
    return build_online(GRPOTrainer, GRPOConfig, w.config.grpo, w, collector)
