"""Dash (Xu, Shang, Ye, Qian, Li, Sun, Li & Jin, "Dash: Semi-Supervised Learning with
Dynamic Thresholding", ICML 2021).

An unlabeled image enters L_u while the loss of its own pseudo-label on the weak view
is below a threshold rho_t that shrinks geometrically; with T = ``DASH.T``,
gamma = ``DASH.GAMMA``, C = ``DASH.C``:
- warm-up: the first ``DASH.WARMUP`` global steps train on the labeled loss only (every
  pseudo-label has weight 0); rho_hat is the mean labeled cross-entropy (all ranks)
  of the warm-up's last epoch (its last ``total_steps`` steps, or all of it if shorter);
- rho_t = max(C gamma^-(k-1) rho_hat, ``DASH.RHO_MIN``), k = 1, 2, ... raised every
  ``DASH.UPDATE_EPOCHS`` epochs (of ``total_steps`` steps) after the warm-up, starting
  with its first step;
- target q~ = softmax(z_w / T) (soft), or argmax z_w (hard) once rho_t has reached
  rho_min; mask_b = CE(z_w,b, q~_b) <= rho_t;
- L_u = mean_b mask_b * CE(z_s, q~_b) over both strong views.
As USB's ``dash.py`` / ``DashThresholdingHook`` (defaults too: T 0.5, gamma 1.27,
C 1.0001, rho_min 0.05, 2048 warm-up steps, rho raised every 10 epochs), except that
USB takes rho_hat from the loss on its evaluation set (the test set) after warm-up,
run before and besides the main iterations; here the warm-up steps are global steps
of the run and rho_hat comes from the labeled training loss, as in the paper (the
loss of the warm-up model on the labeled data). ``selected`` (the learning pace under
BMS) is max softmax(z_w) >= ``pace_th``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.config import cross_check, declare, non_negative, positive, starts_within_the_run
from finessl.losses import soft_cross_entropy

# Hyperparameters, USB's defaults.
declare("DASH.T", 0.5, "temperature of the soft target softmax(z_w / T)", check=positive)
declare("DASH.GAMMA", 1.27, "rho_t shrinks by this factor at each update", check=lambda v: None if v >= 1 else "must be >= 1")
declare("DASH.C", 1.0001, "rho_t = max(C * GAMMA^-(k-1) * rho_hat, RHO_MIN)", check=positive)
declare("DASH.RHO_MIN", 0.05, "lowest threshold; reached, the targets turn hard", check=non_negative)
declare("DASH.WARMUP", 2048, "global steps of supervised warm-up before rho_hat is taken", check=positive)
declare("DASH.UPDATE_EPOCHS", 10, "epochs between two updates of rho_t", check=positive)


@cross_check
def _dash_acts(cfg) -> None:
    """USB's 2048 warm-up steps are 0.2 % of its 2^20; a run shorter than its warm-up
    would be supervised throughout, silently."""
    if cfg.algorithm == "dash":  # pseudo-labels from global step WARMUP + 1 (from 1) on
        starts_within_the_run("DASH.WARMUP", cfg.DASH.WARMUP, cfg.DASH.WARMUP + 1,
                              cfg.num_epochs * cfg.total_steps, "step", "Dash")


@register("dash", order=28)
class Dash(PseudoLabeling):
    def initial_statistics(self):
        """The global step ``it``; the labeled loss summed over the warm-up's last
        epoch (``loss_sum``, ``loss_count``: rho_hat); the threshold ``rho`` and how
        many times it was set (``updates``)."""
        zero = lambda dtype: torch.zeros((), dtype=dtype, device=self.device)  # noqa: E731
        return {"it": zero(torch.long), "loss_sum": zero(torch.float64),
                "loss_count": zero(torch.long), "rho": zero(torch.float64),
                "updates": zero(torch.long)}

    def rho_hat(self) -> torch.Tensor:
        return self.loss_sum / self.loss_count.clamp(min=1)

    def pseudo_label(self, logits_w, batch):
        cfg, it = self.cfg.DASH, int(self.it)
        conf, targets = torch.softmax(logits_w, dim=-1).max(dim=-1)
        selected = self.pace_selected(conf)
        if it < cfg.WARMUP:
            if it >= cfg.WARMUP - self.cfg.total_steps:  # the warm-up's last epoch: rho_hat
                out = self.outputs
                labeled = self.dist.gather(F.cross_entropy(out.logits_x.detach(),
                                                           out.batch["y"], reduction="none"))
                self.loss_sum += labeled.sum().double()
                self.loss_count += labeled.numel()
            return PseudoLabels(targets, torch.zeros_like(conf), selected)
        if (it - cfg.WARMUP) % (cfg.UPDATE_EPOCHS * self.cfg.total_steps) == 0:
            rho = cfg.C * cfg.GAMMA ** -int(self.updates) * self.rho_hat()
            self.rho.fill_(max(float(rho), cfg.RHO_MIN))
            self.updates += 1
        if float(self.rho) == cfg.RHO_MIN:  # hard pseudo-labels once rho is at its floor
            soft = None
            loss_w = F.cross_entropy(logits_w, targets, reduction="none")
        else:
            soft = torch.softmax(logits_w / cfg.T, dim=-1)
            loss_w = soft_cross_entropy(logits_w, soft)
        return PseudoLabels(targets, (loss_w <= self.rho).float(), selected, soft)

    def train_step(self, batch):
        out = super().train_step(batch)
        self.it += 1
        return out
