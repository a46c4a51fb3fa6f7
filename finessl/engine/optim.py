"""The optimizer and its schedule, built from the config in one place (docs/method.md §4):
SGD with momentum and weight decay on every trained tensor in one group, as released,
and cosine annealing stepped once per epoch over ``num_epochs`` (eta_min 0)."""
from __future__ import annotations

import torch


def build_optimizer(cfg, params: list[torch.nn.Parameter]):
    """(optimizer, scheduler) for ``params``; call ``scheduler.step()`` after each epoch."""
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(cfg.num_epochs))
    return optimizer, schedule
