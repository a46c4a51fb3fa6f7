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
its ramp-up; USB keeps both fixed, and so do we. One difference from USB, on by
default: the momentum at step t (1 after the first step) is min(1 - 1/(t + 1), m)
(``MEANTEACHER.EMA_WARMUP``), as in the authors' released code
(``update_ema_variables``): early on the teacher is the plain mean of the student's
weights so far instead of staying within (1 - m^t) of its random start, so a short
run (a few hundred steps) evaluates a trained teacher; after ~1/(1 - m) steps it is
USB's EMA. ``MEANTEACHER.EMA_WARMUP False`` is USB's. Views as for the Pi-model: the
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
declare("MEANTEACHER.EMA_WARMUP", True, "Mean Teacher: momentum min(1 - 1/(t+1), EMA) at "
        "step t, as the authors' code (False: EMA from the first step, as USB)")
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
        m = self.cfg.MEANTEACHER.EMA
        if self.cfg.MEANTEACHER.EMA_WARMUP:  # self.step: the steps taken, this one included
            m = min(1.0 - 1.0 / (int(self.step) + 1), m)
        self.ema.update(m)

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
