"""CRMatch (Fan, Kukleva, Dai & Schiele, "Revisiting Consistency Regularization for
Semi-Supervised Learning", IJCV 2023), as USB runs it.

FixMatch (hard pseudo-labels of the weak view, mask = conf >= tau, tau = ``th``) with
two heads on the backbone's features f:
- feature distance: a linear head h_ds (d -> d); for each masked sample the cosine
  similarity of h_ds(f_s) and h_ds(f_w) is pushed down to 0 or below:
  L_ds = mean_b mask_b max(0, cos(h_ds(f_s,b), h_ds(f_w,b)))
  (USB's ``cosine_embedding_loss`` with target -1: the paper's point is that the
  features of a weak and a strong view should differ while their predictions agree);
- rotation: a head h_rot (Linear-ReLU-Linear, d -> 4) predicts which of 0, 90, 180,
  270 degrees an unlabeled image was turned by: L_rot = CE over the four turns of each
  image, weight ``CRMATCH.ROT`` (0 turns it off and skips its forward).
L = L_x + w_con L_u + L_ds + ``CRMATCH.ROT`` L_rot.
Differences from USB: the images USB turns come from a loader of their own over the
unlabeled set (the labeled set's weak transform, the labeled batch size); here they
are the first ``len(x)`` weak unlabeled views of the batch (the same transform and
count, other images). The weak view is forwarded without autograd (as for every
algorithm here), so L_ds trains h_ds through both views but the backbone through the
strong one only (USB's concatenated forward: both). L_u and L_ds are taken over both
strong views (USB: one). ``selected`` (the learning pace under BMS) is conf >= ``pace_th``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch
from finessl.config import declare, non_negative


def turned(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by 0, 90, 180 and 270 degrees (all of one turn, then the next)
    and the turn's index, 0 to 3."""
    views = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    labels = torch.arange(4, device=images.device).repeat_interleave(len(images))
    return torch.cat(views), labels


# Hyperparameters, USB's defaults.
declare("CRMATCH.ROT", 1.0, "weight of the rotation-prediction loss (0: none)", check=non_negative)


@register("crmatch", order=44)
class CRMatch(FixMatch):
    def extra_modules(self, feat_dim):
        heads = {"ds": nn.Linear(feat_dim, feat_dim)}
        if self.cfg.CRMATCH.ROT > 0:
            heads["rot"] = nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(),
                                         nn.Linear(feat_dim, 4))
        return heads

    def extra_losses(self, logits_u, pl):
        out = self.outputs
        ds = self.modules["ds"]
        dtype = ds.weight.dtype
        strong = ds(out.feat_u.to(dtype))
        weak = ds(out.feat_w.to(dtype)).repeat(out.views, 1)
        target = -torch.ones(len(strong), dtype=dtype, device=strong.device)
        distance = F.cosine_embedding_loss(strong, weak, target, reduction="none")
        losses = {"ds": (distance * pl.weight.repeat(out.views)).mean()}
        if self.cfg.CRMATCH.ROT > 0:
            images, labels = turned(out.batch["u_w"][:len(out.batch["x"])])
            rot = self.modules["rot"](self.forward(images)[2].to(dtype))
            losses["rot"] = self.cfg.CRMATCH.ROT * F.cross_entropy(rot, labels)
        return losses
