"""Data for FineSSL: raw datasets, labeled/unlabeled splits, views and loaders.

``build_data`` turns the DATA section of the config into a :class:`DataBundle`;
``build_train_loaders`` and ``build_test_loader`` wrap it for the training loop.

Datasets are plug-ins, one file each (``cifar``: CIFAR-10 / CIFAR-100,
``cifar_openset``: open-set CIFAR-100, ``food101``, ``semi_aves``: Semi-Aves,
``imagenet``: semi-supervised ImageNet, ``fashion_mnist``, ``folder``), registered by name in :data:`DATASETS` (config key ``DATA.NAME``). To add
one, write ``mydata.py`` here with a :class:`~finessl.data.base.Dataset` subclass
registered as ``@register("mydata")`` (finessl/data/base.py shows one): every module
of this package is imported below, so ``DATA.NAME mydata`` works with no other edit.
A file outside the package is named in the ``plugins`` config key instead.

Modules, lowest first (none imports one above it): ``base`` (RawDataset, the
registry); the dataset files, ``splits``, ``transforms``; ``datasets`` (lookups by
name); ``loaders``.
"""

from finessl.data.base import DATASETS, Dataset, RawDataset, register
from finessl.data.datasets import dataset_classnames, dataset_stats, load_dataset
from finessl.data.loaders import (
    DataBundle,
    EpochSampler,
    LabeledDataset,
    TestDataset,
    UnlabeledDataset,
    build_data,
    build_test_loader,
    build_train_loaders,
)
from finessl.data.splits import class_counts, make_split, save_split, split_hash
from finessl.data.transforms import ViewMaker
from finessl.registry import import_package_modules

import_package_modules(__name__, __path__)

__all__ = [
    "DATASETS",
    "DataBundle",
    "Dataset",
    "EpochSampler",
    "LabeledDataset",
    "RawDataset",
    "TestDataset",
    "UnlabeledDataset",
    "ViewMaker",
    "build_data",
    "build_test_loader",
    "build_train_loaders",
    "class_counts",
    "dataset_classnames",
    "dataset_stats",
    "load_dataset",
    "make_split",
    "register",
    "save_split",
    "split_hash",
]
