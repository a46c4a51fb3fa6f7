"""DASO (Oh, Kim & Kweon, "DASO: Distribution-Aware Semantics-Oriented Pseudo-label for
Imbalanced Semi-Supervised Learning", CVPR 2022), as USB's ``imb_algorithms/daso``
runs it.

A balanced queue keeps the last L = ``DASO.QUEUE_LEN`` labeled features of each class;
its class means are the prototypes c_k (0 for a class not seen yet). With
cos(f, c) the cosine similarity, T_p = ``DASO.T_PROTO`` and f_w, f_s the weak and
strong views' features:

- semantic pseudo-label q_b = softmax_k(cos(f_w, c_k) / T_p) (no gradient);
- L_assign = mean_{b, views} CE_soft(cos(f_s, c) / T_p, q_b), added with weight
  ``DASO.ASSIGN_LOSS_RATIO``;
- the distribution of the pseudo-labels (their counts over the last completed window
  of ``DASO.PL_DIST_ITER`` steps), pi^{1/T_d} normalised (T_d = ``DASO.T_DIST``), then
  divided by its maximum: v; with p_b the linear (base) probabilities and
  w_b = v[argmax p_b] (``DASO.INTERP_ALPHA`` when ``DASO.WITH_DIST_AWARE`` is off),
  the pseudo-label is argmax ((1 - w_b) p_b + w_b q_b): a class the pseudo-labels
  over-predict leans on the semantic label; the base's mask (or weight) stays, from p.
- for the first ``DASO.NUM_PRETRAIN_ITER`` steps the base's pseudo-labels are kept
  and L_assign is off (from one step before, as in USB).

Each step the labeled batch's features enter the queue before the pseudo-labels are
made. Defaults are USB's (L 256, T_p 0.05, T_d 1.5, alpha 0.5, window 100 steps, ratio
1) but the pre-training: USB 5120 of its 262144 steps, here 500 (one epoch of the
default 30). Differences from USB: the queue takes the trained model's labeled
features of this step (USB: those of the EMA model, in a forward of its own);
q is the current batch's (USB's FixMatch makes its pseudo-labels before DASO's step
computes q, so it mixes in the previous batch's q, of other images); L_assign is the
mean over both strong views; before the first window completes, the current window's
counts stand for pi, and before any step's, this batch's (USB: 0 / 0). For a soft-target base (pl.soft) its soft target is
mixed with q the same way. BMS and DLS take the mixed pseudo-label. Under torchrun
the queue, the counts and q come from the whole batch of all ranks. Extra memory:
the queue, C x L x D floats (saved for an exact resume; USB saves only the
prototypes), and 2 C counts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.imb import ImbMethod, register_imb
from finessl.algorithms.pseudo_labeling import PseudoLabels
from finessl.config import (cross_check, declare, non_negative, positive, starts_within_the_run,
                            threshold)
from finessl.losses import soft_cross_entropy

declare("DASO.QUEUE_LEN", 256, "DASO: labeled features kept per class for the prototypes", check=positive)
declare("DASO.T_PROTO", 0.05, "DASO: temperature of the similarities to the prototypes", check=positive)
declare("DASO.T_DIST", 1.5, "DASO: temperature of the pseudo-label distribution that sets the blend", check=positive)
declare("DASO.INTERP_ALPHA", 0.5, "DASO: the blend's fixed weight of the semantic pseudo-label when DASO.WITH_DIST_AWARE is off", check=threshold)
declare("DASO.WITH_DIST_AWARE", True, "DASO: blend by the pseudo-label distribution (else by DASO.INTERP_ALPHA)", types=(bool,))
declare("DASO.ASSIGN_LOSS_RATIO", 1.0, "DASO: weight of the semantic assignment loss", check=non_negative)
declare("DASO.PL_DIST_ITER", 100, "DASO: steps over which the pseudo-label distribution is counted", check=positive)
declare("DASO.NUM_PRETRAIN_ITER", 500, "DASO: first steps with the base's own pseudo-labels and no assignment loss", check=non_negative)


@register_imb("daso")
class DASO(ImbMethod):
    def initial_statistics(self):
        dev, c = self.device, self.num_classes
        feat_dim = getattr(getattr(self.model, "backbone", None), "feat_dim", 0)
        # the features' precision, at least float32 (fp16 features are cast)
        dtype = torch.promote_types(next(self.model.parameters()).dtype, torch.float32)
        return {**super().initial_statistics(),
                "daso_queue": torch.zeros(c, self.cfg.DASO.QUEUE_LEN, feat_dim, dtype=dtype, device=dev),
                "daso_queued": torch.zeros(c, dtype=torch.long, device=dev),
                "daso_pl_counts": torch.zeros(c, dtype=torch.long, device=dev),
                "daso_pl_dist": torch.zeros(c, dtype=torch.long, device=dev),
                "daso_it": torch.zeros((), dtype=torch.long, device=dev)}

    def enqueue(self, feat: torch.Tensor, labels: torch.Tensor) -> None:
        """The newest QUEUE_LEN features of each class, oldest first, at the queue's end."""
        length = self.daso_queue.shape[1]
        for k in labels.unique().tolist():
            new = feat[labels == k]
            self.daso_queue[k] = torch.cat([self.daso_queue[k], new])[-length:]
            self.daso_queued[k] = min(int(self.daso_queued[k]) + len(new), length)

    def prototypes(self) -> torch.Tensor:
        """c_k: the mean of class k's queued features (0 while none)."""
        length = self.daso_queue.shape[1]
        kept = torch.arange(length, device=self.device)[None, :] >= length - self.daso_queued[:, None]
        total = (self.daso_queue * kept[..., None]).sum(dim=1)
        return total / self.daso_queued.clamp(min=1)[:, None]

    def similarities(self, feat: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(feat[:, None, :], prototypes[None], dim=2) / self.cfg.DASO.T_PROTO

    def blend_weights(self, pred: torch.Tensor) -> torch.Tensor | float:
        """w_b of the linear pseudo-labels ``pred``."""
        cfg = self.cfg.DASO
        if not cfg.WITH_DIST_AWARE:
            return cfg.INTERP_ALPHA
        counts = self.daso_pl_dist if self.daso_pl_dist.sum() > 0 else self.daso_pl_counts
        if counts.sum() == 0:  # no pseudo-label counted yet: this batch's
            counts = torch.bincount(pred, minlength=self.num_classes)
        dist = counts.double() / counts.sum()
        dist = dist ** (1.0 / cfg.T_DIST)
        dist = dist / dist.sum()
        return (dist / dist.max())[pred][:, None]

    def pseudo_label(self, logits_w, batch):
        out, dist, cfg = self.outputs, self.dist, self.cfg.DASO
        dtype = self.daso_queue.dtype
        self.enqueue(dist.gather(out.feat_x.detach().to(dtype)), dist.gather(out.batch["y"]))
        self.daso_prototypes = self.prototypes()
        with torch.no_grad():
            self.daso_q = torch.softmax(self.similarities(
                dist.gather(out.feat_w.to(dtype)), self.daso_prototypes), dim=-1)
        pl = super().pseudo_label(logits_w, batch)
        if int(self.daso_it) >= cfg.NUM_PRETRAIN_ITER:
            probs = torch.softmax(logits_w, dim=-1)
            w = self.blend_weights(probs.argmax(dim=-1))
            q = self.daso_q.to(probs.dtype)
            mixed = (1 - w) * probs + w * q
            soft = None if pl.soft is None else (1 - w) * pl.soft + w * q.to(pl.soft.dtype)
            pl = PseudoLabels(mixed.argmax(dim=-1), pl.weight, pl.selected, soft)
        self.daso_pl_counts += torch.bincount(pl.targets, minlength=self.num_classes)
        self.daso_it += 1
        if int(self.daso_it) % cfg.PL_DIST_ITER == 0:
            self.daso_pl_dist.copy_(self.daso_pl_counts)
            self.daso_pl_counts.zero_()
        return pl

    def extra_losses(self, logits_u, pl):
        losses = super().extra_losses(logits_u, pl)
        out = self.outputs
        if int(self.daso_it) >= self.cfg.DASO.NUM_PRETRAIN_ITER:  # USB: from it + 1 on
            q = self.dist.local(self.daso_q).repeat(out.views, 1)
            sim_s = self.similarities(out.feat_u.to(self.daso_queue.dtype), self.daso_prototypes)
            losses["assign"] = self.cfg.DASO.ASSIGN_LOSS_RATIO * soft_cross_entropy(sim_s, q).mean()
        return losses


@cross_check
def _daso_acts(cfg) -> None:
    if cfg.imb == "daso":  # blends from step NUM_PRETRAIN_ITER (from 0) on
        starts_within_the_run("DASO.NUM_PRETRAIN_ITER", cfg.DASO.NUM_PRETRAIN_ITER,
                              cfg.DASO.NUM_PRETRAIN_ITER + 1, cfg.num_epochs * cfg.total_steps,
                              "step", "DASO")
