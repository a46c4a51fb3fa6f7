"""SAW (Lai, Wang, Huang & Wang, "Smoothed Adaptive Weighting for Imbalanced
Semi-Supervised Learning: Improve Reliability Against Unknown Distribution Data",
ICML 2022), as USB's ``imb_algorithms/saw`` runs it.

Every labeled term of L_x and unlabeled term of L_u is weighted by its (pseudo-)label's
class, with the "effective number" weights of a count vector n (C classes):

  N = sum_c n_c / C,  beta = (N - 1) / N,  w_c = (1 - beta) / (1 - beta^{n_c}),
  w <- C * w / sum_c w_c  (mean 1; rare classes weigh more, smoothly).

- L_x = mean_b w^x_{y_b} CE(z_x, y_b), w^x from the labeled set's class counts;
- L_u = mean_{b, views} mask_b w^u_{yhat_b} CE(z_s, yhat_b), with the base algorithm's
  mask (or weight) and pseudo-label; w^u starts from equal counts (all 1) and is
  re-estimated at the start of every epoch from the predicted class counts of the
  unlabeled set (each count at least 1).

No keys of its own (USB has none: N is the mean class count, the paper's
hyperparameter made data-driven by USB). Differences from USB: USB predicts the
unlabeled set with an extra evaluation pass after each epoch; here the count is of
each unlabeled image's last weak-view prediction of the training (``saw_pred``, one
integer per image: -1 until seen), which needs no pass of its own; the labeled counts
are also taken at least 1 (an empty class would weigh infinitely). With DLS on, the
class weight multiplies DLS's confidence weight of L_u; BMS acts as without SAW; the
aux head's terms are not weighted. Under torchrun the predictions of the whole batch
of all ranks are recorded, so every rank holds the same counts. Extra memory: N
integers.
"""
from __future__ import annotations

import torch

from finessl.algorithms.imb import ImbMethod, register_imb


def effective_weights(counts: torch.Tensor) -> torch.Tensor:
    """w of the count vector ``counts`` (float64), mean 1."""
    counts = counts.double()
    n = counts.sum() / len(counts)
    beta = (n - 1) / n
    weights = (1 - beta) / (1 - beta ** counts)
    return weights / weights.sum() * len(counts)


@register_imb("saw")
class SAW(ImbMethod):
    def initial_statistics(self):
        return {**super().initial_statistics(),
                "saw_pred": torch.full((self.num_unlabeled,), -1, dtype=torch.long, device=self.device),
                "saw_ulb_weights": torch.ones(self.num_classes, dtype=torch.float64, device=self.device)}

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        if epoch > 0:  # USB: after every epoch, from the unlabeled set's predictions
            seen = self.saw_pred[self.saw_pred >= 0]
            counts = torch.bincount(seen, minlength=self.num_classes).clamp(min=1)
            self.saw_ulb_weights.copy_(effective_weights(counts))

    def pseudo_label(self, logits_w, batch):
        self.saw_pred[batch["u_idx"]] = logits_w.argmax(dim=-1)
        return super().pseudo_label(logits_w, batch)

    def class_weights(self, labeled):
        if labeled:
            return effective_weights(self.labeled_distribution().clamp(min=1))
        return self.saw_ulb_weights
