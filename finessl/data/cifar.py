"""CIFAR-10 and CIFAR-100 (``DATA.NAME CIFAR10`` / ``CIFAR100``), the FineSSL paper's.

Read from the python-pickle files of the official archives directly rather than
through ``torchvision.datasets.CIFAR10``: torchvision checks every file's md5, which
rejects the small generated datasets the tests use. The images are held in memory
(150 MB at most). Normalisation: each dataset's own statistics, the released values
(docs/method.md §2). Unlabeled pool: the first NUM_L + NUM_U images per class.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from finessl.errors import UserError, brief
from finessl.data.base import ArrayImages, Archive, Dataset, RawDataset, class_names, register


def _unpickle(path: str) -> dict:
    """Load one CIFAR pickle with string keys, whether written by Python 2 or 3; a
    damaged file is one UserError line naming it."""
    try:
        with open(path, "rb") as f:
            record = pickle.load(f, encoding="latin1")
        if not isinstance(record, dict):
            raise TypeError(f"holds a {type(record).__name__}, not a dict")
    except Exception as e:  # truncated download, another file under the name
        raise UserError(f"{path} is not a readable CIFAR file ({brief(e)}); extract the "
                        f"official archive again") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in record.items()}


def _images(data: np.ndarray) -> ArrayImages:
    """CIFAR rows are 3072 bytes in CHW order; keep them as contiguous NHWC."""
    array = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ArrayImages(np.ascontiguousarray(array))


class _Cifar(Dataset):
    """Both CIFARs: an archive of pickles; subclasses name the files and label key."""

    archive: Archive
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str  # 'labels' (CIFAR-10) or 'fine_labels' (CIFAR-100)
    names_key: str

    def load(self, root: str, download: bool) -> RawDataset:
        folder = self.archive.ensure_present(root, download)
        train = [_unpickle(os.path.join(folder, f)) for f in self.train_files]
        test = _unpickle(os.path.join(folder, self.test_file))
        names = _unpickle(os.path.join(folder, self.meta_file))[self.names_key]
        return self.raw(
            train_targets=[int(t) for batch in train for t in batch[self.label_key]],
            test_targets=[int(t) for t in test[self.label_key]],
            classnames=class_names(names),
            train_images=_images(np.concatenate([batch["data"] for batch in train])),
            test_images=_images(test["data"]),
        )


@register("CIFAR10")
class Cifar10(_Cifar):
    title = "CIFAR-10"
    stats = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file, meta_file = "test_batch", "batches.meta"
    label_key, names_key = "labels", "label_names"
    archive = Archive(
        "CIFAR-10", "cifar-10-batches-py", train_files + (test_file, meta_file),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    )


@register("CIFAR100")
class Cifar100(_Cifar):
    title = "CIFAR-100"
    stats = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    train_files = ("train",)
    test_file, meta_file = "test", "meta"
    label_key, names_key = "fine_labels", "fine_label_names"
    archive = Archive(
        "CIFAR-100", "cifar-100-python", train_files + (test_file, meta_file),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    )
