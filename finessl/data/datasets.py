"""The raw datasets, by ``DATA.NAME``: :func:`load_dataset`, :func:`dataset_classnames`
and :func:`dataset_stats` look the name up in the registry
(:data:`finessl.data.base.DATASETS`).

Each dataset is one file that registers itself (finessl/data/base.py shows one):
CIFAR-10 and CIFAR-100 (``cifar``), open-set CIFAR-100 (``cifar_openset``), Food-101
(``food101``), Semi-Aves (``semi_aves``), semi-supervised ImageNet (``imagenet``),
Fashion-MNIST (``fashion_mnist``) and your own folders of images (``folder``). ``finessl.data``
imports every module of its package, and the ``plugins`` config key imports yours,
so a new dataset needs no edit here. Nothing here augments or normalises: a
:class:`RawDataset` hands out RGB PIL images and integer labels. Class names are
returned human-readable (``aquarium_fish`` -> ``aquarium fish``) because they become
CLIP text prompts.
"""

from __future__ import annotations

import logging
import os

from finessl.data.base import CLIP_MEAN, CLIP_STD, DATASETS, RawDataset, get_dataset

log = logging.getLogger(__name__)


def _root(root: str) -> str:
    return os.path.abspath(os.path.expanduser(root))


def load_dataset(name: str, root: str, download: bool, cfg=None) -> RawDataset:
    """Load dataset ``name`` (a registered name in any case, with or without dash or
    underscore: ``cifar-10``, ``Food-101``, ``fashion_mnist``) from ``root``.

    ``root`` is DATA.DATAPATH: the folder that holds ``cifar-10-batches-py``,
    ``cifar-100-python``, ``food-101``, Fashion-MNIST's IDX files, or the
    ``labeled/ unlabeled/ test/`` folders of an ImageFolder. ``cfg`` is the run's
    config, for a dataset with keys of its own (None: their defaults).
    """
    dataset = get_dataset(name, cfg)
    root = _root(root)
    raw = dataset.load(root, download)
    log.info(
        "%s: %d train / %d test images, %d classes, from %s",
        raw.name, raw.num_train, raw.num_test, len(raw.classnames), root,
    )
    return raw


def dataset_stats(name: str, normalize: str = "dataset") -> tuple[tuple, tuple]:
    """(mean, std) with which ``name``'s images are normalised under DATA.NORMALIZE
    ``normalize`` ('dataset': the dataset's own, 'clip': CLIP's); a function of the
    name alone, so a saved run is rebuilt without its data."""
    if normalize == "clip":
        return CLIP_MEAN, CLIP_STD
    mean, std = DATASETS.get(name).stats
    return tuple(mean), tuple(std)


def dataset_classnames(name: str, root: str, cfg=None) -> list[str]:
    """The class names of ``name`` at ``root``, opening as little as it can (what
    ``predict`` reads when a checkpoint does not record them)."""
    return get_dataset(name, cfg).classnames(_root(root))
