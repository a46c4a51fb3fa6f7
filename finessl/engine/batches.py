"""Where a resumed epoch starts: its loaders skip the batches it had already trained on."""
from __future__ import annotations

import itertools
from contextlib import contextmanager

import torch
from torch.utils.data import BatchSampler, Sampler


class _Skip(Sampler):
    """``inner`` without its first ``n`` items."""

    def __init__(self, inner, n: int):
        self.inner, self.n = inner, n

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.n, None)

    def __len__(self) -> int:
        return max(len(self.inner) - self.n, 0)


@contextmanager
def epoch_batches(loaders, start: int = 0):
    """The zipped batches of one epoch (after ``set_epoch``), from batch ``start`` on.

    The indices of the first ``start`` batches are dropped before any image is read.
    Sampling and augmentation are functions of (seed, epoch, sample), so the batches
    that follow are exactly those an uninterrupted epoch has there. Starting the
    loaders draws their base seed from the global torch RNG; a resumed epoch puts
    that RNG back as the checkpoint restored it, as the uninterrupted run had it at
    this step.
    """
    if start == 0:
        yield zip(*loaders)
        return
    batchers = [loader.batch_sampler for loader in loaders]
    assert all(isinstance(b, BatchSampler) for b in batchers), "loaders batch automatically"
    originals = [b.sampler for b in batchers]
    for batcher, loader in zip(batchers, loaders):  # loader.batch_size: this rank's share
        batcher.sampler = _Skip(batcher.sampler, start * loader.batch_size)
    try:
        rng = torch.get_rng_state()
        batches = zip(*loaders)
        torch.set_rng_state(rng)
        yield batches
    finally:  # the samplers are read lazily: put them back once the epoch is over
        for batcher, sampler in zip(batchers, originals):
            batcher.sampler = sampler
