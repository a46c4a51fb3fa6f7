"""Tests of Fashion-MNIST's IDX reader (finessl.data.fashion_mnist) and of
DATA.NUM_TEST, which keeps the first N test images for every metric (CPU, seconds)."""
from __future__ import annotations

import gzip
import logging
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from finessl.data import datasets, fashion_mnist, loaders
from finessl.engine.evaluate import evaluate
from finessl.engine.device import Precision
from finessl.errors import UserError
from helpers import data_cfg

REAL = "/usr/share/datasets/fashion-mnist"


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_fake_fashion_mnist(folder: str, num_train: int = 30, num_test: int = 12,
                             gz: bool = True, seed: int = 0) -> dict:
    """The four IDX files with random pixels and labels; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        ("train", "images"): rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        ("train", "labels"): rng.integers(0, 10, num_train, dtype=np.uint8),
        ("test", "images"): rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        ("test", "labels"): np.arange(num_test, dtype=np.uint8) % 10,
    }
    os.makedirs(folder, exist_ok=True)
    for key, array in arrays.items():
        data = _idx(array, 2051 if key[1] == "images" else 2049)
        name = os.path.join(folder, fashion_mnist.FILES[key])
        with (gzip.open(name + ".gz", "wb") if gz else open(name, "wb")) as f:
            f.write(data)
    return arrays


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fmnist"))
    return root, write_fake_fashion_mnist(root)


def test_idx_round_trip_is_exact(fake_root):
    root, arrays = fake_root
    raw = datasets.load_dataset("FashionMNIST", root, download=False)
    assert raw.train_targets == arrays[("train", "labels")].tolist()
    assert raw.test_targets == arrays[("test", "labels")].tolist()
    assert raw.classnames[0] == "T-shirt/top" and len(raw.classnames) == 10
    assert raw.mean == (0.2860,) * 3 and raw.std == (0.3530,) * 3
    for split, image in (("train", raw.train_image), ("test", raw.test_image)):
        for i in range(len(arrays[(split, "labels")])):
            img = image(i)
            assert img.mode == "RGB" and img.size == (28, 28)
            rgb = np.asarray(img)
            for c in range(3):
                assert np.array_equal(rgb[:, :, c], arrays[(split, "images")][i])


def test_torchvision_layout_with_unzipped_files(tmp_path):
    arrays = write_fake_fashion_mnist(str(tmp_path / "FashionMNIST" / "raw"), gz=False)
    raw = datasets.load_dataset("fashion-mnist", str(tmp_path), download=False)
    assert np.array_equal(np.asarray(raw.test_image(3))[:, :, 0], arrays[("test", "images")][3])


def test_missing_files_message(tmp_path):
    with pytest.raises(UserError) as info:
        datasets.load_dataset("Fashion_MNIST", str(tmp_path), download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "t10k-labels-idx1-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "DATA.DATAPATH" in message


def test_corrupt_header_names_the_file(tmp_path):
    write_fake_fashion_mnist(str(tmp_path))
    path = tmp_path / (fashion_mnist.FILES[("train", "labels")] + ".gz")
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(UserError, match=str(path)):
        datasets.load_dataset("FashionMNIST", str(tmp_path), download=False)


@pytest.mark.skipif(not os.path.isdir(REAL), reason="dataset-fashion-mnist not installed")
def test_real_files():
    raw = datasets.load_dataset("FashionMNIST", REAL, download=False)
    assert (raw.num_train, raw.num_test) == (60000, 10000)
    assert np.bincount(raw.train_targets).tolist() == [6000] * 10
    assert np.bincount(raw.test_targets).tolist() == [1000] * 10
    assert abs(raw.train_images.array.mean() / 255 - raw.mean[0]) < 1e-3
    assert abs(raw.train_images.array.std() / 255 - raw.std[0]) < 1e-3


# ---- DATA.NUM_TEST ----------------------------------------------------------------------

def make_cfg(root, num_test):
    return data_cfg(root, "FashionMNIST", num_l=1, num_u=2, NUM_TEST=num_test)


class AlwaysClassZero(nn.Module):
    """Predicts class 0 with the same confidence for every image."""

    def backbone(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).float()

    def head(self, feat: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(feat), 10)
        logits[:, 0] = 2.0
        return logits

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


@pytest.mark.parametrize("num_test", [0, 5, 12, 50])
def test_num_test_limits_evaluation(fake_root, num_test, caplog):
    root, arrays = fake_root
    with caplog.at_level(logging.WARNING):
        bundle = loaders.build_data(make_cfg(root, num_test), 28, None)
    expected = 12 if num_test in (0, 50) else num_test
    assert len(bundle.test) == expected
    assert ("more than the 12 test images" in caplog.text) == (num_test == 50)
    loader = loaders.build_test_loader(bundle, batch_size=4, num_workers=0)
    assert sum(len(labels) for _, labels in loader) == expected
    result = evaluate(AlwaysClassZero(), loader, torch.device("cpu"),
                      Precision("fp32", torch.device("cpu")), 10)
    first = arrays[("test", "labels")][:expected]
    assert result["top1"] == pytest.approx(float((first == 0).mean()))
    seen = sorted(set(first.tolist()))
    assert [k for k, acc in enumerate(result["per_class_acc"]) if acc == acc] == seen
