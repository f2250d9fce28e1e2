"""PPO (trl.experimental.ppo): policy, frozen reference, reward model and value model.

PPO's loop is its own (not the HF Trainer's): it ignores `max_steps` (its length is
`total_episodes`), logs before `on_step_end`, never clips or reports the grad norm, and wants a
dataset already tokenized with left padding.
"""

from trl.experimental.ppo import PPOConfig, PPOTrainer

from .common import AdapterError, Workload, load_model, make_args, peft_config, policy_model, trainer_class, user_callbacks, world_size
from ..workload import embedded


def _tokenize(dataset, tokenizer, max_prompt_length: int):
    def encode(row):
        prompt = row["prompt"]
        if isinstance(prompt, list):  # conversational
            prompt = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return {"input_ids": ids[-max_prompt_length:]}  # keep the end: it holds the generation prompt

    return dataset.map(encode, remove_columns=dataset.column_names)


def build(w: Workload, collector):
    cfg, s = w.config, w.config.ppo
    tokenizer = w.tokenizer
    tokenizer.padding_side = "left"
    reward_name, reward_head = cfg.model.reward_model, "score"
    if reward_name is None:
        if not embedded.is_embedded(cfg.model.name):
            raise AdapterError("ppo needs model.reward_model (a sequence-classification model with one label) "
                               "when model.name is not an embedded model")
        reward_name = cfg.model.name
        # The embedded reward model scores the `lowercase` rule, so the policy has something to learn;
        # specs without one get the same spec with a randomly initialised one-logit score head.
        if embedded.has_reward_model(reward_name):
            reward_head = "reward"
    # The value model starts as a copy of the reward model, as usual for PPO, unless one is named.
    value_name, value_head = (cfg.model.value_model, "score") if cfg.model.value_model else (reward_name, reward_head)
    peft = peft_config(cfg)

    world = world_size()
    t = cfg.train
    batch = t.per_device_batch_size * t.gradient_accumulation_steps * s.num_mini_batches * world
    args = make_args(
        PPOConfig, cfg, w.out_dir, w.use_cpu,
        total_episodes=t.max_steps * batch,
        response_length=s.response_length,
        kl_coef=s.kl_coef,
        num_ppo_epochs=s.num_ppo_epochs,
        num_mini_batches=s.num_mini_batches,
        cliprange=s.cliprange,
        vf_coef=s.vf_coef,
        temperature=s.temperature,
        missing_eos_penalty=s.missing_eos_penalty,
        local_rollout_forward_batch_size=t.per_device_batch_size,
        num_sample_generations=0,
        stop_token="eos",
    )
    policy = policy_model(cfg, tokenizer)[0] if cfg.model.init else load_model(cfg.model.name, "causal", cfg)
    # With LoRA the reference is the adapter-disabled policy, except under DDP, where TRL needs an
    # explicit reference model (its DDP wrapper hides `.policy`).
    ref = load_model(cfg.model.name, "causal", cfg) if (peft is None or world > 1) else None
    trainer = trainer_class(cfg, PPOTrainer)(
        args=args, processing_class=tokenizer, model=policy, ref_model=ref,
        reward_model=load_model(reward_name, reward_head, cfg), value_model=load_model(value_name, value_head, cfg),
        train_dataset=_tokenize(w.dataset, tokenizer, max(1, t.max_length - s.response_length)),
        peft_config=peft, callbacks=[*user_callbacks(cfg), collector],
    )
    generator = trainer.model.policy if hasattr(trainer.model, "policy") else policy
    pad = tokenizer.pad_token_id
    collector.time_method(generator, "generate", "generation",
                          count=lambda out: int((_sequences(out) != pad).sum()))
    collector.watch_grad_norm(trainer.optimizer)  # PPO neither clips nor logs it
    return trainer


def _sequences(out):
    return out.sequences if hasattr(out, "sequences") else out


def derive(record: dict, cfg) -> None:
    """PPO logs no `loss` or `learning_rate`: derive them from what it does log."""
    if "loss/policy_avg" in record and "loss/value_avg" in record:
        record["loss"] = record["loss/policy_avg"] + cfg.ppo.vf_coef * record["loss/value_avg"]
    if "lr" in record:
        record["learning_rate"] = record.pop("lr")
    # A variance over one sample is NaN by definition, not a sign of trouble: drop it rather than
    # have every single-minibatch PPO canary report a NaN.
    if cfg.ppo.num_ppo_epochs * cfg.ppo.num_mini_batches * cfg.train.gradient_accumulation_steps == 1:
        record.pop("val/ratio_var", None)
