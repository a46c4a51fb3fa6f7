"""Datasets and DataLoaders for semi-supervised training and evaluation.

Reproducibility is decided in the main process: :class:`EpochSampler` draws, from a
generator seeded by (seed, epoch, stream), both the order of the samples and one
augmentation seed per sample. Workers only apply pure functions of (image, seed)
(see ``transforms``), so a batch is the same whatever ``num_workers`` is, and an
epoch can be replayed exactly after a resume by calling the sampler's ``set_epoch``
again.

Training is counted in steps, not passes over the data (FixMatch and FineSSL train
for a fixed number of iterations per epoch), so each sampler yields exactly
``steps_per_epoch`` batches. By default (DATA.REPLAY) an epoch replays its first
pass, as the released loop's per-epoch ``itertools.cycle`` does (docs/method.md §2):
one permutation, its first floor(n / B) batches, each augmented once, repeated.
With replay off, the batches run through fresh permutations of the set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from finessl.data.base import CLIP_MEAN, CLIP_STD, RawDataset
from finessl.data.datasets import load_dataset
from finessl.config import declare, non_negative
from finessl.data.splits import draw_validation, make_split, save_split, split_hash
from finessl.data.transforms import ViewMaker
from finessl.errors import UserError

log = logging.getLogger(__name__)

_MAX_SEED = 2**63 - 1

declare("DATA.NUM_VAL", 0, "labelled training images per class held out of the labeled and unlabeled sets as a validation split, drawn by the seed, evaluated every epoch (0 = none, the released behaviour; docs/selection.md)", check=non_negative)
declare("DATA.NUM_SIGNAL", 64, "unlabeled images (a fixed subset) on which the label-free selection signals are computed every epoch (0 = none; docs/selection.md)", check=non_negative)


def _stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit generator seed that differs for every (seed, epoch, stream)."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & _MAX_SEED


class EpochSampler(Sampler):
    """Yields ``num_samples`` pairs ``(index, aug_seed)`` per epoch.

    ``replay`` False: indices are concatenated random permutations of ``range(n)``,
    each with its own aug seed. ``replay`` True: the first floor(n / batch_size)
    batches of one permutation, with one aug seed each, repeated in order; the views
    are pure functions of (image, aug_seed), so every repeat carries identical
    pixels. With fewer than ``batch_size`` samples (no full first pass) it falls
    back to the concatenated permutations. Either way an epoch is a function of
    (seed, epoch, stream) alone; ``stream`` keeps the labeled (0) and unlabeled (1)
    samplers independent under one run seed.
    Sharded (``world`` > 1): every rank draws the same global sequence and keeps its
    contiguous share of each global batch of ``batch_size``, so rank r's r-th share
    of step t is exactly what a single process would see there.
    """

    def __init__(self, n: int, num_samples: int, seed: int, stream: int,
                 batch_size: int = 1, rank: int = 0, world: int = 1, replay: bool = False):
        if n <= 0:
            raise ValueError("EpochSampler needs a non-empty dataset")
        self.n = n
        self.num_samples = num_samples
        self.seed = seed
        self.stream = stream
        self.epoch = 0
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.pass_len = (n // batch_size) * batch_size if replay else 0
        if replay and not self.pass_len:
            log.warning("%d samples are fewer than a batch of %d: no full pass to replay "
                        "(DATA.REPLAY), each batch is drawn afresh", n, batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator()
        generator.manual_seed(_stream_seed(self.seed, self.epoch, self.stream))
        drawn = self.pass_len or self.num_samples
        rounds = -(-drawn // self.n)
        order = torch.cat([torch.randperm(self.n, generator=generator) for _ in range(rounds)])
        aug_seeds = torch.randint(0, _MAX_SEED, (drawn,), generator=generator, dtype=torch.int64)
        first = list(zip(order[:drawn].tolist(), aug_seeds.tolist()))
        pairs = [first[i % drawn] for i in range(self.num_samples)]
        if self.world > 1:
            share = self.batch_size // self.world
            pairs = [p for start in range(0, len(pairs), self.batch_size)
                     for p in pairs[start + self.rank * share:start + (self.rank + 1) * share]]
        return iter(pairs)


class LabeledDataset(Dataset):
    """``(position, aug_seed)`` -> (weak view, label, position), and a strong view last
    when ``strong`` is set (an algorithm that asks for it: ``Algorithm.labeled_strong``).
    The position lets algorithms keep per-sample state of labeled images (SimMatch's
    labeled memory bank). The strong view is drawn after the weak one from the same
    ``rng``, so asking for it leaves the weak view as it was.

    ``added``: (training index, label) of pseudo-labelled images the set holds after its
    own, at positions ``len(indices)`` on (an algorithm that grows its labeled set:
    ``Algorithm.added_labeled``); none by default."""

    strong = False

    def __init__(self, raw: RawDataset, indices: Sequence[int], views: ViewMaker):
        self.raw, self.indices, self.views = raw, list(indices), views
        self.added: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.indices) + len(self.added)

    def __getitem__(self, item: tuple[int, int]) -> tuple:
        position, aug_seed = item
        if position < len(self.indices):
            index = self.indices[position]
            label = self.raw.train_targets[index]
        else:
            index, label = self.added[position - len(self.indices)]
        rng = random.Random(aug_seed)
        image = self.raw.train_image(index)
        view = self.views.labeled(image, rng)
        if self.strong:
            return view, label, position, self.views.strong(image, rng)
        return view, label, position


class UnlabeledDataset(Dataset):
    """``(position, aug_seed)`` -> (weak, strong1, strong2, position, true label), and a
    medium view last when ``medium`` is set (``Algorithm.unlabeled_medium``: drawn after
    the others from the same ``rng``, so they stay as they were).

    The position lets algorithms keep per-sample state (e.g. pseudo-label history);
    the true label is only for diagnostics such as pseudo-label accuracy.
    """

    medium = False

    def __init__(self, raw: RawDataset, indices: Sequence[int], views: ViewMaker):
        self.raw, self.indices, self.views = raw, list(indices), views

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int]):
        position, aug_seed = item
        index = self.indices[position]
        rng = random.Random(aug_seed)
        image = self.raw.train_image(index)
        weak_view, strong1, strong2 = self.views.unlabeled(image, rng)
        if self.medium:
            return (weak_view, strong1, strong2, position, self.raw.train_targets[index],
                    self.views.medium(image, rng))
        return weak_view, strong1, strong2, position, self.raw.train_targets[index]


class TestDataset(Dataset):
    """Plain index -> (test view, label), over the first ``num_test`` test images
    (DATA.NUM_TEST; None = all), so every metric counts exactly those."""

    __test__ = False  # not a pytest class despite its name

    def __init__(self, raw: RawDataset, views: ViewMaker, num_test: int | None = None):
        self.raw, self.views = raw, views
        self.num_test = raw.num_test if num_test is None else min(num_test, raw.num_test)

    def __len__(self) -> int:
        return self.num_test

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.views.test(self.raw.test_image(i)), self.raw.test_targets[i]


class HeldOutDataset(Dataset):
    """Plain index -> (test view, label) of the training images ``indices`` (the
    validation split, DATA.NUM_VAL): evaluated as the test set is."""

    def __init__(self, raw: RawDataset, indices: Sequence[int], views: ViewMaker):
        self.raw, self.indices, self.views = raw, list(indices), views

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = self.indices[i]
        return self.views.test(self.raw.train_image(index)), self.raw.train_targets[index]


class SignalDataset(Dataset):
    """Plain index -> (weak view, strong view) of unlabeled image ``indices[i]``, with
    an augmentation seed fixed per image, so every epoch sees the same pixels: the
    subset the label-free selection signals are computed on (no label returned)."""

    def __init__(self, raw: RawDataset, indices: Sequence[int], views: ViewMaker):
        self.raw, self.indices, self.views = raw, list(indices), views

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[i]
        weak, strong, _ = self.views.unlabeled(self.raw.train_image(index),
                                               random.Random(_stream_seed(index, 0, 2)))
        return weak, strong


def signal_indices(unlabeled_idx: Sequence[int], count: int) -> list[int]:
    """``count`` unlabeled images evenly spread over the unlabeled set (all when it has
    fewer): a fixed subset, the same for every run on the same split."""
    n = len(unlabeled_idx)
    if count <= 0 or n == 0:
        return []
    if count >= n:
        return list(unlabeled_idx)
    return [unlabeled_idx[(i * n) // count] for i in range(count)]


@dataclass
class DataBundle:
    """Everything the trainer needs to know about the data of one run."""

    labeled: LabeledDataset
    unlabeled: UnlabeledDataset
    test: TestDataset
    classnames: list[str]
    num_classes: int
    split_hash: str
    labeled_idx: list[int]
    unlabeled_idx: list[int]
    unlabeled_targets: torch.Tensor  # true labels of the unlabeled set, for diagnostics
    mean: tuple[float, float, float]  # per-channel normalisation, applied on the device
    std: tuple[float, float, float]
    val: HeldOutDataset | None = None  # DATA.NUM_VAL's validation split; None without one
    val_idx: list[int] | None = None
    signal: SignalDataset | None = None  # DATA.NUM_SIGNAL's subset of the unlabeled set
    labeled_prior: list[float] | None = None  # the labeled set's class shares

    def labeled_counts(self) -> list[int]:
        """Labeled images per class (split.json's ``labeled_per_class``)."""
        targets = self.labeled.raw.train_targets
        return torch.bincount(torch.tensor([targets[i] for i in self.labeled_idx]),
                              minlength=self.num_classes).tolist()

    def unlabeled_only(self) -> tuple[list[int], HeldOutDataset]:
        """The unlabeled images that are not labeled ones too, by position in the unlabeled
        set, and a dataset of their evaluation views (no augmentation), read as the test
        set is: what an algorithm predicts to choose pseudo-labelled images for the
        labeled set (``Algorithm.choose_labeled``)."""
        labeled = set(self.labeled_idx)
        positions = [p for p, i in enumerate(self.unlabeled_idx) if i not in labeled]
        images = [self.unlabeled_idx[p] for p in positions]
        return positions, HeldOutDataset(self.unlabeled.raw, images, self.unlabeled.views)


def _split(raw: RawDataset, data, num_classes: int) -> tuple[list[int], list[int], dict]:
    """(labeled, unlabeled, split.json meta): the dataset's own split when it comes
    with one (ImageFolder), else NUM_L/IMB_L labeled images per class and, as
    DATA.UNLABELED says (docs/method.md §2), an unlabeled pool of the first
    NUM_L + NUM_U per class (``num_u``, IMB_U) or the whole train split (``all``);
    ``dataset`` takes the dataset's own rule (its ``unlabeled_pool``; Food-101: ``all``)."""
    if raw.fixed_split is not None:
        log.info("%s comes split (%d labeled, %d unlabeled images) by its own rule",
                 raw.name, len(raw.fixed_split[0]), len(raw.fixed_split[1]))
        labeled_idx, unlabeled_idx = raw.fixed_split
        return list(labeled_idx), list(unlabeled_idx), {"dataset": raw.name, **raw.split_meta}
    pool = data.get("UNLABELED", "dataset")
    pool = raw.unlabeled_pool if pool == "dataset" else pool
    meta = {"dataset": raw.name, "NUM_L": data.NUM_L, "IMB_L": data.IMB_L, "UNLABELED": pool}
    if pool == "all":
        log.info("%s: the unlabeled set is the whole train split; DATA.NUM_U and IMB_U are "
                 "not used (DATA.UNLABELED num_u uses them)", raw.name)
    else:
        meta.update(NUM_U=data.NUM_U, IMB_U=data.IMB_U)
    labeled_idx, unlabeled_idx = make_split(
        raw.train_targets, num_classes, data.NUM_L, data.NUM_U if pool == "num_u" else None,
        data.IMB_L, data.IMB_U
    )
    return labeled_idx, unlabeled_idx, meta


def _num_test(raw: RawDataset, requested: int) -> int | None:
    """DATA.NUM_TEST as a count of test images (None = all of them)."""
    if requested <= 0:
        return None
    if requested >= raw.num_test:
        if requested > raw.num_test:
            log.warning("DATA.NUM_TEST %d is more than the %d test images of %s; using all",
                        requested, raw.num_test, raw.name)
        return None
    log.info("evaluating on the first %d of %d test images (DATA.NUM_TEST)", requested,
             raw.num_test)
    return requested


def _hold_out(raw: RawDataset, data, num_classes: int, labeled_idx: list[int],
              unlabeled_idx: list[int], seed: int) -> tuple[list[int], list[int], list[int]]:
    """(labeled, unlabeled, validation): DATA.NUM_VAL images per class drawn by ``seed``
    (:func:`draw_validation`) and taken out of both sets; ([], as they were) at 0."""
    num_val = data.get("NUM_VAL", 0)
    if num_val <= 0:
        return labeled_idx, unlabeled_idx, []
    val = draw_validation(raw.train_targets, num_classes, labeled_idx, num_val, seed)
    held = set(val)
    labeled = [i for i in labeled_idx if i not in held]
    unlabeled = [i for i in unlabeled_idx if i not in held]
    log.info("validation split: %d images (%d per class), held out of the labeled (%d "
             "taken) and unlabeled (%d taken) sets", len(val), num_val,
             len(labeled_idx) - len(labeled), len(unlabeled_idx) - len(unlabeled))
    return labeled, unlabeled, val


def build_data(cfg, crop: int, output_dir: str | None, seed: int = 0) -> DataBundle:
    """Load DATA.NAME, split it by DATA.NUM_L/NUM_U/IMB_L/IMB_U/UNLABELED (or its
    folders), hold out DATA.NUM_VAL images per class for validation (drawn by
    ``seed``), save split.json, keep the first DATA.NUM_TEST test images (0 = all), and
    normalise with DATA.NORMALIZE's statistics; strong views cut out DATA.CUTOUT px."""
    data = cfg.DATA
    raw = load_dataset(data.NAME, data.DATAPATH, data.DOWNLOAD, cfg)
    num_classes = len(raw.classnames)
    if data.NUMBER_CLASSES > 0 and data.NUMBER_CLASSES != num_classes:
        raise UserError(
            f"DATA.NUMBER_CLASSES is {data.NUMBER_CLASSES} but {raw.name} has "
            f"{num_classes} classes; set DATA.NUMBER_CLASSES to {num_classes} (or -1)"
        )
    labeled_idx, unlabeled_idx, meta = _split(raw, data, num_classes)
    labeled_idx, unlabeled_idx, val_idx = _hold_out(raw, data, num_classes, labeled_idx,
                                                    unlabeled_idx, seed)
    if val_idx:
        meta.update(NUM_VAL=data.NUM_VAL, val_seed=seed)
    if output_dir is not None:
        # images outside the known classes (-1 unknown, -2 out of the label space) are
        # counted in one extra, last bin
        unknown = any(t < 0 for t in raw.train_targets)
        counted = [t if t >= 0 else num_classes for t in raw.train_targets]
        if unknown:
            meta["last_bin_counts"] = ("images of unknown class (-1) or out of the label "
                                       "space (-2)")
        digest = save_split(os.path.join(output_dir, "split.json"), labeled_idx,
                            unlabeled_idx, meta, counted, num_classes + unknown, val_idx)
    else:
        digest = split_hash(labeled_idx, unlabeled_idx, meta.get("train_files"), val_idx)
    log.info("split %s: %d labeled, %d unlabeled images", digest[:12],
             len(labeled_idx), len(unlabeled_idx))
    views = ViewMaker(crop, data.get("CUTOUT", 16))
    clip = data.get("NORMALIZE", "dataset") == "clip"
    mean, std = (CLIP_MEAN, CLIP_STD) if clip else (raw.mean, raw.std)
    labeled_counts = torch.bincount(torch.tensor([raw.train_targets[i] for i in labeled_idx]),
                                    minlength=num_classes).double()
    signal = signal_indices(unlabeled_idx, data.get("NUM_SIGNAL", 0))
    return DataBundle(
        labeled=LabeledDataset(raw, labeled_idx, views),
        unlabeled=UnlabeledDataset(raw, unlabeled_idx, views),
        test=TestDataset(raw, views, _num_test(raw, data.get("NUM_TEST", 0))),
        classnames=raw.classnames,
        num_classes=num_classes,
        split_hash=digest,
        labeled_idx=labeled_idx,
        unlabeled_idx=unlabeled_idx,
        unlabeled_targets=torch.tensor([raw.train_targets[i] for i in unlabeled_idx]),
        mean=tuple(mean),
        std=tuple(std),
        val=HeldOutDataset(raw, val_idx, views) if val_idx else None,
        val_idx=val_idx or None,
        signal=SignalDataset(raw, signal, views) if signal else None,
        labeled_prior=(labeled_counts / labeled_counts.sum()).tolist(),
    )


def build_train_loaders(
    bundle: DataBundle,
    batch_size: int,
    mu: int,
    steps_per_epoch: int,
    num_workers: int,
    seed: int,
    pin_memory: bool,
    rank: int = 0,
    world: int = 1,
    replay: bool = True,
) -> tuple[DataLoader, DataLoader]:
    """Labeled loader (``batch_size``) and unlabeled loader (``mu * batch_size``).

    Both yield exactly ``steps_per_epoch`` batches; call their samplers' ``set_epoch``
    before each epoch. ``replay`` (DATA.REPLAY): each epoch repeats its first pass
    (see :class:`EpochSampler`). ``batch_size`` is global: with ``world`` ranks each
    loader yields this rank's ``1 / world`` of every batch.
    """
    loaders = []
    for stream, (dataset, size) in enumerate(
        [(bundle.labeled, batch_size), (bundle.unlabeled, mu * batch_size)]
    ):
        sampler = EpochSampler(len(dataset), steps_per_epoch * size, seed, stream,
                               size, rank, world, replay)
        loaders.append(DataLoader(
            dataset, batch_size=size // world, sampler=sampler, num_workers=num_workers,
            pin_memory=pin_memory, drop_last=True, persistent_workers=num_workers > 0,
        ))
    return loaders[0], loaders[1]


def build_test_loader(bundle: DataBundle, batch_size: int, num_workers: int,
                      rank: int = 0, world: int = 1, dataset: Dataset | None = None
                      ) -> DataLoader:
    """The test set (or ``dataset``: the validation split) in order; with ``world``
    ranks, rank r takes items r, r + world, ... (the last ones padded by repetition so
    every rank has as many; the padding is cut when predictions are gathered)."""
    dataset = bundle.test if dataset is None else dataset
    n = len(dataset)
    per_rank = -(-n // world)
    indices = [min(i * world + rank, n - 1) for i in range(per_rank)]
    return DataLoader(Subset(dataset, indices) if world > 1 else dataset,
                      batch_size=batch_size, shuffle=False, num_workers=num_workers)
