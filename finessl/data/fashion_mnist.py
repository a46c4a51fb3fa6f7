"""Fashion-MNIST (Xiao et al. 2017, ``DATA.NAME FashionMNIST``) read straight from its
four IDX files.

The files are looked for, gzipped or not, in DATA.DATAPATH itself (the layout of
Debian's ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``) and in
``DATA.DATAPATH/FashionMNIST/raw`` (where torchvision downloads them). Each file is
decoded once into a numpy array; an image becomes an RGB PIL image only when asked
for, so the training set takes 47 MB of memory, not three times that.

The 28x28 grey images are repeated over three channels for CLIP, so the
normalisation is the grey statistics of the training set repeated: mean 0.2860,
std 0.3530 (pixel values in [0, 1]; computed over all 60000 training images).
Unlabeled pool: the first NUM_L + NUM_U images per class.
"""

from __future__ import annotations

import gzip
import logging
import os

import numpy as np
from PIL import Image

from finessl.data.base import ArrayImages, Dataset, RawDataset, one_line, register
from finessl.errors import UserError
from finessl.io import unreachable

log = logging.getLogger(__name__)

CLASSNAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
              "Sneaker", "Bag", "Ankle boot"]
URL = "https://github.com/zalandoresearch/fashion-mnist"
FILES = {  # (split, kind) -> the IDX file's name without .gz
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_MAGIC = {"images": 2051, "labels": 2049}  # IDX magic: 0x0803 uint8 3-d, 0x0801 uint8 1-d


class GreyImages(ArrayImages):
    """Grey images held as one uint8 NHW array, handed out as RGB PIL images."""

    def __getitem__(self, i: int) -> Image.Image:
        return Image.fromarray(self.array[i], "L").convert("RGB")


def _folders(root: str) -> list[str]:
    return [root, os.path.join(root, "FashionMNIST", "raw")]


def _find(root: str, name: str) -> str | None:
    """The path of IDX file ``name`` (gzipped preferred) under ``root``, or None."""
    for folder in _folders(root):
        for candidate in (name + ".gz", name):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    return None


def read_idx(path: str, kind: str) -> np.ndarray:
    """Decode one IDX file (``kind`` 'images': N x rows x cols, 'labels': N) to uint8.

    The header is big-endian int32s: the magic number, then one size per dimension.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot be read ({e}); reinstall Fashion-MNIST") from None
    dims = 3 if kind == "images" else 1
    header = 4 * (1 + dims)
    if len(data) < header:
        raise UserError(f"{path}: too short for an IDX header; reinstall Fashion-MNIST")
    magic, *shape = np.frombuffer(data, ">i4", count=1 + dims).tolist()
    if magic != _MAGIC[kind] or len(data) != header + int(np.prod(shape)):
        raise UserError(f"{path}: not an IDX {kind} file of the expected size (magic {magic}, "
                        f"shape {shape}, {len(data)} bytes); reinstall Fashion-MNIST")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _download(root: str) -> str:
    """Fetch the files with torchvision into root/FashionMNIST/raw; '' or why it failed."""
    from torchvision.datasets import FashionMNIST

    log.info("downloading Fashion-MNIST into %s", os.path.join(root, "FashionMNIST", "raw"))
    try:
        FashionMNIST(root, train=True, download=True)
    except Exception as exc:  # no network, read-only folder: both end as one UserError
        return one_line(exc)
    return ""


def _mirror() -> str:
    from torchvision.datasets import FashionMNIST
    return FashionMNIST.mirrors[0]


def _locate(root: str, download: bool, fetch: bool = True) -> dict[tuple[str, str], str] | None:
    """Every file's path, or a one-line UserError naming the missing ones. ``fetch``
    False: only check (None: missing, but ``download`` and the mirror answers)."""
    paths = {key: _find(root, name) for key, name in FILES.items()}
    failure = ""
    if None in paths.values() and download:
        failure = unreachable(_mirror())
        if not failure and not fetch:
            return None
        failure = failure or _download(root)
        paths = {key: _find(root, name) for key, name in FILES.items()}
    missing = [FILES[key] + "[.gz]" for key, path in paths.items() if path is None]
    if missing:
        hint = f"; download failed ({failure})" if failure else ""
        raise UserError(
            f"Fashion-MNIST not found: {', '.join(missing)} missing from {root} "
            f"(and from {_folders(root)[1]}){hint}; run 'apt-get install dataset-fashion-mnist' "
            f"and set DATA.DATAPATH /usr/share/datasets/fashion-mnist, or download the files "
            f"from {URL} into DATA.DATAPATH"
        )
    return paths


@register("FashionMNIST")
class FashionMNIST(Dataset):
    title = "Fashion-MNIST"
    stats = ((0.2860,) * 3, (0.3530,) * 3)  # grey statistics, see the module docstring

    def load(self, root: str, download: bool) -> RawDataset:
        """The 60000 training and 10000 test images, in the files' order."""
        paths = _locate(root, download)
        arrays = {key: read_idx(path, key[1]) for key, path in paths.items()}
        for split in ("train", "test"):
            images, labels = arrays[(split, "images")], arrays[(split, "labels")]
            if len(images) != len(labels) or labels.max(initial=0) >= len(CLASSNAMES):
                raise UserError(f"{paths[(split, 'images')]} and {paths[(split, 'labels')]}: "
                                f"{len(images)} images but {len(labels)} labels (max "
                                f"{labels.max(initial=0)}); reinstall Fashion-MNIST")
        return self.raw(
            train_targets=arrays[("train", "labels")].tolist(),
            test_targets=arrays[("test", "labels")].tolist(),
            classnames=list(CLASSNAMES),
            train_images=GreyImages(arrays[("train", "images")]),
            test_images=GreyImages(arrays[("test", "images")]),
        )

    def classnames(self, root: str) -> list[str]:
        return list(CLASSNAMES)  # fixed: no file needed

    def check(self, root: str, download: bool) -> None:
        _locate(root, download, fetch=False)
