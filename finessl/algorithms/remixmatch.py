"""ReMixMatch (Berthelot, Carlini, Cubuk, Kurakin, Sohn, Zhang & Raffel, "ReMixMatch:
Semi-Supervised Learning with Distribution Alignment and Augmentation Anchoring",
ICLR 2020).

One step, on a labeled batch (x, y) of n images and B unlabeled images with a weak
view u_w (the anchor) and two strong views s1, s2; T = ``REMIXMATCH.T``:
- distribution alignment (no gradient): p_model = EMA (m = ``REMIXMATCH.DA_EMA``) of
  the mean prediction softmax(f(u_w)) of the whole batch (all ranks; the first batch's
  mean to start), p_target = the labeled class distribution p(y);
  q~ = q * (p_target + 1e-6) / (p_model + 1e-6), renormalised; the guessed label is
  q = sharpen(q~, T) (as MixMatch's);
- MixUp (MixMatch's, alpha = ``REMIXMATCH.ALPHA``) of [x, s1, s2, u_w] with targets
  [onehot(y), q, q, q]; L_x = mean CE on the n mixed labeled rows, L_u = mean CE to
  the soft targets on the 3B mixed unlabeled rows;
- pre-mixup loss L_u1 = mean_b CE(f(s1), q_b);
- rotation: s1 rotated by k_b * 90 degrees, k_b uniform in {0, 1, 2, 3}, and a 4-way
  linear head of the algorithm's own on its features: L_rot = mean_b CE(g(h(rot(s1))), k_b);
- L = L_x + w(t) (``KL_RATIO`` L_u1 + ``LAMBDA_U`` L_u) + ``ROT_RATIO`` L_rot, with the
  ramp-up w(t) = min(1, t / (``RAMPUP`` T_tot)) as in MixMatch.
As USB's ``remixmatch.py`` and its usb_cv configs (T 0.5, alpha 0.75, lambda_u 1.5,
kl 0.5, rot 0.5, ramp-up over 1/64 of the run, DA momentum 0.999; ``ROT_RATIO 0``: no
rotation head), except: USB's p_target counts the labeled set's labels; the algorithm
does not see the labeled set, so p_target counts the labels of the labeled batches
seen so far (all ranks), Laplace-smoothed ((n_c + 1) / (N + C)): the labeled set's
distribution once the loader has gone through it. The rotation is torch.rot90 on the
batch (USB rotates each image in its data set); k and MixUp's draws come from the
global torch RNG, which checkpoints save. The mixed batch, s1 and its rotation go
through the model in one forward pass (MixMatch's note on interleaving); USB's
forwards of x and s2 whose outputs it does not use are dropped.

BMS and DLS do not apply (MixMatch's note): a config error.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.mixmatch import MixMatch, mixup, sharpen
from finessl.config import declare, momentum, non_negative, positive
from finessl.losses import soft_cross_entropy

# Hyperparameters, USB's usb_cv defaults.
declare("REMIXMATCH.T", 0.5, "temperature of the sharpened guessed label", check=positive)
declare("REMIXMATCH.ALPHA", 0.75, "MixUp's lambda ~ Beta(ALPHA, ALPHA) (0: no mixing)", check=non_negative)
declare("REMIXMATCH.LAMBDA_U", 1.5, "weight of the mixed unlabeled loss", check=non_negative)
declare("REMIXMATCH.KL_RATIO", 0.5, "weight of the pre-mixup loss on the first strong view", check=non_negative)
declare("REMIXMATCH.ROT_RATIO", 0.5, "weight of the rotation loss (0: no rotation head)", check=non_negative)
declare("REMIXMATCH.RAMPUP", 0.015625, "fraction of the run over which the unlabeled weights rise linearly from 0", check=non_negative)
declare("REMIXMATCH.DA_EMA", 0.999, "momentum of distribution alignment's mean-prediction EMA", check=momentum)


def rotate(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image of the batch turned by ``turns`` quarter turns (torch.rot90)."""
    out = images.clone()
    for k in range(1, 4):
        chosen = turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return out


@register("remixmatch", order=24)
class ReMixMatch(MixMatch):
    def keys(self):
        return self.cfg.REMIXMATCH

    def extra_modules(self, feat_dim):
        """The 4-way rotation classifier on the backbone's features."""
        return {"rotation": nn.Linear(feat_dim, 4)} if self.cfg.REMIXMATCH.ROT_RATIO > 0 else {}

    def initial_statistics(self):
        """The global step; p_model (set by the first batch: ``p_model_set``); the labeled
        labels counted so far (p_target)."""
        return {**super().initial_statistics(), "p_model": self.uniform(),
                "p_model_set": torch.tensor(False, device=self.device),
                "label_counts": torch.zeros(self.num_classes, dtype=torch.float64,
                                             device=self.device)}

    @torch.no_grad()
    def align(self, probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Update p_model and p_target with this batch (all ranks), then align ``probs``."""
        m = self.keys().DA_EMA
        mean = self.dist.gather(probs).mean(dim=0)
        self.p_model.copy_(torch.where(self.p_model_set, m * self.p_model + (1 - m) * mean, mean))
        self.p_model_set.fill_(True)
        self.label_counts += torch.bincount(self.dist.gather(y), minlength=self.num_classes)
        p_target = ((self.label_counts + 1) / (self.label_counts.sum() + self.num_classes)
                    ).to(probs.dtype)
        aligned = probs * (p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)

    def train_step(self, batch):
        keys = self.keys()
        x, y = self.inputs(batch["x"]), batch["y"]
        w, s1, s2 = (self.inputs(batch[k]) for k in ("u_w", "u_s1", "u_s2"))
        n, b = len(y), len(w)
        with torch.no_grad():
            probs = torch.softmax(self.model.classify(w), dim=-1)
            guess = sharpen(self.align(probs, y), keys.T)
            targets = torch.cat([F.one_hot(y, self.num_classes).to(guess.dtype),
                                 guess, guess, guess])
        mixed, mixed_targets = mixup(torch.cat([x, s1, s2, w]), targets, keys.ALPHA)
        images = [mixed, s1]
        if "rotation" in self.modules:
            turns = torch.randint(4, (b,)).to(s1.device)
            images.append(rotate(s1, turns))
        logits, _, feat = self.model(torch.cat(images), features=True)
        m = len(mixed)
        ramp = self.ramp()
        losses = {"x": soft_cross_entropy(logits[:n], mixed_targets[:n]).mean(),
                  "u": soft_cross_entropy(logits[n:m], mixed_targets[n:]).mean(),
                  "u1": soft_cross_entropy(logits[m:m + b], guess).mean()}
        loss = losses["x"] + ramp * (keys.KL_RATIO * losses["u1"] + keys.LAMBDA_U * losses["u"])
        if "rotation" in self.modules:
            losses["rot"] = F.cross_entropy(self.modules["rotation"](feat[m + b:]), turns)
            loss = loss + keys.ROT_RATIO * losses["rot"]
        self.it += 1
        return loss, {"loss/total": loss.detach(),
                      **{f"loss/{k}": v.detach() for k, v in losses.items()}}
