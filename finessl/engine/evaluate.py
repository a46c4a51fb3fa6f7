"""Test-set evaluation: top-1, balanced and per-class accuracy, ECE and the confusion
matrix of the main head, and top-1, ECE and the reliability bins of both heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.distributed import SINGLE, Dist
from finessl.metrics import (confusion_matrix, expected_calibration_error, per_class_accuracy,
                             reliability_bins, top1)


@torch.no_grad()
def evaluate(model, loader, device: torch.device, precision, num_classes: int,
             dist: Dist = SINGLE, num_test: int | None = None) -> dict:
    """Predictions of the main head (docs/method.md §3: inference uses f, not f_aux),
    and of the aux head beside it for the report's calibration figures (a model
    without ``aux_head`` gets the main head's numbers there).

    Multi-process: each rank predicts its strided share (``build_test_loader``); the
    predictions are gathered, put back in test-set order and cut to ``num_test``.
    """
    was_training = model.training
    model.eval()
    columns: list[list[torch.Tensor]] = [[], [], [], [], []]  # conf, pred, aux ones, target
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        with precision.autocast():
            if hasattr(model, "aux_head"):
                logits, aux = model(images)
            else:
                logits = aux = model.classify(images)
        conf, pred = F.softmax(logits.float(), dim=-1).max(dim=-1)
        aux_conf, aux_pred = F.softmax(aux.float(), dim=-1).max(dim=-1)
        for column, t in zip(columns, (conf, pred, aux_conf, aux_pred, labels.to(device))):
            column.append(t)
    model.train(was_training)
    conf, pred, aux_conf, aux_pred, target = (_in_order(torch.cat(t), dist, num_test)
                                              for t in columns)
    per_class = per_class_accuracy(pred, target, num_classes)
    seen = ~torch.isnan(per_class)
    return {"top1": top1(pred, target), "balanced_acc": float(per_class[seen].mean()),
            "ece": expected_calibration_error(conf, pred == target),
            "top1_aux": top1(aux_pred, target),
            "ece_aux": expected_calibration_error(aux_conf, aux_pred == target),
            "per_class_acc": per_class.tolist(),
            "reliability": {"main": reliability_bins(conf, pred == target),
                            "aux": reliability_bins(aux_conf, aux_pred == target)},
            "confusion": confusion_matrix(pred, target, num_classes).tolist()}


def _in_order(local: torch.Tensor, dist: Dist, num_test: int | None) -> torch.Tensor:
    if not dist.enabled:
        return local.cpu()
    gathered = dist.gather(local).view(dist.world, -1).t().reshape(-1)
    return gathered[:num_test].cpu()
