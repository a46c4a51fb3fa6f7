"""Pi-model (Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR
2017), as USB runs it (``semilearn/algorithms/pimodel``).

Two stochastic views of each unlabeled image should get the same prediction:

    L_u = mean_b mean_c (softmax(f(u_s1))_bc - softmax(f(u_w))_bc)^2,

the weak view's prediction a fixed target (no gradient), and
L = CE(f(x), y) + lambda_u * r(t) * L_u with USB's linear ramp r(t) (consistency.py).

Defaults are USB's (its usb_cv configs): lambda_u = ``PIMODEL.LAMBDA_U`` 10, ramp over
``PIMODEL.WARMUP`` 0.4 of training. The paper ramps w(t) with a Gaussian curve
exp(-5 (1 - t)^2) over its first 80 epochs to a maximum of 100 (CIFAR-10); we follow
USB's code.

Views: USB feeds two weak views (its dataset gives pimodel a second weak view in the
``x_ulb_s`` slot); our unlabeled batch has one weak view and two strong ones, so the
target is the weak view ``u_w`` and the trained prediction the first strong view
``u_s1``. The labeled batch and ``u_s1`` go through the model in one forward (USB:
separate forwards, BatchNorm statistics from the labeled one only); the target's
forward runs without autograd (USB: detached), which gives the same gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.consistency import RampedConsistency, softmax_mse, warmup_fraction
from finessl.config import declare, non_negative

# Hyperparameters, USB's defaults.
declare("PIMODEL.LAMBDA_U", 10.0, "Pi-model: weight of the consistency loss", check=non_negative)
declare("PIMODEL.WARMUP", 0.4, "Pi-model: fraction of training over which the consistency "
        "weight ramps up linearly from 0", check=warmup_fraction)


@register("pimodel", order=14)
class PiModel(RampedConsistency):
    key = "PIMODEL"

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """The target distribution of each unlabeled image, from its weak view."""
        return torch.softmax(self.model.classify(images), dim=-1)

    def losses(self, batch):
        x = batch["x"]
        n = x.shape[0]
        target = self.targets(batch["u_w"])
        logits = self.model.classify(torch.cat([x, batch["u_s1"]]))
        return {"x": F.cross_entropy(logits[:n], batch["y"]),
                "u": softmax_mse(logits[n:], target)}
