"""LabelMemory: the per-class counts it keeps equal a recount of the memory after any
sequence of batch updates, resets and loads; so the learning pace costs O(batch)."""
from __future__ import annotations

import torch

from finessl.algorithms.memory import LabelMemory
from finessl.losses import learning_pace, pace_from_counts


def test_counts_follow_every_update_and_equal_a_recount():
    gen = torch.Generator().manual_seed(0)
    memory = LabelMemory(50, 4, torch.device("cpu"))
    for step in range(40):
        index = torch.randperm(50, generator=gen)[:7]  # distinct, as a sampler's batch
        values = torch.randint(0, 4, (7,), generator=gen)
        memory.set(index, values)
        recount = torch.bincount(memory.labels[memory.labels >= 0], minlength=4)
        assert memory.counts.tolist() == recount.tolist(), step
        assert int(memory.unused()) == int((memory.labels < 0).sum())
        assert torch.equal(pace_from_counts(memory.counts), learning_pace(memory.labels, 4))
        if step == 20:
            memory.reset()
            assert memory.counts.tolist() == [0, 0, 0, 0] and int(memory.unused()) == 50
    other = LabelMemory(50, 4, torch.device("cpu"))
    other.load(memory.labels.clone())
    assert other.counts.tolist() == memory.counts.tolist()


def test_a_step_does_not_touch_the_whole_memory():
    """set() reads and writes only the batch's entries: poisoned entries elsewhere
    (values no label can take) stay as they are and are never counted."""
    memory = LabelMemory(10, 3, torch.device("cpu"))
    memory.labels[5:] = -7  # outside what set() may look at
    memory.set(torch.tensor([0, 2]), torch.tensor([1, 1]))
    memory.set(torch.tensor([2, 3]), torch.tensor([0, 2]))
    assert memory.counts.tolist() == [1, 1, 1]
    assert memory.labels.tolist() == [1, -1, 0, 2, -1] + [-7] * 5
