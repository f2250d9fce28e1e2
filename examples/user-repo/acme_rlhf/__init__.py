"""A team's RLHF code: a DPO trainer subclass, a GRPO reward, callbacks and a model hook."""
