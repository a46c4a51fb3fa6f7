"""Supervised baseline: the labeled images alone, L = CE(f(x), y); the lower bound
every semi-supervised method of the comparison must beat."""
from __future__ import annotations

import torch.nn.functional as F

from finessl.algorithms.base import NO_PSEUDO_LABELS, Algorithm, register


@register("supervised", order=10)
class Supervised(Algorithm):
    uses_unlabeled = False
    refuses_components = NO_PSEUDO_LABELS

    def train_step(self, batch):
        logits = self.model.classify(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        return loss, {"loss/total": loss.detach(), "loss/x": loss.detach()}
