"""An exponential moving average of a model's trained tensors: the teacher of Mean
Teacher, and the model some papers evaluate.

theta'_t = m theta'_{t-1} + (1 - m) theta_t after every optimiser step, over what the
model trains (``trainable_state_dict``: PEFT parameters, tuned weights, both heads);
trained buffers (a tuned CNN's BatchNorm statistics) are copied, not averaged, as in
USB's ``EMA`` and Mean Teacher's released code. The frozen tower is shared, so the
average costs the trained tensors once more in memory, not a second model. The
average is kept in fp32 at least, whatever the model's precision: under ``prec fp16`` an fp16
average would lose the (1 - m) share of most steps to rounding.
"""
from __future__ import annotations

import contextlib

import torch


class EmaWeights:
    """``shadow``: the average, by the names of ``model.trainable_state_dict()``."""

    def __init__(self, model, momentum: float):
        self.model, self.momentum = model, momentum
        self.shadow = {n: v.to(torch.promote_types(v.dtype, torch.float32))
                       if v.is_floating_point() else v
                       for n, v in model.trainable_state_dict().items()}
        self._averaged = {n for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, momentum: float | None = None) -> None:
        """One EMA step towards the model's current tensors, with ``momentum`` (default:
        the one it was built with)."""
        m = self.momentum if momentum is None else momentum
        current = dict(self.model.named_parameters())
        current.update(self.model._trained_buffers())
        for name, value in self.shadow.items():
            now = current[name].detach()
            if name in self._averaged:
                value.mul_(m).add_(now.to(value.dtype), alpha=1 - m)
            else:
                value.copy_(now)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the average inside the block, its own tensors again after."""
        own = self.model.trainable_state_dict()
        self.model.load_trainable_state_dict(self.shadow)
        try:
            yield self.model
        finally:
            self.model.load_trainable_state_dict(own)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: v.clone() for n, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in self.shadow.items():
            value.copy_(state[name].to(value.device))
