"""What Pi-model, Mean Teacher and VAT share, as USB runs them: a supervised
cross-entropy on the labeled batch plus an unlabeled consistency loss L_u whose weight
ramps up linearly over the first ``WARMUP`` fraction of training,

    L = L_x + lambda_u * r(t) * L_u (+ further terms at their own fixed weights),
    r(t) = clip(t / (WARMUP * T), 0, 1),

t the number of optimiser steps taken before this one (USB's ``self.it``), T =
``num_epochs * total_steps`` (USB's ``num_train_iter``). The step counter is part of
the algorithm's state, so a resumed run ramps on exactly as the uninterrupted one.

These methods learn from a distance between predictions, not from pseudo-labels, so
FineSSL's components have nothing to apply to: ``bms True`` / ``dls True`` with them
fail at config time (``Algorithm.refuses_components``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import NO_PSEUDO_LABELS, Algorithm



def ramp_up(step: int, warmup: float, total: int) -> float:
    """r(t) = clip(t / (warmup * total), 0, 1); no ramp (1) when ``warmup`` is 0."""
    if warmup <= 0:
        return 1.0
    return min(max(step / (warmup * total), 0.0), 1.0)


def warmup_fraction(value) -> str | None:
    """A ``WARMUP`` key: the fraction of training over which the weight ramps up."""
    return None if 0.0 <= value <= 1.0 else "a fraction of training must lie in [0, 1]"


def softmax_mse(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """USB's ``consistency_loss(..., 'mse')``: mean over samples and classes of
    (softmax(logits) - target)^2."""
    return F.mse_loss(torch.softmax(logits, dim=-1), target_probs)


class RampedConsistency(Algorithm):
    """L_x + lambda_u r(t) L_u + the subclass's further terms. A subclass names its
    config node (``key``: its ``LAMBDA_U`` and ``WARMUP``) and returns its losses by
    name from :meth:`losses` (``x`` and ``u`` at least); :meth:`weights` gives the
    fixed weight of each further term (1 by default)."""

    key = ""  # the config node holding LAMBDA_U and WARMUP
    refuses_components = NO_PSEUDO_LABELS

    def initial_statistics(self):
        """t: the optimiser steps taken so far (the ramp's clock), on the host: reading
        it each step costs no device synchronisation."""
        return {"step": torch.zeros((), dtype=torch.long)}

    def ramp(self) -> float:
        node = self.cfg[self.key]
        return ramp_up(int(self.step), node.WARMUP, self.cfg.num_epochs * self.cfg.total_steps)

    def losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """Fixed weights of the terms besides L_x and L_u."""
        return {}

    def train_step(self, batch):
        losses = self.losses(batch)
        ramp = self.ramp()
        weights = {"x": 1.0, "u": self.cfg[self.key].LAMBDA_U * ramp, **self.weights()}
        loss = sum(weights.get(k, 1.0) * v for k, v in losses.items())
        self.step += 1
        return loss, {"loss/total": loss.detach(),
                      **{f"loss/{k}": v.detach() for k, v in losses.items()},
                      "loss/ramp": ramp}
