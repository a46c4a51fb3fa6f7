"""MixMatch (Berthelot, Carlini, Goodfellow, Papernot, Oliver & Raffel, "MixMatch: A
Holistic Approach to Semi-Supervised Learning", NeurIPS 2019).

One step, on a labeled batch (x, y) of n images and B unlabeled images with K = 2
augmentations u1, u2 each; T = ``MIXMATCH.T``, alpha = ``MIXMATCH.ALPHA``:
- label guessing (no gradient): qbar = (softmax(f(u1)) + softmax(f(u2))) / 2,
  sharpened q = qbar^(1/T) / sum_c qbar_c^(1/T);
- MixUp of W = [x, u1, u2] with targets [onehot(y), q, q]: lambda ~ Beta(alpha, alpha),
  lambda' = max(lambda, 1 - lambda), a random permutation pi of the n + 2B rows,
  W' = lambda' W + (1 - lambda') W[pi] (likewise the targets);
- L_x = mean over the n mixed labeled rows of CE(f(W'), t'); L_u = mean over the 2B
  mixed unlabeled rows and the C classes of (softmax(f(W')) - t')^2;
- L = L_x + lambda_u(t) L_u, lambda_u(t) = ``MIXMATCH.LAMBDA_U`` * min(1, t / (r T_tot)),
  r = ``MIXMATCH.RAMPUP``, t the global step from 0, T_tot = num_epochs * total_steps.
As USB's ``mixmatch.py`` and its usb_cv (pretrained ViT) configs: T 0.5, alpha 0.5,
lambda_u 10, ramp-up over 0.4 of the run; the two unlabeled augmentations are weak
ones (USB's data set gives mixmatch a second weak view). The loader has one weak view
of each unlabeled image (``u_w``: random crop and flip), so u1 = u_w and u2 = u_w
mirrored: a second draw of the weak augmentation that shares the crop, with no extra
data loading; the strong views (RandAugment, Cutout) are not MixMatch's. The images
are mixed after normalisation (as USB mixes its normalised tensors) and the mixed batch
goes through the model in one forward pass: USB's interleaving only keeps its
BatchNorm statistics to the first chunk, and the ViT towers have none. lambda and pi
come from the global torch RNG, which checkpoints save: resume stays exact.

BMS and DLS do not apply: MixUp mixes images and targets, so no image has the one
pseudo-label that BMS's margin and DLS's smoothed target need; asking for them is a
config error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import ALGORITHMS, Algorithm, register
from finessl.config import cross_check, declare, non_negative, positive
from finessl.errors import UserError
from finessl.losses import soft_cross_entropy

# Hyperparameters, USB's usb_cv defaults.
declare("MIXMATCH.T", 0.5, "temperature of the sharpened guessed label", check=positive)
declare("MIXMATCH.ALPHA", 0.5, "MixUp's lambda ~ Beta(ALPHA, ALPHA) (0: no mixing)", check=non_negative)
declare("MIXMATCH.LAMBDA_U", 10.0, "weight of the unlabeled (squared-error) loss", check=non_negative)
declare("MIXMATCH.RAMPUP", 0.4, "fraction of the run over which lambda_u rises linearly from 0", check=non_negative)


@cross_check
def _mixup_has_no_pseudo_labels(cfg) -> None:
    if getattr(ALGORITHMS.get(cfg.algorithm), "mixes_targets", False) and (cfg.bms or cfg.dls):
        raise UserError(f"bms/dls: {cfg.algorithm} mixes images and their targets (MixUp), so "
                        "no image has the one pseudo-label BMS and DLS need; set bms False dls False")


def sharpen(probs: torch.Tensor, T: float) -> torch.Tensor:
    """p^(1/T), renormalised over the classes."""
    sharp = probs ** (1 / T)
    return sharp / sharp.sum(dim=-1, keepdim=True)


def mixup(inputs: torch.Tensor, targets: torch.Tensor,
          alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp of the rows with a random permutation of themselves, lambda' = max(lambda,
    1 - lambda), lambda ~ Beta(alpha, alpha) (1 for alpha 0); from the global torch RNG."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha > 0 else 1.0
    lam = max(lam, 1 - lam)
    perm = torch.randperm(len(inputs)).to(inputs.device)
    return lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]


@register("mixmatch", order=22)
class MixMatch(Algorithm):
    mixes_targets = True  # BMS / DLS cannot apply (the config check above)

    def keys(self):
        """This algorithm's config node (T, ALPHA, LAMBDA_U, RAMPUP)."""
        return self.cfg.MIXMATCH

    def initial_statistics(self):
        """``it``: the global step (the ramp-up of lambda_u)."""
        return {"it": torch.zeros((), dtype=torch.long, device=self.device)}

    def ramp(self) -> float:
        """min(1, t / (RAMPUP * T_tot)); 1 throughout for RAMPUP 0."""
        length = self.keys().RAMPUP * self.cfg.num_epochs * self.cfg.total_steps
        return 1.0 if length == 0 else min(1.0, int(self.it) / length)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Float model inputs: uint8 views normalised as the backbone does them (MixUp
        mixes normalised images); float images are taken as already normalised."""
        return self.model.backbone.normalize(images) if images.dtype == torch.uint8 else images

    def train_step(self, batch):
        keys = self.keys()
        x, y = self.inputs(batch["x"]), batch["y"]
        u1 = self.inputs(batch["u_w"])
        u2 = u1.flip(-1)  # the weak view mirrored: the second weak augmentation
        with torch.no_grad():
            probs = (torch.softmax(self.model.classify(u1), dim=-1)
                     + torch.softmax(self.model.classify(u2), dim=-1)) / 2
            guess = sharpen(probs, keys.T)
            targets = torch.cat([F.one_hot(y, self.num_classes).to(guess.dtype), guess, guess])
        mixed, mixed_targets = mixup(torch.cat([x, u1, u2]), targets, keys.ALPHA)
        logits = self.model.classify(mixed)
        n = len(y)
        losses = {"x": soft_cross_entropy(logits[:n], mixed_targets[:n]).mean(),
                  "u": ((torch.softmax(logits[n:], dim=-1) - mixed_targets[n:]) ** 2).mean()}
        weight = keys.LAMBDA_U * self.ramp()
        loss = losses["x"] + weight * losses["u"]
        self.it += 1
        return loss, {"loss/total": loss.detach(), **{f"loss/{k}": v.detach() for k, v in losses.items()},
                      "mixmatch/lambda_u": torch.tensor(weight)}
