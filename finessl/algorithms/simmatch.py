"""SimMatch (Zheng, You, Huang, Wang, Qian & Xu, "SimMatch: Semi-supervised Learning
with Similarity Matching", CVPR 2022), as USB runs it.

A projection head g (Linear-ReLU-Linear, ``SIMMATCH.PROJ`` outputs, L2-normalised)
embeds the backbone's features; a bank holds one embedding k_j and label y_j per
labeled image (index ``x_idx``). With q = softmax(z_w) of the weak view, w = g(f_w),
s = g(f_s) of a strong view, T = ``SIMMATCH.T``, alpha = ``SIMMATCH.ALPHA``:
- distribution alignment to the uniform prior over a queue of the last
  ``SIMMATCH.DA_LEN`` batch means (zeros at first): q~ = Normalize(q (1/C + 1e-6) /
  (mean(queue) + 1e-6)), the queue taking this batch first;
- similarity distributions over the bank: p^w_j = softmax_j(w . k_j / T),
  p^s_j = softmax_j(s . k_j / T);
- unfolding: p~^w_j = Normalize_j(p^w_j q~(y_j)) (the in-batch target);
- aggregation: qhat = alpha q~ + (1 - alpha) sum_j p^w_j [y_j = c];
- L_u = mean_b [max qhat_b >= tau] CE(z_s, qhat_b) (soft target, tau = ``th``);
- L_in = mean_b sum_j -p~^w_bj log p^s_bj, weight ``SIMMATCH.IN_LOSS``;
- bank: K_B <- Normalize_0(m K_B + (1 - m) g(F_x)), y_B <- y for the rows B of the
  labeled batch of every rank (m = ``SIMMATCH.BANK_EMA``), after the losses. USB
  normalises this n x P block across the batch (each coordinate over the n images: its
  ``F.normalize`` of the P x n block, default dim 1), not each embedding; followed here,
  so a written k_j is not a unit vector (its norm grows as sqrt(P / n)).
As USB: in the first epoch L_in is 0 and qhat = q~ (the bank is not filled yet); the bank
starts as random unit vectors with label 0. USB's teacher for the bank depends on the
data set: on CIFAR, SVHN and its other small sets (FineSSL's benchmarks) the model
itself with the bank EMA above (0.7), elsewhere an EMA model writing k_j directly; the
first is the one here. USB's defaults for its ViT benchmark (usb_cv): T 0.1, alpha 0.9,
da_len 32, proj 128, lambda_in 1; its tau (p_cutoff 0.95) is ``th`` here, as for every
method of the comparison. L_u and L_in are taken over both strong views (USB: one).
The target is soft: BMS puts its margin on argmax qhat. ``selected`` (the learning pace
under BMS) is max qhat >= ``pace_th``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.config import declare, momentum, non_negative, positive
from finessl.errors import UserError


def projection_head(feat_dim: int, size: int) -> nn.Module:
    """SimMatch's and CoMatch's g: Linear(d, d), ReLU, Linear(d, size)."""
    return nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(), nn.Linear(feat_dim, size))


def embed(head: nn.Module, feat: torch.Tensor) -> torch.Tensor:
    """L2-normalised embedding of ``feat`` (cast to the head's dtype: fp16 features)."""
    return F.normalize(head(feat.to(head[0].weight.dtype)), dim=1)


def align_to_uniform(probs: torch.Tensor, queue: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """USB's ``DistAlignQueueHook`` with a uniform target: write mean_b probs into
    ``queue`` at ``ptr`` (both updated in place), then Normalize(probs (1/C + 1e-6) /
    (mean(queue) + 1e-6))."""
    queue[ptr] = probs.mean(dim=0).to(queue.dtype)
    ptr.copy_((ptr + 1) % len(queue))
    aligned = probs * (1.0 / probs.shape[1] + 1e-6) / (queue.mean(dim=0).to(probs.dtype) + 1e-6)
    return aligned / aligned.sum(dim=-1, keepdim=True)


def unit_interval(value) -> str | None:
    """A weight or probability in [0, 1]."""
    return None if 0.0 <= value <= 1.0 else "must lie in [0, 1]"


# Hyperparameters, USB's (usb_cv) defaults.
declare("SIMMATCH.T", 0.1, "temperature of the similarity distributions over the labeled bank",
        check=positive)
declare("SIMMATCH.ALPHA", 0.9, "weight of the model's own prediction in the aggregated pseudo-label",
        check=unit_interval)
declare("SIMMATCH.PROJ", 128, "size of the projection head's embedding", check=positive)
declare("SIMMATCH.DA_LEN", 32, "batch means in the distribution-alignment queue", check=positive)
declare("SIMMATCH.IN_LOSS", 1.0, "weight lambda_in of the in-batch similarity loss",
        check=non_negative)
declare("SIMMATCH.BANK_EMA", 0.7, "momentum of the labeled bank's embeddings", check=momentum)


@register("simmatch", order=48)
class SimMatch(PseudoLabeling):
    labeled_state = True  # the bank: one row per labeled image

    def extra_modules(self, feat_dim):
        return {"proj": projection_head(feat_dim, self.cfg.SIMMATCH.PROJ)}

    def initial_statistics(self):
        """The labeled bank (random unit embeddings, label 0), the alignment queue and
        its pointer, and the epoch (L_in starts in the second)."""
        if self.num_labeled <= 0:
            raise UserError("algorithm simmatch: its labeled bank needs the labeled set's size "
                            "(build_algorithm(..., num_labeled=N))")
        size, c = self.cfg.SIMMATCH.PROJ, self.num_classes
        return {"bank": F.normalize(torch.randn(self.num_labeled, size, device=self.device), dim=1),
                "bank_labels": torch.zeros(self.num_labeled, dtype=torch.long, device=self.device),
                "da_queue": torch.zeros(self.cfg.SIMMATCH.DA_LEN, c, device=self.device),
                "da_ptr": torch.zeros((), dtype=torch.long, device=self.device),
                "epoch": torch.zeros((), dtype=torch.long, device=self.device)}

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        self.epoch.fill_(epoch)

    def pseudo_label(self, logits_w, batch):
        cfg, out, dist = self.cfg.SIMMATCH, self.outputs, self.dist
        head = self.modules["proj"]
        probs = align_to_uniform(torch.softmax(logits_w, dim=-1), self.da_queue, self.da_ptr)
        self._bank = self.bank.clone().to(logits_w.dtype)  # as before this batch's update
        with torch.no_grad():
            weak = dist.gather(embed(head, out.feat_w)).to(logits_w.dtype)
            labeled = dist.gather(embed(head, out.feat_x.detach()))
        sim = torch.softmax(weak @ self._bank.t() / cfg.T, dim=1)
        unfolded = sim * probs[:, self.bank_labels]
        self._teacher = unfolded / unfolded.sum(dim=1, keepdim=True)
        if self.epoch > 0:
            aggregated = torch.zeros_like(probs).index_add_(1, self.bank_labels, sim)
            probs = cfg.ALPHA * probs + (1 - cfg.ALPHA) * aggregated
        m, idx = cfg.BANK_EMA, dist.gather(out.batch["x_idx"])
        # normalised across the batch (dim 0), as USB's F.normalize of its P x n block
        self.bank[idx] = F.normalize(m * self.bank[idx] + (1 - m) * labeled.to(self.bank.dtype), dim=0)
        self.bank_labels[idx] = dist.gather(out.batch["y"])
        conf, targets = probs.max(dim=-1)
        return PseudoLabels(targets, (conf >= self.cfg.th).float(), self.pace_selected(conf),
                            probs)

    def extra_losses(self, logits_u, pl):
        views = self.outputs.views
        strong = embed(self.modules["proj"], self.outputs.feat_u).to(self._bank.dtype)
        log_sim = torch.log_softmax(strong @ self._bank.t() / self.cfg.SIMMATCH.T, dim=1)
        teacher = self.dist.local(self._teacher).repeat(views, 1)
        loss = -(teacher * log_sim).sum(dim=1).mean()
        if self.epoch == 0:
            loss = loss * 0.0  # as USB: the graph stays, the heads get zero gradients
        return {"in": self.cfg.SIMMATCH.IN_LOSS * loss}
