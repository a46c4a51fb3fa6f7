"""What every dataset is, and the registry that finds one by ``DATA.NAME``.

A dataset is one file that subclasses :class:`Dataset` and registers itself::

    from finessl.data.base import ArrayImages, Dataset, register

    @register("toyshapes")              # DATA.NAME toyshapes (any case, '-' or '_')
    class ToyShapes(Dataset):
        title = "Toy shapes"            # RawDataset.name: logs and split.json's meta
        stats = ((0.5,) * 3, (0.25,) * 3)  # per-channel (mean, std), pixels in [0, 1]

        def load(self, root, download):
            ...                         # read (or make) the images under DATA.DATAPATH
            return self.raw(train_targets=..., test_targets=..., classnames=[...],
                            train_images=ArrayImages(...), test_images=ArrayImages(...))

Put it in ``finessl/data/`` (every module of the package is imported by its
``__init__``) or anywhere else and name it in the ``plugins`` config key. Its own
config keys, if it has any, are declared beside it with
:func:`finessl.config.declare` and read with :meth:`Dataset.setting`.

This module is the bottom of ``finessl.data``: it imports nothing from the package,
and every dataset module imports only it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from finessl import config
from finessl.errors import UserError, one_line  # noqa: F401  (one_line: re-exported)
from finessl.io import unreachable
from finessl.registry import Registry

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_name(name: str) -> str:
    """The registry key of a dataset spelling: case, '-' and '_' ignored
    (``cifar-10``, ``CIFAR10`` and ``Cifar_10`` are one dataset)."""
    return str(name).upper().replace("-", "").replace("_", "")


DATASETS = Registry("dataset", "DATA.NAME", normalize=normalize_name)
register = DATASETS.register  # class decorator: ``@register("toyshapes", *aliases)``


class ArrayImages:
    """Images held in memory as one uint8 NHWC array (CIFAR: 150 MB at most)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> Image.Image:
        return Image.fromarray(self.array[i])


class FileImages:
    """Images opened from disk on demand (Food-101: 5 GB does not fit in memory)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as img:
            return img.convert("RGB")


@dataclass
class RawDataset:
    """Train and test images with labels, class names and normalisation statistics.

    Nothing here augments or normalises: it hands out RGB PIL images and integer
    labels (-1: class unknown, an unlabeled image). An unlabeled image known to lie
    outside the label space (Semi-Aves' out-of-class set, open-set CIFAR-100's unseen
    classes) has -2, so diagnostics can count it apart from right and wrong pseudo-labels.
    """

    name: str
    train_targets: list[int]
    test_targets: list[int]
    classnames: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_images: ArrayImages | FileImages
    test_images: ArrayImages | FileImages
    # A dataset that comes split (ImageFolder): (labeled, unlabeled) training indices,
    # used as they are; None lets build_data choose them from DATA.NUM_L / NUM_U.
    fixed_split: tuple[list[int], list[int]] | None = None
    split_meta: dict = field(default_factory=dict)  # extra entries for split.json's meta
    # The released unlabeled pool (DATA.UNLABELED dataset, docs/method.md §2): 'num_u'
    # = the first NUM_L + NUM_U per class, 'all' = the whole train split (Food-101).
    unlabeled_pool: str = "num_u"

    def train_image(self, i: int) -> Image.Image:
        return self.train_images[i]

    def test_image(self, i: int) -> Image.Image:
        return self.test_images[i]

    @property
    def num_train(self) -> int:
        return len(self.train_targets)

    @property
    def num_test(self) -> int:
        return len(self.test_targets)


class Dataset:
    """Base class of a dataset plug-in: what ``DATA.NAME`` names.

    Class attributes (all but :meth:`load` have defaults):

    - ``name``: set by :func:`register`, the spelling shown in messages;
    - ``title``: the human name, ``RawDataset.name`` (logs, split.json's ``meta.dataset``);
    - ``stats``: per-channel ``(mean, std)`` of pixels in [0, 1], a function of the
      name alone so a saved run is rebuilt without its data (CLIP's by default;
      DATA.NORMALIZE clip replaces them with CLIP's anyway);
    - ``unlabeled_pool``: the released unlabeled pool under DATA.UNLABELED dataset,
      ``'num_u'`` (first NUM_L + NUM_U images per class) or ``'all'`` (the whole train
      split).

    An instance is made per use with the run's config (None outside a run: tests,
    ``predict``), which :meth:`setting` reads.
    """

    name = "base"
    title = ""
    stats: tuple[tuple[float, ...], tuple[float, ...]] = (CLIP_MEAN, CLIP_STD)
    unlabeled_pool = "num_u"

    def __init__(self, cfg=None):
        self.cfg = cfg

    def load(self, root: str, download: bool) -> RawDataset:
        """Read the dataset at ``root`` (DATA.DATAPATH, absolute); fetch what is missing
        when ``download``. Missing or bad files are a one-line :class:`UserError`."""
        raise NotImplementedError

    def classnames(self, root: str) -> list[str]:
        """The class names at ``root``, reading as little as possible (``predict`` of a
        checkpoint that does not record them). By default: :meth:`load` without
        downloading."""
        return self.load(root, download=False).classnames

    def check(self, root: str, download: bool) -> None:
        """What a run (and ``--dry-run``) checks before loading any data: the files at
        ``root`` are there, or ``download`` can fetch them now; else the one-line
        :class:`UserError` :meth:`load` would raise. By default: the ``archive``
        attribute's files when the class has one, else :meth:`classnames` (which reads
        as little as it can)."""
        archive = getattr(self, "archive", None)
        if archive is not None:
            archive.check(root, download)
        else:
            self.classnames(root)

    def raw(self, **fields) -> RawDataset:
        """A :class:`RawDataset` whose name, mean/std and unlabeled pool are this
        class's ``title``, ``stats`` and ``unlabeled_pool`` (``fields`` may override)."""
        mean, std = self.stats
        defaults = {"name": self.title or self.name, "mean": tuple(mean), "std": tuple(std),
                    "unlabeled_pool": self.unlabeled_pool}
        return RawDataset(**{**defaults, **fields})

    def setting(self, key: str):
        """Config key ``key`` (dotted, declared with :func:`finessl.config.declare`) in
        this run's config, or its declared default outside a run."""
        if self.cfg is None:
            return config.declared_keys()[key][0]
        node = self.cfg
        for part in key.split("."):
            node = node[part]
        return node


def get_dataset(name: str, cfg=None) -> Dataset:
    """The registered dataset ``name`` (any spelling), made with ``cfg``; an unknown
    name is one :class:`UserError` line naming DATA.NAME, the value and the choices."""
    return DATASETS.get(name)(cfg)


def class_names(raw_names: Sequence[str | bytes]) -> list[str]:
    """Human-readable class names for CLIP's prompts (``aquarium_fish`` ->
    ``aquarium fish``; bytes decoded)."""
    names = [n.decode() if isinstance(n, bytes) else n for n in raw_names]
    return [n.replace("_", " ") for n in names]


@dataclass(frozen=True)
class Archive:
    """An official archive: where it extracts to inside DATA.DATAPATH, what must be
    there, and where it comes from."""

    title: str
    folder: str  # the folder the archive extracts to, inside DATA.DATAPATH
    files: tuple[str, ...]  # required files, relative to ``folder``
    url: str
    md5: str

    def missing(self, root: str) -> list[str]:
        return [f for f in self.files if not os.path.isfile(os.path.join(root, self.folder, f))]

    def download(self, root: str) -> str:
        """Fetch and extract the archive into ``root``; '' or why it failed."""
        from torchvision.datasets.utils import download_and_extract_archive

        log.info("downloading %s from %s into %s", self.title, self.url, root)
        try:
            download_and_extract_archive(self.url, download_root=root, md5=self.md5)
        except Exception as exc:  # no network, bad archive: both end as one UserError
            return one_line(exc)
        return ""

    def ensure_present(self, root: str, download: bool) -> str:
        """The extracted folder; else (after a download when ``download``) a one-line
        UserError saying what is missing, where it goes, and its URL."""
        folder = os.path.join(root, self.folder)
        if not self.missing(root):
            return folder
        failure = self.check(root, download)  # raises unless a download may work
        if failure is None:
            failure = self.download(root)
            if not self.missing(root):
                return folder
        raise self.not_found(root, download, failure)

    def check(self, root: str, download: bool) -> str | None:
        """What a run checks before reading anything: '' when the files are there, None
        when they are not but ``download`` and the host answers; else the one-line
        UserError :meth:`ensure_present` would end with."""
        if not self.missing(root):
            return ""
        failure = unreachable(self.url) if download else ""
        if download and not failure:
            return None
        raise self.not_found(root, download, failure)

    def not_found(self, root: str, download: bool, failure: str) -> UserError:
        folder = os.path.join(root, self.folder)
        hint = "; download failed (" + failure + ")" if failure else ""
        switch = "" if download else ", or DATA.DOWNLOAD True where the network reaches it"
        return UserError(
            f"{self.title} not found: expected {folder}/{{{','.join(self.missing(root))}}}{hint}; "
            f"download {self.url} and extract it into {root} (or set DATA.DATAPATH{switch})"
        )
