"""FreeMatch (Wang, Chen, Heng, Hou, Fan, Wu, Wang, Savvides, Shinozaki, Raj, Schiele &
Xie, "FreeMatch: Self-adaptive Thresholding for Semi-supervised Learning", ICLR 2023).

Self-adaptive thresholding (SAT), with m = ``FREEMATCH.EMA`` and q_b = softmax(z_w,b):
- global threshold  tau_t = m tau_{t-1} + (1 - m) mean_b max_c q_b(c),   tau_0 = 1/C;
- local model       p_t(c) = m p_{t-1}(c) + (1 - m) mean_b q_b(c),       p_0(c) = 1/C;
- histogram         h_t(c) = m h_{t-1}(c) + (1 - m) hist_b(argmax q_b)(c), h_0(c) = 1/C;
- class threshold   tau_t(c) = MaxNorm(p_t)(c) * tau_t = p_t(c) / max_c' p_t(c') * tau_t;
- mask = max q_b >= tau_t(argmax q_b); L_u as in FixMatch.
The EMAs are updated with this batch first, then the mask is taken (as in USB's
``FreeMatchThresholingHook``). The initial values are the paper's 1/C; USB starts
p, h and tau at 1 instead, which keeps its thresholds high for the first few
thousand steps at m = 0.999.

Self-adaptive fairness (SAF), added with weight ``FREEMATCH.FAIRNESS`` on the strong
views' logits z_s of the masked samples (both views, so the mask is repeated):
  L_f = -H(SumNorm(p_t / h_t), SumNorm(pbar / hbar)) = sum_c SumNorm(p_t/h_t)(c)
        * log SumNorm(pbar/hbar)(c),
pbar = mean softmax(z_s), hbar = normalised histogram of argmax softmax(z_s), 1/0 := 0
(USB's ``entropy_loss``, including its 1e-12 inside the log). No masked sample: L_f = 0.
``selected`` (the learning pace under BMS) is conf >= ``pace_th``, as in FixMatch.
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch
from finessl.algorithms.pseudo_labeling import PseudoLabels
from finessl.config import declare, momentum, non_negative


def _inverse_or_zero(x: torch.Tensor) -> torch.Tensor:
    inv = 1.0 / x
    return torch.where(torch.isinf(inv), torch.zeros_like(inv), inv)


def fairness_loss(logits_s: torch.Tensor, p_model: torch.Tensor,
                  label_hist: torch.Tensor) -> torch.Tensor:
    """-H(SumNorm(p_model / label_hist), SumNorm(pbar / hbar)) over the given logits."""
    probs = torch.softmax(logits_s, dim=-1)
    hist = torch.bincount(probs.argmax(dim=-1), minlength=probs.shape[-1]).to(probs.dtype)
    hist = hist / hist.sum()
    target = p_model * _inverse_or_zero(label_hist)
    target = target / target.sum()
    mean = probs.mean(dim=0) * _inverse_or_zero(hist).detach()
    mean = mean / mean.sum()
    return (target * torch.log(mean + 1e-12)).sum()


# Hyperparameters, the paper's (USB's) defaults.
declare("FREEMATCH.EMA", 0.999, "momentum of the global / class-wise confidence EMAs", check=momentum)
declare("FREEMATCH.FAIRNESS", 0.01, "weight of the self-adaptive fairness loss", check=non_negative)


@register("freematch", order=50)
class FreeMatch(FixMatch):
    def initial_statistics(self):
        """The global confidence EMA tau_t, the class-wise one p~_t, the pseudo-label
        histogram EMA h_t: all start uniform (1/C)."""
        return {"time_p": torch.tensor(1.0 / self.num_classes, device=self.device),
                "p_model": self.uniform(), "label_hist": self.uniform()}

    def class_thresholds(self) -> torch.Tensor:
        return self.time_p * self.p_model / self.p_model.max()

    def pseudo_label(self, logits_w, batch):
        m = self.cfg.FREEMATCH.EMA
        probs = torch.softmax(logits_w, dim=-1)
        conf, targets = probs.max(dim=-1)
        hist = torch.bincount(targets, minlength=self.num_classes).float()
        self.time_p.mul_(m).add_((1 - m) * conf.mean())
        self.p_model.mul_(m).add_((1 - m) * probs.mean(dim=0))
        self.label_hist.mul_(m).add_((1 - m) * hist / hist.sum())
        mask = conf >= self.class_thresholds()[targets]
        return PseudoLabels(targets, mask.float(), self.pace_selected(conf))

    def extra_losses(self, logits_u, pl):
        views = logits_u.shape[0] // pl.weight.shape[0]
        # over the strong views of all ranks; gradients flow back to each rank's own
        keep = self.dist.gather((pl.weight > 0).repeat(views))
        if not keep.any():
            return {"fairness": logits_u.new_zeros(())}
        logits_u = self.dist.gather_with_grad(logits_u)
        loss = fairness_loss(logits_u[keep], self.p_model, self.label_hist)
        return {"fairness": self.cfg.FREEMATCH.FAIRNESS * loss}
