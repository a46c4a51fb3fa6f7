"""A toy algorithm as one file: FixMatch whose threshold is the mean confidence of the
batch (never below ``TOYMATCH.FLOOR``).

Shown in docs/extending.md; tests/test_plugins.py trains with it through main.py
(``plugins tests/assets/plugins/toy_match.py algorithm toymatch``)."""
import torch

from finessl.algorithms.base import register
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.config import declare

declare("TOYMATCH.FLOOR", 0.5, "toy algorithm: lowest confidence threshold")


@register("toymatch")
class ToyMatch(PseudoLabeling):
    def pseudo_label(self, logits_w, batch):
        conf, targets = torch.softmax(logits_w, dim=-1).max(dim=-1)
        mask = conf >= conf.mean().clamp(min=self.cfg.TOYMATCH.FLOOR)
        return PseudoLabels(targets, mask.float(), mask)
