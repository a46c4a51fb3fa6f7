"""A label per unlabeled image, with the count of each label kept beside it.

The learning pace of BMS (beta(k), docs/method.md §3) and FlexMatch's thresholds are
functions of how many images hold each label. Recounting an N-long memory every step
is O(N) per step: 1.28 M entries for ImageNet's unlabeled pool. Here the counts are
updated where the memory changes, so a step costs O(batch + classes); only a load
(resume) counts the whole memory once.
"""
from __future__ import annotations

import torch


class LabelMemory:
    """``labels``: one entry per unlabeled image, -1 for none yet; ``counts[k]``: how
    many entries hold k. The indices of one :meth:`set` must be distinct (a batch of a
    sampler without replacement, gathered over ranks that share no index)."""

    def __init__(self, size: int, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.labels = torch.full((size,), -1, dtype=torch.long, device=device)
        self.counts = torch.zeros(num_classes, dtype=torch.long, device=device)

    def _histogram(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.bincount(labels + 1, minlength=self.num_classes + 1)[1:]  # bin 0: none

    def reset(self) -> None:
        self.labels.fill_(-1)
        self.counts.zero_()

    def set(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """``labels[index] = values``, the counts following."""
        self.counts -= self._histogram(self.labels[index])
        self.labels[index] = values
        self.counts += self._histogram(values)

    def unused(self) -> torch.Tensor:
        """How many entries hold no label yet."""
        return len(self.labels) - self.counts.sum()

    def load(self, labels: torch.Tensor) -> None:
        self.labels.copy_(labels.to(self.labels.device))
        self.counts.copy_(self._histogram(self.labels))
