"""Our DPO training script. CI runs it unmodified under `canary exec`:

    canary exec -o runs/pr --max-steps 20 -- python train.py
"""

import argparse
from pathlib import Path

from datasets import load_dataset
from transformers import AutoTokenizer
from trl import DPOConfig

from acme_rlhf.trainers import AcmeDPOTrainer

HERE = Path(__file__).resolve().parent


def model_path(name: str) -> str:
    if name.startswith("embedded:"):  # the tiny offline model rlhf-canary builds (no model hub needed)
        from canary_runner.workload.sources import model_path as embedded_path

        return embedded_path(name)
    return name


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="embedded:tiny-llama")
    p.add_argument("--data", default=str(HERE / "data" / "preferences.jsonl"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--out", default=str(HERE / "out"))
    a = p.parse_args()

    model = model_path(a.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    args = DPOConfig(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=8, learning_rate=a.lr,
                     beta=0.1, max_length=128, logging_steps=1, save_strategy="no", report_to="none",
                     bf16=False, use_cpu=True, gradient_checkpointing=False, seed=42)
    trainer = AcmeDPOTrainer(model=model, args=args, processing_class=tokenizer,
                             train_dataset=load_dataset("json", data_files=a.data, split="train"))
    trainer.train()


if __name__ == "__main__":
    main()
