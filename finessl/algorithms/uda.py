"""UDA (Xie, Dai, Hovy, Luong & Le, "Unsupervised Data Augmentation for Consistency
Training", NeurIPS 2020).

Consistency between a sharpened prediction of the weak view and the prediction of the
strong views, on the confident images only; q = softmax(z_w), T = ``UDA.T``:
- target  q~ = softmax(z_w / T)  (sharpening; detached);
- mask    = max q >= tau (``th``);
- L_u = mean_b mask_b * CE(z_s, q~_b) over both strong views (the KL of the paper up
  to the target's entropy, a constant: same gradients), soft targets of
  :class:`PseudoLabels` (BMS's margin and DLS's smoothed target take argmax q~);
- training-signal annealing (TSA, ``UDA.TSA``) of L_x: a labeled image counts only
  while its predicted probability max softmax(z_x) <= eta_t, eta_t = a_t (1 - 1/C) +
  1/C with a_t = t/T_tot (``linear``), exp(5 (t/T_tot - 1)) (``exp``), 1 - exp(-5 t/T_tot)
  (``log``), t the global step from 0 and T_tot = num_epochs * total_steps;
  L_x = mean_b 1[max softmax(z_x,b) <= eta_t] CE(z_x,b, y_b) (``none``: plain L_x).
As USB's ``uda.py``: the mask and TSA take the maximum probability (the paper's TSA
takes the true class's); the mean runs over the whole batch, masked samples included.
Defaults: USB's (T 0.4, TSA none); USB's p_cutoff 0.8 is ``th`` here (0.7, shared by
every threshold method of the comparison). ``selected`` (the learning pace under BMS)
is max q >= ``pace_th``.
"""
from __future__ import annotations

import math

import torch

from finessl.algorithms.base import register
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.config import declare, positive

TSA_SCHEDULES = ("none", "linear", "exp", "log")

# Hyperparameters, USB's defaults.
declare("UDA.T", 0.4, "temperature of the sharpened weak-view target softmax(z_w / T)", check=positive)
declare("UDA.TSA", "none", "training-signal annealing of L_x: none, linear, exp or log", choices=TSA_SCHEDULES)


def tsa_threshold(schedule: str, progress: float, num_classes: int) -> float:
    """eta_t of training-signal annealing at ``progress`` = t / T_tot (1: no annealing)."""
    if schedule == "none":
        return 1.0
    alpha = {"linear": progress, "exp": math.exp((progress - 1) * 5),
             "log": 1 - math.exp(-progress * 5)}[schedule]
    return alpha * (1 - 1 / num_classes) + 1 / num_classes


@register("uda", order=26)
class UDA(PseudoLabeling):
    def initial_statistics(self):
        """``it``: the global step (TSA's schedule)."""
        return {"it": torch.zeros((), dtype=torch.long, device=self.device)}

    def pseudo_label(self, logits_w, batch):
        conf, targets = torch.softmax(logits_w, dim=-1).max(dim=-1)
        soft = torch.softmax(logits_w / self.cfg.UDA.T, dim=-1)
        mask = conf >= self.cfg.th
        return PseudoLabels(targets, mask.float(), self.pace_selected(conf), soft)

    def labeled_loss(self, logits, y):
        cfg = self.cfg
        progress = int(self.it) / (cfg.num_epochs * cfg.total_steps)
        eta = tsa_threshold(cfg.UDA.TSA, progress, self.num_classes)
        conf = torch.softmax(self.outputs.logits_x.detach(), dim=-1).max(dim=-1).values
        return super().labeled_loss(logits, y, (conf <= eta).to(logits.dtype))

    def train_step(self, batch):
        out = super().train_step(batch)
        self.it += 1
        return out
