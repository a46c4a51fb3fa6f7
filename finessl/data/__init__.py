"""Data for FineSSL: raw datasets, labeled/unlabeled splits, views and loaders.

``build_data`` turns the DATA section of the config into a :class:`DataBundle`;
``build_train_loaders`` and ``build_test_loader`` wrap it for the training loop.
"""

from finessl.data.datasets import RawDataset, load_dataset
from finessl.data.loaders import (
    DataBundle,
    EpochSampler,
    LabeledDataset,
    TestDataset,
    UnlabeledDataset,
    build_data,
    build_test_loader,
    build_train_loaders,
    set_epoch,
)
from finessl.data.splits import class_counts, make_split, save_split, split_hash
from finessl.data.transforms import ViewMaker

__all__ = [
    "DataBundle",
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
    "load_dataset",
    "make_split",
    "save_split",
    "set_epoch",
    "split_hash",
]
