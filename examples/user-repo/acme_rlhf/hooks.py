"""Model hooks and callbacks named in the canary configs."""

from transformers import TrainerCallback


def use_sdpa(model, tokenizer):
    """Applied after loading: our production attention implementation."""
    model.config._attn_implementation = "sdpa"
    return model


class LogExamplesSeen(TrainerCallback):
    """Adds the number of training examples seen so far to every log (our dashboards read it)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None:
            per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            logs["acme/examples_seen"] = float(state.global_step * per_step)
