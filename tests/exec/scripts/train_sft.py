"""A user's own training script, unmodified for the canary: TRL's SFTTrainer (or, with --plain, a
plain transformers Trainer) on the embedded tiny model and dataset. Flags exist only so the tests
can make it fail, stall or run long; nothing in it knows about `canary exec`."""

import argparse
import os
import sys
import tempfile
import time

import datasets
import transformers
from transformers import TrainerCallback

from canary_runner.workload.make_data import DATA_DIR
from canary_runner.workload.sources import model_path


class Fault(TrainerCallback):
    """--raise-at N raises when step N ends; --sleep S sleeps S seconds at every step end."""

    def __init__(self, raise_at, sleep):
        self.raise_at, self.sleep = raise_at, sleep

    def on_step_end(self, args, state, control, **kwargs):
        if self.sleep:
            time.sleep(self.sleep)
        if state.global_step == self.raise_at:
            raise RuntimeError(f"boom at step {state.global_step}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--raise-at", type=int, default=None)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--plain", action="store_true", help="a plain transformers Trainer instead of SFTTrainer")
    a = p.parse_args()

    path = model_path("embedded:tiny-llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    data = datasets.load_dataset("json", data_files=str(DATA_DIR / "sft.jsonl"), split="train")
    out = tempfile.mkdtemp(prefix="user-train-")
    common = dict(output_dir=out, max_steps=a.steps, per_device_train_batch_size=4, learning_rate=a.lr,
                  logging_steps=1, report_to="none", save_strategy="no", bf16=False, use_cpu=True,
                  disable_tqdm=True, seed=7)
    callbacks = [Fault(a.raise_at, a.sleep)]
    if a.plain:
        def tokenize(row):
            text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
            return tokenizer(text, truncation=True, max_length=64)

        data = data.map(tokenize, remove_columns=data.column_names)
        model = transformers.AutoModelForCausalLM.from_pretrained(path)
        trainer = transformers.Trainer(
            model=model, args=transformers.TrainingArguments(**common), train_dataset=data,
            data_collator=transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=callbacks)
    else:
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=path, args=SFTConfig(**common, max_length=64, gradient_checkpointing=False),
                             train_dataset=data, processing_class=tokenizer, callbacks=callbacks)
    trainer.train()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    print(f"user script done: {trainer.state.global_step} steps", flush=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # As careful multi-process scripts do: skip interpreter finalization, where gloo's teardown
        # can hang or abort (SIGABRT) even after destroy_process_group (1 in 9 bare runs here).
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
