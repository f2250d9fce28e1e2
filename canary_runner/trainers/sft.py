from trl import SFTConfig, SFTTrainer

from .common import Workload, make_args, model_init_kwargs, peft_config
from ..workload import sources


def build(w: Workload, collector):
    cfg = w.config
    args = make_args(SFTConfig, cfg, w.out_dir, w.use_cpu, max_length=cfg.train.max_length,
                     packing=cfg.sft.packing, model_init_kwargs=model_init_kwargs(cfg))
    trainer = SFTTrainer(model=sources.model_path(cfg.model.name), args=args, train_dataset=w.dataset,
                         processing_class=w.tokenizer, peft_config=peft_config(cfg), callbacks=[collector])
    collector.count_inputs_of(trainer)
    return trainer
