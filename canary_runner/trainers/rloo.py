from trl import RLOOConfig, RLOOTrainer

from .online import build_online


def build(w, collector):
    return build_online(RLOOTrainer, RLOOConfig, w.config.rloo, w, collector)
