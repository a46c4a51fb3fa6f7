"""Test-set evaluation of the main head: top-1, balanced and per-class accuracy, ECE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.distributed import SINGLE, Dist
from finessl.metrics import expected_calibration_error, per_class_accuracy, top1


@torch.no_grad()
def evaluate(model, loader, device: torch.device, precision, num_classes: int,
             dist: Dist = SINGLE, num_test: int | None = None) -> dict:
    """Predictions of the main head (docs/method.md §3: inference uses f, not f_aux).

    Multi-process: each rank predicts its strided share (``build_test_loader``); the
    predictions are gathered, put back in test-set order and cut to ``num_test``.
    """
    was_training = model.training
    model.eval()
    confs, preds, targets = [], [], []
    for images, labels in loader:
        with precision.autocast():
            logits = model.classify(images.to(device, non_blocking=True))
        conf, pred = F.softmax(logits.float(), dim=-1).max(dim=-1)
        confs.append(conf)
        preds.append(pred)
        targets.append(labels.to(device))
    model.train(was_training)
    conf, pred, target = (_in_order(torch.cat(t), dist, num_test)
                          for t in (confs, preds, targets))
    per_class = per_class_accuracy(pred, target, num_classes)
    seen = ~torch.isnan(per_class)
    return {"top1": top1(pred, target), "balanced_acc": float(per_class[seen].mean()),
            "ece": expected_calibration_error(conf, pred == target),
            "per_class_acc": per_class.tolist()}


def _in_order(local: torch.Tensor, dist: Dist, num_test: int | None) -> torch.Tensor:
    if not dist.enabled:
        return local.cpu()
    gathered = dist.gather(local).view(dist.world, -1).t().reshape(-1)
    return gathered[:num_test].cpu()
