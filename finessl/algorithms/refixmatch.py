"""ReFixMatch (Nguyen & Yang, "Boosting Semi-Supervised Learning by bridging high and
low-confidence predictions", ICCV 2023 Workshops, arXiv:2308.07509).

FixMatch keeps the confident pseudo-labels only; ReFixMatch also learns from the
others, by a KL divergence to a softened weak prediction. With p_w = softmax(z_w),
mask_b = 1[max p_w,b >= tau] (tau = ``th``) and T = ``REFIXMATCH.T``:
- L_u = mean_b mask_b CE(z_s,b, argmax p_w,b)                       (FixMatch)
- L_low = mean_b (1 - mask_b) KL(softmax(p_w,b / T) || softmax(z_s,b / T))
- L = L_x + w_con * L_u + w_low * L_low,   w_low = ``REFIXMATCH.W_LOW``
as USB's ``refixmatch.py`` (and its ``consistency_loss(..., 'kl')``) computes it:
the temperature softmax is taken of the weak view's probabilities p_w, not of its
logits (a much flatter target than sharpening; USB hard-codes T = 0.5 there). USB's
defaults are tau 0.95 and lambda_u 1 for both terms; here tau and L_u's weight w_con
are the ones every method of this comparison shares (0.7 and 3), and L_low keeps
USB's weight 1 (at 3 it drowns L_x early on: the near-uniform targets flatten every
unconfident prediction, and a tiny model from scratch learns nothing). Both terms are over both strong views u_s1, u_s2
(USB: one strong view), averaged as L_u is.

BMS and DLS act on L_u as for FixMatch; L_low keeps the rule's own mask (the samples
below tau), whatever DLS weighs L_u by.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch
from finessl.config import declare, non_negative, positive


def tempered(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """USB's soft targets: softmax(probs / T) of probabilities (ReFixMatch, SequenceMatch)."""
    return torch.softmax(probs / temperature, dim=-1)


def kl_to(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(targets || softmax(logits)) per sample."""
    return F.kl_div(F.log_softmax(logits, dim=-1), targets, reduction="none").sum(dim=-1)


# Hyperparameters, USB's defaults.
declare("REFIXMATCH.T", 0.5, "temperature of the low-confidence KL term (USB hard-codes 0.5)", check=positive)
declare("REFIXMATCH.W_LOW", 1.0, "weight of the low-confidence KL term (USB: lambda_u = 1)", check=non_negative)


@register("refixmatch", order=64)
class ReFixMatch(FixMatch):
    def extra_losses(self, logits_u, pl):
        out, t = self.outputs, self.cfg.REFIXMATCH.T
        targets = tempered(torch.softmax(out.logits_w, dim=-1), t).repeat(out.views, 1)
        low = (1.0 - pl.weight).repeat(out.views)
        return {"low_conf": self.cfg.REFIXMATCH.W_LOW * (kl_to(targets, logits_u / t) * low).mean()}
