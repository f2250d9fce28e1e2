from trl import RewardConfig, RewardTrainer

from .common import Workload, make_args, peft_config, policy_model, trainer_class, user_callbacks


def build(w: Workload, collector):
    cfg = w.config
    extra = {}
    if cfg.reward.center_rewards_coefficient is not None:
        extra["center_rewards_coefficient"] = cfg.reward.center_rewards_coefficient
    # RewardTrainer puts a one-logit score head on whatever it loads; the embedded model ships one.
    model, init_kwargs = policy_model(cfg, w.tokenizer, head="score")
    args = make_args(RewardConfig, cfg, w.out_dir, w.use_cpu, max_length=cfg.train.max_length,
                     model_init_kwargs=init_kwargs, **extra)
    peft = peft_config(cfg)
    if peft is not None:
        peft.task_type = "SEQ_CLS"
    trainer = trainer_class(cfg, RewardTrainer)(
        model=model, args=args, train_dataset=w.dataset, processing_class=w.tokenizer, peft_config=peft,
        callbacks=[*user_callbacks(cfg), collector])
    collector.count_inputs_of(trainer)
    return trainer
