"""SoftMatch (Chen, Tao, Fan, Wang, Wang, Schiele, Xie, Raj & Savvides, "SoftMatch:
Addressing the Quantity-Quality Trade-off in Semi-supervised Learning", ICLR 2023).

Instead of a hard threshold, every pseudo-label gets a truncated-Gaussian weight of its
confidence, so low-confidence samples still count a little (quantity) while the
confident ones count fully (quality); m = ``SOFTMATCH.EMA``, q = softmax(z_w):
- uniform alignment (``SOFTMATCH.ALIGN``): p_model = EMA of mean_b q_b,
  UA(q) = Normalize(q * u(C) / p_model), u(C) = 1/C, so weak classes are not starved;
- mu_t = m mu_{t-1} + (1 - m) mean_b c_b,  mu_0 = 1/C,
  var_t = m var_{t-1} + (1 - m) var_b c_b (unbiased),  var_0 = 1,
  c_b = max_c UA(q_b)(c);
- lambda(c_b) = exp(-(min(c_b - mu_t, 0))^2 / (2 var_t / n_sigma^2)),  n_sigma =
  ``SOFTMATCH.N_SIGMA``: 1 above the mean, a Gaussian tail below;
- L_u = mean_b lambda(c_b) * CE(z_s, argmax q_b).
As in USB (``DistAlignEMAHook`` and ``SoftMatchWeightingHook``): p_model starts as the
first batch's mean prediction (a ``p_model_set`` flag, saved with the state, marks it);
p_model, then mu and var are updated with this batch before the weights are taken; UA
enters only the weights, the hard pseudo-label stays argmax q of the raw prediction
(USB: "uniform alignment in softmatch do not use aligned probs for generating pseudo
labels"). A batch of one sample has no variance: var is then left as it is.
``selected`` (the learning pace under BMS) is max q >= ``pace_th``.
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch
from finessl.algorithms.pseudo_labeling import PseudoLabels
from finessl.config import declare, momentum


# Hyperparameters, the paper's (USB's) defaults.
declare("SOFTMATCH.EMA", 0.999, "momentum of the confidence mean / variance and class-distribution EMAs", check=momentum)
declare("SOFTMATCH.N_SIGMA", 2.0, "width of the truncated Gaussian, in standard deviations")
declare("SOFTMATCH.ALIGN", True, "uniform alignment of the pseudo-label distribution")


@register("softmatch", order=60)
class SoftMatch(FixMatch):
    def initial_statistics(self):
        """The class-distribution EMA (set by the first batch: ``p_model_set``) and the
        confidence mean and variance of the truncated Gaussian."""
        return {"p_model": self.uniform(), "p_model_set": torch.tensor(False, device=self.device),
                "mu": torch.tensor(1.0 / self.num_classes, device=self.device),
                "var": torch.tensor(1.0, device=self.device)}

    def uniform_alignment(self, probs: torch.Tensor) -> torch.Tensor:
        """Update p_model with this batch, then UA(q) = Normalize(q / C / p_model)."""
        m = self.cfg.SOFTMATCH.EMA
        mean = probs.mean(dim=0)
        self.p_model.copy_(torch.where(self.p_model_set, m * self.p_model + (1 - m) * mean, mean))
        self.p_model_set.fill_(True)
        aligned = probs / self.num_classes / self.p_model.clamp(min=1e-12)
        return aligned / aligned.sum(dim=-1, keepdim=True)

    def gaussian_weights(self, conf: torch.Tensor) -> torch.Tensor:
        """Update mu and var with this batch, then lambda(conf) (truncated Gaussian)."""
        m, n_sigma = self.cfg.SOFTMATCH.EMA, self.cfg.SOFTMATCH.N_SIGMA
        self.mu.mul_(m).add_((1 - m) * conf.mean())
        if conf.numel() > 1:
            self.var.mul_(m).add_((1 - m) * conf.var(correction=1))
        below = torch.clamp(conf - self.mu, max=0.0)
        return torch.exp(-below ** 2 / (2 * self.var / n_sigma ** 2))

    def pseudo_label(self, logits_w, batch):
        probs = torch.softmax(logits_w, dim=-1)
        conf, targets = probs.max(dim=-1)
        aligned = self.uniform_alignment(probs) if self.cfg.SOFTMATCH.ALIGN else probs
        weight = self.gaussian_weights(aligned.max(dim=-1).values)
        return PseudoLabels(targets, weight, self.pace_selected(conf))
