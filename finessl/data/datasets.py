"""The raw datasets: CIFAR-10, CIFAR-100 and Food-101 (the FineSSL paper's),
Fashion-MNIST (``fashion_mnist``) and your own folders of images (``folder``).

CIFAR is read from its python-pickle files directly rather than through
``torchvision.datasets.CIFAR10``: torchvision checks every file's md5, which rejects
the small generated datasets the tests use. Food-101 is read as torchvision's
``Food101`` reads it (classes sorted by name, images in ``meta/*.json`` order) and
its images are opened lazily. Nothing here augments or
normalises: a :class:`RawDataset` hands out RGB PIL images and integer labels.

Class names are returned human-readable (``aquarium_fish`` -> ``aquarium fish``)
because they become CLIP text prompts.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from finessl.errors import UserError

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
    """Train and test images with labels, class names and normalisation statistics."""

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


@dataclass(frozen=True)
class _Source:
    """Where a dataset lives on disk and where it comes from."""

    title: str
    folder: str  # the folder the archive extracts to, inside DATA.DATAPATH
    files: tuple[str, ...]  # required files, relative to ``folder``
    url: str
    md5: str


_SOURCES = {
    "CIFAR10": _Source(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "CIFAR100": _Source(
        "CIFAR-100",
        "cifar-100-python",
        ("train", "test", "meta"),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
    "FOOD101": _Source(
        "Food-101",
        "food-101",
        ("meta/train.json", "meta/test.json"),
        "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
        "85eeb15f3717b99a5da872d97d918f87",
    ),
}


# Per-channel normalisation (pixel values in [0, 1]) of each dataset, the released
# values (docs/method.md §2): a function of DATA.NAME alone, so a saved run can be
# rebuilt without its data. DATA.NORMALIZE clip replaces them with CLIP's.
_STATS = {
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "FOOD101": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
    "FASHIONMNIST": ((0.2860,) * 3, (0.3530,) * 3),  # grey statistics, see fashion_mnist
    "IMAGEFOLDER": (CLIP_MEAN, CLIP_STD),
}
_OWN_READERS = ("FASHIONMNIST", "IMAGEFOLDER")  # datasets read by their own modules
_SPELLING = {"FASHIONMNIST": "FashionMNIST", "IMAGEFOLDER": "ImageFolder"}


def _canonical_name(name: str) -> str:
    key = name.upper().replace("-", "").replace("_", "")
    if key not in _SOURCES and key not in _OWN_READERS:
        known = list(_SOURCES) + [_SPELLING[k] for k in _OWN_READERS]
        raise UserError(f"DATA.NAME {name!r} is not a known dataset; use one of {', '.join(known)}")
    return key


def _missing(source: _Source, root: str) -> list[str]:
    return [f for f in source.files if not os.path.isfile(os.path.join(root, source.folder, f))]


def _download(source: _Source, root: str) -> str:
    """Fetch and extract the official archive; return '' or why it failed."""
    from torchvision.datasets.utils import download_and_extract_archive

    log.info("downloading %s from %s into %s", source.title, source.url, root)
    try:
        download_and_extract_archive(source.url, download_root=root, md5=source.md5)
    except Exception as exc:  # no network, bad archive: both end as one UserError
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    return ""


def _ensure_present(source: _Source, root: str, download: bool) -> None:
    """Raise a one-line UserError saying what is missing, where it goes, and its URL."""
    missing = _missing(source, root)
    if not missing:
        return
    failure = ""
    if download:
        failure = _download(source, root)
        missing = _missing(source, root)
        if not missing:
            return
    folder = os.path.join(root, source.folder)
    hint = "; download failed (" + failure + ")" if failure else ""
    raise UserError(
        f"{source.title} not found: expected {folder}/{{{','.join(missing)}}}{hint}; "
        f"download {source.url} and extract it into {root} "
        f"(or set DATA.DATAPATH, or DATA.DOWNLOAD True)"
    )


def _unpickle(path: str) -> dict:
    """Load one CIFAR pickle with string keys, whether written by Python 2 or 3."""
    with open(path, "rb") as f:
        record = pickle.load(f, encoding="latin1")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in record.items()}


def _names(raw_names: Sequence[str | bytes]) -> list[str]:
    names = [n.decode() if isinstance(n, bytes) else n for n in raw_names]
    return [n.replace("_", " ") for n in names]


def _cifar_images(data: np.ndarray) -> ArrayImages:
    """CIFAR rows are 3072 bytes in CHW order; keep them as contiguous NHWC."""
    array = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ArrayImages(np.ascontiguousarray(array))


def _load_cifar(key: str, root: str) -> RawDataset:
    folder = os.path.join(root, _SOURCES[key].folder)
    if key == "CIFAR10":
        batches = [_unpickle(os.path.join(folder, f"data_batch_{i}")) for i in range(1, 6)]
        test = _unpickle(os.path.join(folder, "test_batch"))
        train_data = np.concatenate([b["data"] for b in batches])
        train_targets = [int(t) for b in batches for t in b["labels"]]
        test_targets = [int(t) for t in test["labels"]]
        names = _unpickle(os.path.join(folder, "batches.meta"))["label_names"]
    else:
        train = _unpickle(os.path.join(folder, "train"))
        test = _unpickle(os.path.join(folder, "test"))
        train_data = train["data"]
        train_targets = [int(t) for t in train["fine_labels"]]
        test_targets = [int(t) for t in test["fine_labels"]]
        names = _unpickle(os.path.join(folder, "meta"))["fine_label_names"]
    return RawDataset(
        name=_SOURCES[key].title,
        train_targets=train_targets,
        test_targets=test_targets,
        classnames=_names(names),
        mean=_STATS[key][0],
        std=_STATS[key][1],
        train_images=_cifar_images(train_data),
        test_images=_cifar_images(test["data"]),
    )


def _load_food101(root: str) -> RawDataset:
    """As torchvision's ``Food101``: classes are the sorted keys of train.json, images
    keep the order of {train,test}.json. The unlabeled pool is the whole train split."""
    folder = os.path.join(root, _SOURCES["FOOD101"].folder)
    records = {}
    for split in ("train", "test"):
        with open(os.path.join(folder, "meta", f"{split}.json")) as f:
            records[split] = json.load(f)
    classes = sorted(records["train"])
    index = {c: i for i, c in enumerate(classes)}
    paths = {split: [os.path.join(folder, "images", *f"{p}.jpg".split("/"))
                     for rel_paths in record.values() for p in rel_paths]
             for split, record in records.items()}
    targets = {split: [index[c] for c, rel_paths in record.items() for _ in rel_paths]
               for split, record in records.items()}
    return RawDataset(
        name="Food-101",
        train_targets=targets["train"],
        test_targets=targets["test"],
        classnames=_names(classes),
        mean=_STATS["FOOD101"][0],
        std=_STATS["FOOD101"][1],
        train_images=FileImages(paths["train"]),
        test_images=FileImages(paths["test"]),
        unlabeled_pool="all",
    )


def load_dataset(name: str, root: str, download: bool) -> RawDataset:
    """Load ``name`` (CIFAR10, CIFAR100, FOOD101, FashionMNIST or ImageFolder, any case,
    dash or underscore) from ``root``.

    ``root`` is DATA.DATAPATH: the folder that holds ``cifar-10-batches-py``,
    ``cifar-100-python``, ``food-101``, Fashion-MNIST's IDX files, or the
    ``labeled/ unlabeled/ test/`` folders of an ImageFolder.
    """
    key = _canonical_name(name)
    root = os.path.abspath(os.path.expanduser(root))
    if key == "FASHIONMNIST":
        from finessl.data.fashion_mnist import load_fashion_mnist
        raw = load_fashion_mnist(root, download)
    elif key == "IMAGEFOLDER":
        from finessl.data.folder import load_image_folder
        raw = load_image_folder(root)
    else:
        _ensure_present(_SOURCES[key], root, download)
        raw = _load_food101(root) if key == "FOOD101" else _load_cifar(key, root)
    log.info(
        "%s: %d train / %d test images, %d classes, from %s",
        raw.name, raw.num_train, raw.num_test, len(raw.classnames), root,
    )
    return raw


def dataset_stats(name: str, normalize: str = "dataset") -> tuple[tuple, tuple]:
    """(mean, std) with which ``name``'s images are normalised under DATA.NORMALIZE
    ``normalize`` ('dataset': the dataset's own, 'clip': CLIP's)."""
    return (CLIP_MEAN, CLIP_STD) if normalize == "clip" else _STATS[_canonical_name(name)]


def dataset_classnames(name: str, root: str) -> list[str]:
    """The class names of ``name`` at ``root``, opening as little as it can (what
    ``predict`` reads when a checkpoint does not record them)."""
    key = _canonical_name(name)
    root = os.path.abspath(os.path.expanduser(root))
    if key == "FASHIONMNIST":
        from finessl.data.fashion_mnist import CLASSNAMES
        return list(CLASSNAMES)
    if key == "IMAGEFOLDER":
        from finessl.data.folder import classnames_of
        return classnames_of(root)
    return load_dataset(name, root, download=False).classnames
