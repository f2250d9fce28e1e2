from trl import RewardConfig, RewardTrainer

from .common import Workload, make_args, model_init_kwargs, peft_config
from ..workload import sources


def build(w: Workload, collector):
    cfg = w.config
    extra = {}
    if cfg.reward.center_rewards_coefficient is not None:
        extra["center_rewards_coefficient"] = cfg.reward.center_rewards_coefficient
    args = make_args(RewardConfig, cfg, w.out_dir, w.use_cpu, max_length=cfg.train.max_length,
                     model_init_kwargs=model_init_kwargs(cfg), **extra)
    peft = peft_config(cfg)
    if peft is not None:
        peft.task_type = "SEQ_CLS"
    # RewardTrainer puts a one-logit score head on whatever it loads; the embedded model ships one.
    trainer = RewardTrainer(model=sources.model_path(cfg.model.name, head="score"), args=args,
                            train_dataset=w.dataset, processing_class=w.tokenizer, peft_config=peft,
                            callbacks=[collector])
    collector.count_inputs_of(trainer)
    return trainer
