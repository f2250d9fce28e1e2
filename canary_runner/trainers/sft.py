from trl import SFTConfig, SFTTrainer

from .common import Workload, make_args, peft_config, policy_model, trainer_class, user_callbacks


def build(w: Workload, collector):
    cfg = w.config
    model, init_kwargs = policy_model(cfg, w.tokenizer)
    args = make_args(SFTConfig, cfg, w.out_dir, w.use_cpu, max_length=cfg.train.max_length,
                     packing=cfg.sft.packing, model_init_kwargs=init_kwargs)
    trainer = trainer_class(cfg, SFTTrainer)(
        model=model, args=args, train_dataset=w.dataset, processing_class=w.tokenizer,
        peft_config=peft_config(cfg), callbacks=[*user_callbacks(cfg), collector])
    collector.count_inputs_of(trainer)
    return trainer
