"""GRPO and RLOO: the same shape (prompts, a group of sampled completions, reward functions)."""

from .common import Workload, make_args, peft_config, policy_model, trainer_class, user_callbacks
from ..workload import rewards


def build_online(trainer_cls, config_cls, section, w: Workload, collector):
    cfg = w.config
    model, init_kwargs = policy_model(cfg, w.tokenizer)
    args = make_args(
        config_cls, cfg, w.out_dir, w.use_cpu,
        num_generations=section.num_generations,
        max_completion_length=section.max_completion_length,
        beta=section.beta,
        temperature=section.temperature,
        model_init_kwargs=init_kwargs,
    )
    trainer = trainer_class(cfg, trainer_cls)(
        model=model, reward_funcs=rewards.reward_funcs(section.reward_funcs, f"{cfg.training_type}.reward_funcs"),
        args=args, train_dataset=w.dataset, processing_class=w.tokenizer, peft_config=peft_config(cfg),
        callbacks=[*user_callbacks(cfg), collector])
    collector.count_inputs_of(trainer)
    # Generation and scoring vs the policy update: the split that tells a slow sampler from a slow backward.
    collector.time_method(trainer, "_generate_and_score_completions", "generation")
    return trainer
