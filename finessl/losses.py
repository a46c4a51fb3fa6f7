"""FineSSL's loss pieces as plain functions (docs/method.md §3): learning pace, Balanced
Margin Softmax (BMS) and the smoothed targets of Decoupled Label Smoothing (DLS)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def learning_pace(selected: torch.Tensor, num_classes: int) -> torch.Tensor:
    """beta(k) = sigma(k) / max_k' sigma(k'), sigma(k) = #{i : selected[i] = k}.

    ``selected`` holds one pseudo-label per unlabeled image, -1 for none yet; with
    no pseudo-label at all every class has pace 0 (no margins). Counted with
    ``bincount`` (bin 0 = "none"): one pass over the memory, no Python loop, no
    boolean indexing.
    """
    return pace_from_counts(torch.bincount(selected + 1, minlength=num_classes + 1)[1:])


def pace_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """beta(k) from sigma(k) = ``counts[k]`` (kept up to date by the algorithms'
    :class:`~finessl.algorithms.memory.LabelMemory`, so a step never recounts)."""
    counts = counts.float()
    return counts / counts.max().clamp(min=1.0)  # no host sync: it runs every step


def balanced_margin(pace: torch.Tensor, alpha: float, form: str = "released",
                    dynamic: bool = True) -> torch.Tensor:
    """Per-class margin m(k) of BMS, larger for classes that learn slower.

    spread = (max beta - min beta) * alpha (``dynamic``; the Table 6 ablation fixes
    it to alpha). Released code: m = (1-beta)/(1+beta) * spread; paper text:
    m = (1-beta) * spread. Equal paces give zero margins when dynamic.
    """
    spread = (pace.max() - pace.min()) * alpha if dynamic else torch.tensor(alpha)
    if form == "paper":
        return (1.0 - pace) * spread
    return (1.0 - pace) / (1.0 + pace) * spread


def add_margin(logits: torch.Tensor, targets: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Add m(t) to every logit of a sample with target t except the target's own."""
    not_target = 1.0 - F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    return logits + margins[targets].unsqueeze(1).to(logits.dtype) * not_target


def smoothed_targets(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """1 - lambda on the target, lambda / (C - 1) on each other class."""
    onehot = F.one_hot(targets, num_classes).float()
    return onehot * (1.0 - smoothing) + (1.0 - onehot) * smoothing / (num_classes - 1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against a target distribution."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)
