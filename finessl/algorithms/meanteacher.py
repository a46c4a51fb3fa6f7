"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models:
Weight-averaged consistency targets improve semi-supervised deep learning
results", NeurIPS 2017), as USB runs it (``semilearn/algorithms/meanteacher``).

The Pi-model (pimodel.py) with its target from a teacher whose weights are an
exponential moving average of the student's:

    theta'_t = m theta'_{t-1} + (1 - m) theta_t     after every optimiser step (ema.py),
    L_u = mean_b mean_c (softmax(f_theta(u_s1))_bc - softmax(f_theta'(u_w))_bc)^2,
    L = CE(f_theta(x), y) + lambda_u * r(t) * L_u    (r: USB's linear ramp, consistency.py).

Evaluation and ``predict`` use the teacher (the EMA weights), as the paper and USB do.

Defaults are USB's (usb_cv configs): m = ``MEANTEACHER.EMA`` 0.999, lambda_u =
``MEANTEACHER.LAMBDA_U`` 50, ramp over ``MEANTEACHER.WARMUP`` 0.4 of training. The
paper ramps lambda_u with a sigmoid-shaped curve and raises m from 0.99 to 0.999 after
its ramp-up; USB keeps both fixed, and so do we. Views as for the Pi-model: the
teacher sees the weak view, the student the first strong view (USB: two weak views).
The EMA is kept in fp32 (ema.py).
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.consistency import warmup_fraction
from finessl.algorithms.ema import EmaWeights
from finessl.algorithms.pimodel import PiModel
from finessl.config import declare, momentum, non_negative

# Hyperparameters, USB's defaults.
declare("MEANTEACHER.EMA", 0.999, "Mean Teacher: momentum of the teacher's weight EMA",
        check=momentum)
declare("MEANTEACHER.LAMBDA_U", 50.0, "Mean Teacher: weight of the consistency loss",
        check=non_negative)
declare("MEANTEACHER.WARMUP", 0.4, "Mean Teacher: fraction of training over which the "
        "consistency weight ramps up linearly from 0", check=warmup_fraction)

EMA_PREFIX = "ema."  # the teacher's tensors in the algorithm's state: ``ema.<name>``


@register("meanteacher", order=16)
class MeanTeacher(PiModel):
    key = "MEANTEACHER"

    def __init__(self, cfg, model, num_classes, num_unlabeled, device):
        super().__init__(cfg, model, num_classes, num_unlabeled, device)
        self.ema = EmaWeights(model, cfg.MEANTEACHER.EMA)

    @torch.no_grad()
    def targets(self, images):
        with self.ema.applied():
            return super().targets(images)

    def after_step(self) -> None:
        self.ema.update()

    def evaluation_weights(self):
        return self.ema.applied()

    @classmethod
    def evaluated_state(cls, state):
        if state is None:
            return None
        return {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}

    def state_dict(self):
        return {**super().state_dict(),
                **{EMA_PREFIX + k: v for k, v in self.ema.state_dict().items()}}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.ema.load_state_dict(self.evaluated_state(state))
