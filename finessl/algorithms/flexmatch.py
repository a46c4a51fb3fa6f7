"""FlexMatch (Zhang, Wang, Hou, Wu, Wang, Okumura & Shinozaki, "FlexMatch: Boosting
Semi-Supervised Learning with Curriculum Pseudo Labeling", NeurIPS 2021).

Curriculum Pseudo Labeling: FixMatch with one threshold per class, lowered for the
classes the model has learned least. A memory ``selected_label`` holds, per unlabeled
image, the last class it was confidently (conf >= tau) predicted as, or -1; it lives
for the whole run (unlike the per-epoch learning-pace memory of the base class).

- sigma(c) = #{i : selected_label[i] = c}  (learning effect of class c)
- beta(c) = sigma(c) / max_c' sigma(c')
  with threshold warm-up (``FLEXMATCH.WARMUP``) the normaliser is
  max(max_c' sigma(c'), #unused), #unused = #{i : selected_label[i] = -1}
- T(c) = M(beta(c)) * tau, M(x) = x / (2 - x) (the paper's convex mapping)
- mask = conf >= T(yhat); L_u as in FixMatch.

As in USB (``FlexMatchThresholdingHook``): with an empty memory beta = 0, so every
threshold is 0 and every pseudo-label counts; the mask is computed from the memory as
it stood before this batch, then images with conf >= tau (the fixed threshold) write
their pseudo-label into the memory. The learning pace under BMS counts conf >=
``pace_th`` (0.7, as released; ``pace_th null``: the same images as this memory).
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch
from finessl.algorithms.memory import LabelMemory
from finessl.algorithms.pseudo_labeling import PseudoLabels
from finessl.config import declare


def flexible_thresholds(sigma: torch.Tensor, unused: torch.Tensor, tau: float,
                        warmup: bool) -> torch.Tensor:
    """Per-class thresholds tau * M(beta(c)) from the memory's counts: sigma(c) images
    hold class c, ``unused`` hold none."""
    sigma, unused = sigma.float(), unused.float()
    norm = torch.maximum(sigma.max(), unused) if warmup else sigma.max()
    beta = sigma / norm.clamp(min=1.0)  # empty memory: sigma = 0 -> beta = 0
    return tau * beta / (2.0 - beta)


# Hyperparameters, the paper's (USB's) defaults.
declare("FLEXMATCH.WARMUP", True, "threshold warm-up: normalise by max(max_c sigma(c), #unused)")


@register("flexmatch", order=40)
class FlexMatch(FixMatch):
    def __init__(self, cfg, model, num_classes, num_unlabeled, device):
        super().__init__(cfg, model, num_classes, num_unlabeled, device)
        self.label_memory = LabelMemory(num_unlabeled, num_classes, device)  # O(batch) a step
        self.selected_label = self.label_memory.labels

    def thresholds(self) -> torch.Tensor:
        memory = self.label_memory
        return flexible_thresholds(memory.counts, memory.unused(), self.cfg.th,
                                   self.cfg.FLEXMATCH.WARMUP)

    def pseudo_label(self, logits_w, batch):
        conf, targets = torch.softmax(logits_w, dim=-1).max(dim=-1)
        mask = conf >= self.thresholds()[targets]
        confident = conf >= self.cfg.th
        self.label_memory.set(batch["u_idx"][confident], targets[confident])
        return PseudoLabels(targets, mask.float(), self.pace_selected(conf))

    def state_dict(self):
        return {**super().state_dict(), "selected_label": self.selected_label.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.label_memory.load(state["selected_label"])
