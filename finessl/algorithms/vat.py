"""VAT (Miyato, Maeda, Koyama & Ishii, "Virtual Adversarial Training: A Regularization
Method for Supervised and Semi-Supervised Learning", TPAMI 2018), with entropy
minimisation ("VAT + EntMin" of the paper), as USB runs it (``semilearn/algorithms/vat``).

On the weak view u of each unlabeled image, with p(.) = softmax(f(.)) and
KL(a || b) = mean_b sum_c a_c (log a_c - log b_c):

- one power iteration for the most sensitive direction: d ~ N(0, I),
  d <- xi * d / ||d||, g = grad_d KL(p(u) || p(u + d)) (p(u) fixed),
  r_adv = eps * g / ||g||  (norms per image, over all its pixels, + 1e-16);
- local distributional smoothness L_u = KL(p(u) || p(u + r_adv)), p(u) fixed;
- entropy L_ent = mean_b H(p(u)), with gradient through p(u);
- L = CE(f(x), y) + lambda_u * r(t) * L_u + lambda_ent * L_ent (r: USB's linear ramp,
  consistency.py; the entropy term is not ramped, as in USB).

The perturbation lives where USB's does, on the normalised float image: our loaders
send uint8 images that the model normalises on the device (``ImageTower.normalize``),
so the step normalises u once (``model.backbone.normalize``) and feeds u + d and
u + r_adv as floats, which the tower takes as already normalised. eps is thus an L2
norm per image in units of the dataset's std, as in USB (at 224 px an image has 49x
the pixels of USB's 32 px CIFAR, so the same eps is a smaller change per pixel).

Defaults are USB's: eps = ``VAT.EPS`` 6, xi = ``VAT.XI`` 1e-6, lambda_ent =
``VAT.LAMBDA_ENT`` 0.06, lambda_u = ``VAT.LAMBDA_U`` 1 (USB's default ulb_loss_ratio:
its usb_cv configs set none), ramp over ``VAT.WARMUP`` 0.4 of training; one power
iteration, as in the paper's experiments and USB. USB's ``vat_embed`` (the
perturbation on word embeddings) is for text and has no counterpart here. The
labeled and unlabeled batches go through one forward (USB: separate ones, BatchNorm
frozen for the unlabeled); the power iteration's gradient is taken with
``torch.autograd.grad`` (USB: ``backward`` then ``zero_grad``): the same direction,
and no parameter gradient is touched. Note that with fp32 (or fp16) inputs of order 1
an xi of 1e-6 is below their rounding step, as it is in USB: the direction then comes
from the model's own numerical noise; a larger ``VAT.XI`` makes the power iteration
meaningful at that precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.consistency import RampedConsistency, warmup_fraction
from finessl.config import declare, non_negative, positive

# Hyperparameters, USB's defaults.
declare("VAT.EPS", 6.0, "VAT: L2 norm of the adversarial perturbation of each normalised "
        "image", check=non_negative)
declare("VAT.XI", 1e-6, "VAT: L2 norm of the probe perturbation of the power iteration",
        check=positive)
declare("VAT.LAMBDA_U", 1.0, "VAT: weight of the virtual adversarial loss", check=non_negative)
declare("VAT.LAMBDA_ENT", 0.06, "VAT: weight of the entropy minimisation term",
        check=non_negative)
declare("VAT.WARMUP", 0.4, "VAT: fraction of training over which the adversarial loss's "
        "weight ramps up linearly from 0", check=warmup_fraction)


def unit(d: torch.Tensor) -> torch.Tensor:
    """Each sample of ``d`` scaled to unit L2 norm over all its dimensions (+ 1e-16)."""
    norm = d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
    return d / (norm + 1e-16)


def kl_from_logits(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """mean_b KL(softmax(target_logits) || softmax(logits))."""
    log_q = F.log_softmax(target_logits, dim=-1)
    return (log_q.exp() * (log_q - F.log_softmax(logits, dim=-1))).sum(dim=-1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """mean_b H(softmax(logits))."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1).mean()


@register("vat", order=18)
class VAT(RampedConsistency):
    key = "VAT"

    def weights(self):
        return {"ent": self.cfg.VAT.LAMBDA_ENT}

    def adversarial_loss(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """KL(p(u) || p(u + r_adv)) for the images u of ``logits`` (fixed) = f(u)."""
        cfg = self.cfg.VAT
        classify = self.model.classify
        inputs = self.model.backbone.normalize(images)
        probe = (cfg.XI * unit(torch.randn_like(inputs))).requires_grad_()
        (grad,) = torch.autograd.grad(kl_from_logits(logits, classify(inputs + probe)), probe)
        return kl_from_logits(logits, classify(inputs + cfg.EPS * unit(grad)))

    def losses(self, batch):
        x, u = batch["x"], batch["u_w"]
        n = x.shape[0]
        logits = self.model.classify(torch.cat([x, u]))
        logits_u = logits[n:]
        return {"x": F.cross_entropy(logits[:n], batch["y"]),
                "u": self.adversarial_loss(u, logits_u.detach()),
                "ent": entropy(logits_u)}
