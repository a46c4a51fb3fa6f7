"""FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with
Consistency and Confidence", NeurIPS 2020).

Pseudo-label yhat = argmax softmax(z_w) of the weak view, kept when its confidence
max softmax(z_w) >= tau (``th``, 0.7 here as in every method of the paper's
comparison); L_u = mean_b 1[conf_b >= tau] * CE(z_s, yhat_b) over both strong views
(Eq. 2 of the paper). The learning pace counts conf >= ``pace_th`` (0.7, as released).
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels


@register("fixmatch", order=30)
class FixMatch(PseudoLabeling):
    def pseudo_label(self, logits_w, batch):
        conf, targets = torch.softmax(logits_w, dim=-1).max(dim=-1)
        mask = conf >= self.cfg.th
        return PseudoLabels(targets, mask.float(), self.pace_selected(conf))
