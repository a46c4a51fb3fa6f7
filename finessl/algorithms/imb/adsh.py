"""Adsh (Guo & Li, "Class-Imbalanced Semi-Supervised Learning with Adaptive
Thresholding", ICML 2022), as USB's ``imb_algorithms/adsh`` runs it (on FixMatch only,
as there: it replaces FixMatch's confidence mask; an algorithm with a pseudo-labelling
rule of its own is refused at config time).

Each class k has its own threshold exp(-s_k) on the weak view's confidence:
mask_b = 1[max softmax(z_w)_b >= exp(-s_{yhat_b})], with s_k = ``ADSH.TAU_1`` at the
start. At the start of every epoch after the first, from the unlabeled set's
predictions (confidence, class), with C_k the confidences predicted as class k sorted
in descending order and h the head class:

- rho = (n - 1) / |C_h| where n = #{C_h >= TAU_1} >= 1 (rho = 1 when n = 0): the
  share of the head class that the fixed threshold keeps;
- s_k = -log C_k[int(|C_k| rho) - 1] for every k with |C_k| > 0 (the
  others keep theirs): every class keeps the same share rho of its predictions.

Default TAU_1 = 0.95 (USB's and the paper's). Differences from USB: USB predicts the
unlabeled set with an extra evaluation pass after each epoch; here each unlabeled
image's last weak-view prediction of the training is used (``adsh_conf``,
``adsh_pred``: -1 until seen), with no pass of its own; h is the most frequent class
of the labeled set (USB: class 0, the head of its long-tailed sets); the index
int(|C_k| rho) - 1 is taken at least 0 (USB's -1 would wrap round to the least
confident prediction). As in USB, the first epoch's thresholds are exp(-TAU_1) (0.39
for 0.95), not TAU_1. The learning pace (BMS) counts the confident pseudo-labels as
for FixMatch; DLS replaces the mask's weights as usual and keeps the samples Adsh
keeps. Under torchrun the whole batch of all ranks is recorded, so every rank holds
the same thresholds. Extra memory: N floats and N integers.
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import ALGORITHMS
from finessl.algorithms.fixmatch import FixMatch
from finessl.algorithms.imb import ImbMethod, register_imb
from finessl.algorithms.pseudo_labeling import PseudoLabels
from finessl.config import cross_check, declare, threshold
from finessl.errors import UserError

declare("ADSH.TAU_1", 0.95, "Adsh: confidence threshold of the head class, from which the share kept of every class follows", check=threshold)


def adaptive_scores(conf: torch.Tensor, pred: torch.Tensor, scores: torch.Tensor,
                    head: int, tau_1: float) -> torch.Tensor:
    """The new s (C) from the predictions' confidences and classes (the others: ``scores``)."""
    ranked = [conf[pred == k].sort(descending=True).values for k in range(len(scores))]
    above = int((ranked[head] >= tau_1).sum())
    rho = (above - 1) / len(ranked[head]) if above else 1.0
    new = scores.clone()
    for k, values in enumerate(ranked):
        if len(values):
            new[k] = -torch.log(values[max(int(len(values) * rho) - 1, 0)])
    return new


@register_imb("adsh")
class Adsh(ImbMethod):
    def initial_statistics(self):
        n, dev = self.num_unlabeled, self.device
        return {**super().initial_statistics(),
                "adsh_s": torch.full((self.num_classes,), self.cfg.ADSH.TAU_1,
                                     dtype=torch.float64, device=dev),
                "adsh_conf": torch.zeros(n, dtype=torch.float64, device=dev),
                "adsh_pred": torch.full((n,), -1, dtype=torch.long, device=dev)}

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        seen = self.adsh_pred >= 0
        if epoch > 0 and seen.any():  # USB: after every epoch, from the unlabeled set
            head = int(self.labeled_distribution().argmax())
            self.adsh_s.copy_(adaptive_scores(self.adsh_conf[seen], self.adsh_pred[seen],
                                              self.adsh_s, head, self.cfg.ADSH.TAU_1))

    def pseudo_label(self, logits_w, batch):
        pl = super().pseudo_label(logits_w, batch)
        conf, pred = torch.softmax(logits_w, dim=-1).max(dim=-1)
        idx = batch["u_idx"]
        self.adsh_conf[idx], self.adsh_pred[idx] = conf.to(self.adsh_conf.dtype), pred
        mask = conf >= torch.exp(-self.adsh_s[pred]).to(conf.dtype)
        return PseudoLabels(pl.targets, mask.to(pl.weight.dtype), pl.selected, pl.soft)


@cross_check
def _adsh_on_fixmatch(cfg) -> None:
    if cfg.imb == "adsh" and ALGORITHMS.get(cfg.algorithm).pseudo_label is not FixMatch.pseudo_label:
        raise UserError(f"imb adsh: replaces FixMatch's confidence mask, so it needs an algorithm "
                        f"with that mask (fixmatch, finessl), not {cfg.algorithm}")
