"""DARP (Kim, Hur, Jang, Yang, Hwang & Shin, "Distribution Aligning Refinery of
Pseudo-label for Imbalanced Semi-supervised Learning", NeurIPS 2020), as USB's
``imb_algorithms/darp`` runs it.

The base algorithm's hard pseudo-labels are replaced by the argmax of refined soft
labels whose class totals match a target distribution; its mask (or weights) stay.
A memory Q (N x C, ``darp_orig``) holds every unlabeled image's last prediction
softmax(z_w) (uniform until seen). After ``DARP.WARMUP`` epochs (epoch e > WARMUP,
e from 0), on every ``DARP.PERIOD``-th step of an epoch (its first included), Q is
refined as a whole:

1. target counts m_c = N * N_c / sum_k N_k (the labeled set's distribution: the
   unlabeled set is assumed to follow it);
2. Q's columns are rescaled first (USB's ``estimate_pseudo``): the top
   floor(alpha m_c) images of column c (alpha = ``DARP.ALPHA``) get the factor
   s_c = (m_c + 1e-6) / (sum of those top entries + 1e-6), the others 0, and
   Q'_ic = (Q_ic s_c 1[i in top_c] + 1e-6) / sum_k (...);
3. the refinery solves  min_X sum_i KL-like distance to Q' with row sums 1 and
   column sums m, entropy-weighted (w_i = 1 / H(Q'_i)), by the dual's coordinate
   ascent: with A = Q' / e, for t = 1..``DARP.ITERS``:
   x_i = 1 / sum_c A_ic y_ic  (row normalisation; y from nu, nu_c = 1 at the start),
   nu_c solves sum_i A_ic x_i exp(-nu_c / w_i) = m_c  (Newton, from the last nu_c,
   0 at the start),  y_ic = exp(-nu_c / w_i);
   then P = A * x * y (rows summing to 1) is kept (``darp_refine``).
Between refinements the pseudo-labels are argmax P of the batch's images; before the
warm-up ends, the base's own.

Defaults are USB's (alpha 2, 10 iterations, every 10 steps; warm-up: USB 200 of its
epochs, the paper 40% of the run: 12 of the 30 epochs here). Differences from USB:
the period counts steps within the epoch, as the authors' code (USB's global
iteration would leave the first steps after the warm-up with the uniform start
of P, argmax class 0); nu_c is solved by Newton's method with the exact derivative
to convergence (USB: scipy's secant method, stopped at a tolerance of 0.1); all in
float64 on the device. Q records softmax(z_w) (the base's own confidence decides
the mask). BMS's margin and DLS's smoothed target take the refined class; under
torchrun Q is updated from the whole batch of all ranks, so every rank refines the
same Q. Extra memory: 2 N x C floats.
"""
from __future__ import annotations

import math

import torch

from finessl.algorithms.imb import ImbMethod, register_imb
from finessl.algorithms.pseudo_labeling import PseudoLabels
from finessl.config import cross_check, declare, non_negative, positive, starts_within_the_run

declare("DARP.WARMUP", 12, "DARP refines pseudo-labels from the epoch after this one on (epochs from 0)", check=non_negative)
declare("DARP.PERIOD", 10, "DARP re-solves its refinery every K steps of an epoch", check=positive)
declare("DARP.ALPHA", 2.0, "DARP's column rescaling looks at the top alpha * m_c images of class c", check=positive)
declare("DARP.ITERS", 10, "coordinate-ascent iterations of DARP's refinery", check=positive)

NEWTON_STEPS = 50  # Newton converges in a few steps; the cap only bounds a bad case


def rescale_columns(q: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """Step 2: Q' from Q and the target counts m."""
    n, classes = q.shape
    scale = torch.zeros_like(q)
    for c in range(classes):
        top = q[:, c].sort(descending=True, stable=True)
        k = min(int(alpha * target[c].item()), n)
        idx = top.indices[:k]
        scale[idx, c] = (target[c] + 1e-6) / (top.values[:k].sum() + 1e-6)
    scaled = q * scale + 1e-6
    return scaled / scaled.sum(dim=1, keepdim=True)


def refinery(q: torch.Tensor, target: torch.Tensor, iters: int) -> torch.Tensor:
    """Step 3: the refined labels P (rows sum to 1, columns to ``target``) of Q'."""
    weights = 1.0 / -(q * torch.log(q + 1e-6)).sum(dim=1, keepdim=True)  # w_i, N x 1
    a = q / math.e
    nu = torch.ones_like(target)
    start = torch.zeros_like(target)
    for _ in range(iters):
        x = 1.0 / (a * torch.exp(-nu / weights)).sum(dim=1, keepdim=True)
        nu = start.clone()
        for _ in range(NEWTON_STEPS):
            terms = a * x * torch.exp(-nu / weights)  # N x C
            step = (terms.sum(dim=0) - target) / -(terms / weights).sum(dim=0)
            nu = nu - step
            if step.abs().max() <= 1e-12 * (1 + nu.abs().max()):
                break
        start = nu
    y = torch.exp(-nu / weights)
    return a * y / (a * y).sum(dim=1, keepdim=True)


@register_imb("darp")
class DARP(ImbMethod):
    def initial_statistics(self):
        n, c = self.num_unlabeled, self.num_classes
        uniform = torch.full((n, c), 1.0 / c, device=self.device)
        return {**super().initial_statistics(), "darp_orig": uniform,
                "darp_refine": uniform.clone(),
                "darp_step": torch.zeros((), dtype=torch.long, device=self.device)}

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        self.darp_step.zero_()

    def target_counts(self) -> torch.Tensor:
        """m: the unlabeled images expected per class (the labeled set's distribution)."""
        counts = self.labeled_distribution()
        return counts / counts.sum() * self.num_unlabeled

    def pseudo_label(self, logits_w, batch):
        pl = super().pseudo_label(logits_w, batch)
        idx, cfg = batch["u_idx"], self.cfg.DARP
        self.darp_orig[idx] = torch.softmax(logits_w, dim=-1).to(self.darp_orig.dtype)
        step = int(self.darp_step)
        self.darp_step += 1
        if int(self.imb_epoch) <= cfg.WARMUP:
            return pl
        if step % cfg.PERIOD == 0:
            target = self.target_counts()
            q = rescale_columns(self.darp_orig.double(), target, cfg.ALPHA)
            self.darp_refine.copy_(refinery(q, target, cfg.ITERS))
        refined = self.darp_refine[idx]
        return PseudoLabels(refined.argmax(dim=-1), pl.weight, pl.selected,
                            None if pl.soft is None else refined.to(pl.soft.dtype))


@cross_check
def _darp_acts(cfg) -> None:
    if cfg.imb == "darp":  # refines from epoch WARMUP + 1 (from 0) on
        starts_within_the_run("DARP.WARMUP", cfg.DARP.WARMUP, cfg.DARP.WARMUP + 2,
                              cfg.num_epochs, "epoch", "DARP")
