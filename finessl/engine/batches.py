"""What one step trains on (:class:`Batch`, its fields named once, here), and where a
resumed epoch starts: its loaders skip the batches it had already trained on."""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from contextlib import contextmanager

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from finessl.data import build_train_loaders

# The fields of what each training loader yields, in its order (finessl/data/loaders.py:
# LabeledDataset, UnlabeledDataset).
LABELED_FIELDS = ("x", "y", "x_idx", "x_s")  # weak view, label, index[, strong view]
# weak, 2 strong, index, truth[, medium view]
UNLABELED_FIELDS = ("u_w", "u_s1", "u_s2", "u_idx", "u_true", "u_m")


@dataclasses.dataclass(frozen=True, eq=False)
class Batch(Mapping):
    """One step's labeled batch and, when the algorithm learns from unlabeled images,
    the unlabeled one: ``x``, ``y``, ``x_idx`` (position in the labeled set); ``u_w``,
    ``u_s1``, ``u_s2`` (weak and two strong views), ``u_idx`` (position in the
    unlabeled set: per-image state) and ``u_true`` (its true label: diagnostics only;
    -1 class unknown, -2 out of class). ``x_s`` (a strong view of each labeled image)
    and ``u_m`` (a medium view of each unlabeled one) are there only for an algorithm
    that asks for them (``Algorithm.labeled_strong``, ``unlabeled_medium``).

    Read as ``batch.x`` or ``batch["x"]``, the plug-in contract of an algorithm's
    ``train_step`` (a dict with these keys does as well): the unlabeled fields are
    None, and no keys, for an algorithm that uses no unlabeled data."""

    x: torch.Tensor
    y: torch.Tensor
    x_idx: torch.Tensor | None = None
    x_s: torch.Tensor | None = None
    u_w: torch.Tensor | None = None
    u_s1: torch.Tensor | None = None
    u_s2: torch.Tensor | None = None
    u_idx: torch.Tensor | None = None
    u_true: torch.Tensor | None = None
    u_m: torch.Tensor | None = None

    @classmethod
    def from_loaders(cls, batches: tuple) -> "Batch":
        """From what ``zip(labeled_loader[, unlabeled_loader])`` yields for one step."""
        fields = {}
        for names, least, got in zip((LABELED_FIELDS, UNLABELED_FIELDS), (2, 5), batches):
            if not least <= len(got) <= len(names):  # the optional fields come last
                raise ValueError(f"a loader yielded {len(got)} fields; expected "
                                 f"{least} to {len(names)}: {', '.join(names)}")
            fields.update(zip(names, got))
        return cls(**fields)

    def to(self, device: torch.device) -> "Batch":
        """Every field on ``device`` (copied asynchronously from pinned memory)."""
        return Batch(**{k: v.to(device, non_blocking=True) for k, v in self.items()})

    def __getitem__(self, key: str) -> torch.Tensor:
        value = getattr(self, key, None) if key in _FIELDS else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self):
        return (k for k in _FIELDS if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


_FIELDS = tuple(f.name for f in dataclasses.fields(Batch))


def train_loaders(cfg, data, seed: int, device: torch.device, dist,
                  algorithm) -> list[DataLoader]:
    """The loaders whose zipped batches :meth:`Batch.from_loaders` reads: the labeled
    one (with the pseudo-labelled images the algorithm has added to the labeled set, as
    its state holds them now), and the unlabeled one when the algorithm learns from
    unlabeled images, with the extra views the algorithm asks for."""
    added = algorithm.added_labeled()
    data.labeled.added = [] if added is None else [
        (data.unlabeled_idx[p], label) for p, label in zip(*(t.tolist() for t in added))]
    data.labeled.strong = algorithm.labeled_strong
    data.unlabeled.medium = algorithm.unlabeled_medium
    uses_unlabeled = algorithm.uses_unlabeled
    loaders = build_train_loaders(data, cfg.DATA.BATCH_SIZE, cfg.DATA.MU_U, cfg.total_steps,
                                  cfg.num_workers, seed, device.type == "cuda", dist.rank,
                                  dist.world, cfg.DATA.REPLAY)
    return list(loaders if uses_unlabeled else loaders[:1])


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
