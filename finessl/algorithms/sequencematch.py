"""SequenceMatch (Nguyen, "SequenceMatch: Revisiting the design of weak-strong
augmentations for Semi-supervised learning", WACV 2024, arXiv:2310.15787).

A medium view (one RandAugment op and cutout: ``u_m``) between the weak and the strong
one, and consistency along the sequence weak -> medium -> strong. FlexMatch's
per-class thresholds give the mask (its memory, warm-up and order, ``FLEXMATCH.WARMUP``);
with p_w = softmax(z_w), p_m = softmax(z_m) (detached) and T = ``SEQUENCEMATCH.T``:
- L_u = mean_b mask_b CE(z_s,b, argmax p_w,b)                         (FlexMatch)
- L_mw = mean_b mask_b KL(softmax(p_w,b / T) || softmax(z_m,b))
- L_sm = mean_b mask_b KL(softmax(p_m,b / T) || softmax(z_s,b))
- L_sw = mean_b mask_b KL(softmax(p_w,b / T) || softmax(z_s,b))
- L = L_x + w_con * L_u + w_kl * (L_mw + L_sm + L_sw),   w_kl = ``SEQUENCEMATCH.W_KL``
as USB's ``sequencematch.py`` has it: the temperature softmax is of the probabilities,
not the logits, and the three KL terms take FlexMatch's mask (the paper's separate
treatment of low-confidence predictions is not in USB's code). USB's defaults are tau
0.95 and lambda_u 1 for all four terms; here tau and L_u's weight w_con are the ones
every method of this comparison shares (0.7 and 3), and the KL terms keep USB's weight
1 (as ReFixMatch's: near-uniform targets at weight 3 drown L_x early on). USB has one strong view; here L_u, L_sm and L_sw are over both
strong views u_s1, u_s2, averaged as L_u is. The medium view joins the step's one
forward with autograd (``extra_views``), so L_mw trains it.

BMS and DLS act on L_u as for FlexMatch; the KL terms keep FlexMatch's mask.
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.flexmatch import FlexMatch
from finessl.algorithms.refixmatch import kl_to, tempered
from finessl.config import declare, non_negative, positive

# Hyperparameters, USB's defaults.
declare("SEQUENCEMATCH.T", 0.5, "temperature of the KL terms' soft targets", check=positive)
declare("SEQUENCEMATCH.W_KL", 1.0, "weight of each of the three KL terms (USB: lambda_u = 1)", check=non_negative)


@register("sequencematch", order=66)
class SequenceMatch(FlexMatch):
    unlabeled_medium = True
    extra_views = ("u_m",)

    def extra_losses(self, logits_u, pl):
        out, t, views = self.outputs, self.cfg.SEQUENCEMATCH.T, self.outputs.views
        logits_m = out.extra["u_m"][0]
        from_w = tempered(torch.softmax(out.logits_w, dim=-1), t)
        from_m = tempered(torch.softmax(logits_m.detach(), dim=-1), t)
        mask, mask_u = pl.weight, pl.weight.repeat(views)
        terms = {"kl_mw": kl_to(from_w, logits_m) * mask,
                 "kl_sm": kl_to(from_m.repeat(views, 1), logits_u) * mask_u,
                 "kl_sw": kl_to(from_w.repeat(views, 1), logits_u) * mask_u}
        return {k: self.cfg.SEQUENCEMATCH.W_KL * v.mean() for k, v in terms.items()}
