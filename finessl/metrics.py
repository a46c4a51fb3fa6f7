"""Evaluation and pseudo-label diagnostics (the quantities the paper plots)."""
from __future__ import annotations

import torch


def top1(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of predictions equal to the targets."""
    return (preds == targets).float().mean().item()


def per_class_accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of each class (NaN for a class absent from ``targets``); their mean over
    present classes is the balanced accuracy."""
    total = torch.bincount(targets, minlength=num_classes).float()
    hits = torch.bincount(targets[preds == targets], minlength=num_classes).float()
    return hits / total


def distribution_entropy(counts: torch.Tensor) -> float:
    """Entropy (nats) of the class distribution given by ``counts``; 0 when empty.

    log(C) means pseudo-labels spread evenly over the C classes; lower means the
    pseudo-labels pile onto a few classes (the aggregated bias BMS erases).
    """
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts.float() / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def expected_calibration_error(conf: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| * share."""
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].float().mean() - conf[in_bin].mean()).abs()
    return float(ece)
