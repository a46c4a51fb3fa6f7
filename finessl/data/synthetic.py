"""A generated CIFAR-10 / CIFAR-100 in the real on-disk pickle format, for trying the
whole pipeline where no real dataset exists (the offline ViT demo,
configs/demo/vit_tiny.yaml) and for the tests.

    python scripts/synthetic_cifar.py datasets/synthetic-cifar10          # CIFAR-10 layout
    python scripts/synthetic_cifar.py datasets/synthetic-cifar100 --kind cifar100

The real CIFAR loader reads it unchanged (``DATA.NAME CIFAR10``, ``DATA.DATAPATH`` the
folder). Each class is a distinct colour with stripes of its own orientation and
period plus gaussian noise: easy on purpose, so a tiny randomly initialised ViT
separates the classes within a few hundred steps and a run shows learning; it says
nothing about accuracy on real images.
"""

from __future__ import annotations

import argparse
import colorsys
import math
import os
import pickle

import numpy as np

CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]

CIFAR100_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can",
    "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud",
    "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo",
    "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain",
    "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table",
    "tank", "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]


def class_pattern(k: int, num_classes: int) -> np.ndarray:
    """The noise-free 32x32x3 float image of class ``k`` (values in 0..255)."""
    hue = (k * 0.618034) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.85)) * 255
    angle = math.pi * ((k * 0.381966) % 1.0)
    period = 6 + 4 * (k % 3)
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    stripes = np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    return 0.7 * colour[None, None, :] + 50 * stripes[:, :, None] + 20


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 rows in CIFAR's CHW order."""
    patterns = np.stack([class_pattern(k, num_classes) for k in range(num_classes)])
    hwc = patterns[labels] + rng.normal(0, 15, size=(len(labels), 32, 32, 3))
    hwc = np.clip(np.rint(hwc), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2).reshape(len(labels), 3072))


def _labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Every class ``per_class`` times, shuffled like the real files."""
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def _dump(path: str, record: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=2)


def write_fake_cifar(
    root: str,
    kind: str = "cifar10",
    num_classes: int | None = None,
    train_per_class: int = 20,
    test_per_class: int = 10,
    seed: int = 0,
) -> str:
    """Write a fake CIFAR under ``root`` (the folder DATA.DATAPATH points at).

    ``kind="cifar10"`` always has 10 classes and splits the training set over
    data_batch_1..5; ``kind="cifar100"`` has ``num_classes`` (default 100) classes
    and meta lists the real CIFAR-100 names of those classes.
    """
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        if num_classes not in (None, 10):
            raise ValueError("fake CIFAR-10 always has 10 classes")
        num_classes, names = 10, CIFAR10_NAMES
    elif kind == "cifar100":
        num_classes = 100 if num_classes is None else num_classes
        if not 1 <= num_classes <= 100:
            raise ValueError("fake CIFAR-100 has 1 to 100 classes")
        names = CIFAR100_NAMES[:num_classes]
    else:
        raise ValueError(f"kind must be 'cifar10' or 'cifar100', not {kind!r}")
    train_labels = _labels(num_classes, train_per_class, rng)
    test_labels = _labels(num_classes, test_per_class, rng)
    train_data = _images(train_labels, num_classes, rng)
    test_data = _images(test_labels, num_classes, rng)

    if kind == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder, exist_ok=True)
        chunks = np.array_split(np.arange(len(train_labels)), 5)
        for i, chunk in enumerate(chunks, start=1):
            _dump(os.path.join(folder, f"data_batch_{i}"), {
                "batch_label": f"training batch {i} of 5",
                "labels": train_labels[chunk].tolist(),
                "data": train_data[chunk],
                "filenames": [f"fake_{j}.png" for j in chunk],
            })
        _dump(os.path.join(folder, "test_batch"), {
            "batch_label": "testing batch 1 of 1",
            "labels": test_labels.tolist(),
            "data": test_data,
            "filenames": [f"fake_test_{j}.png" for j in range(len(test_labels))],
        })
        _dump(os.path.join(folder, "batches.meta"), {
            "label_names": names, "num_cases_per_batch": len(chunks[0]), "num_vis": 3072,
        })
    else:
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder, exist_ok=True)
        for split, labels, data in (("train", train_labels, train_data),
                                    ("test", test_labels, test_data)):
            _dump(os.path.join(folder, split), {
                "filenames": [f"fake_{split}_{j}.png" for j in range(len(labels))],
                "batch_label": f"{split}ing batch 1 of 1",
                "fine_labels": labels.tolist(),
                "coarse_labels": (labels // 5).tolist(),
                "data": data,
            })
        _dump(os.path.join(folder, "meta"), {
            "fine_label_names": names,
            "coarse_label_names": [f"superclass_{i}" for i in range(20)],
        })
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/synthetic_cifar.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to write (DATA.DATAPATH of the runs)")
    parser.add_argument("--kind", choices=("cifar10", "cifar100"), default="cifar10")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_fake_cifar(args.root, args.kind, None, args.train_per_class, args.test_per_class,
                     args.seed)
    print(f"wrote a generated {args.kind} ({args.train_per_class} train, {args.test_per_class} "
          f"test images per class) in {args.root}")
    return 0
