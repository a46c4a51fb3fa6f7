"""DebiasPL (Wang, Wu, Lian & Yu, "Debiased Learning from Naturally Imbalanced
Pseudo-Labels", CVPR 2022).

Pseudo-labels of a (pretrained, zero-shot or semi-supervised) model are biased towards
the classes it already favours; DebiasPL removes that bias by counterfactual
reasoning with the EMA p_hat of the model's mean prediction on unlabeled data
(m = ``DEBIASPL.EMA``, tau_d = ``DEBIASPL.TAU``, p_hat_0 = 1/C):
- debiased pseudo-labels   q = softmax(z_w - tau_d * log p_hat),
  yhat = argmax q, mask = max q >= tau (``th``)  (FixMatch on the debiased q);
- p_hat <- m p_hat + (1 - m) mean_b softmax(z_w)  (raw prediction, every sample);
- adaptive marginal loss   L_u = mean_b mask_b * CE(z_s + tau_d * log p_hat, yhat_b),
  i.e. a larger margin for the classes predicted less often.
Order as in the authors' code (``main_DebiasPL.py``): the pseudo-labels are debiased
with p_hat as it stood before this batch, p_hat is then updated with this batch, and
the margin uses the updated p_hat. ``selected`` (learning pace under BMS) is max q >= ``pace_th``.
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch
from finessl.algorithms.pseudo_labeling import PseudoLabels
from finessl.config import declare, momentum, non_negative


# Hyperparameters, the paper's (USB's) defaults.
declare("DEBIASPL.EMA", 0.999, "momentum of the mean-prediction EMA p_hat", check=momentum)
declare("DEBIASPL.TAU", 0.5, "strength of the debiasing and of the adaptive margin", check=non_negative)


@register("debiaspl", order=70)
class DebiasPL(FixMatch):
    def initial_statistics(self):
        """p_hat, the EMA of the mean prediction, starts uniform."""
        return {"p_hat": self.uniform()}

    def pseudo_label(self, logits_w, batch):
        tau_d, m = self.cfg.DEBIASPL.TAU, self.cfg.DEBIASPL.EMA
        debiased = torch.softmax(logits_w - tau_d * torch.log(self.p_hat), dim=-1)
        conf, targets = debiased.max(dim=-1)
        mask = conf >= self.cfg.th
        self.p_hat.mul_(m).add_((1 - m) * torch.softmax(logits_w, dim=-1).mean(dim=0))
        return PseudoLabels(targets, mask.float(), self.pace_selected(conf))

    def adjust_unlabeled_logits(self, logits):
        return logits + self.cfg.DEBIASPL.TAU * torch.log(self.p_hat)
