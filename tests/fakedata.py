"""Small CIFAR-10/100 look-alikes in the real on-disk pickle format, a small
Food-101 in torchvision's on-disk layout, and a small ImageFolder.

The real loader (``finessl.data.datasets``) reads them unchanged, so tests exercise
the same code as a real run. Each class is a distinct colour with stripes of its
own orientation and period plus gaussian noise: a tiny ViT separates the classes
within a few hundred steps, so end-to-end tests can check that accuracy rises.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import pickle

import numpy as np
from PIL import Image

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


# Food-101 class names, deliberately not in sorted order: the JSON keeps this order,
# labels follow the sorted one (as torchvision's Food101 assigns them).
FOOD101_NAMES = ("tiramisu", "apple_pie", "ramen", "baby_back_ribs", "pho")


def write_fake_food101(root: str, names=FOOD101_NAMES, train_per_class: int = 5,
                       test_per_class: int = 2, seed: int = 0) -> str:
    """Write ``root/food-101/{meta/{train,test}.json, meta/classes.txt, images/}``.

    Image ids are random numbers (so JSON order is not file-name order), images are
    small non-square JPEGs of their class's pattern, and test.json lists the classes
    in the reverse of train.json's order.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "food-101")
    os.makedirs(os.path.join(folder, "meta"), exist_ok=True)
    train, test = {}, {}
    for k, name in enumerate(names):
        os.makedirs(os.path.join(folder, "images", name), exist_ok=True)
        ids = rng.choice(10**6, train_per_class + test_per_class, replace=False)
        for i in ids:
            h, w = rng.integers(24, 48, size=2)
            pattern = np.resize(class_pattern(k, len(names)), (h, w, 3))
            pixels = np.clip(pattern + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, "images", name, f"{i}.jpg"))
        train[name] = [f"{name}/{i}" for i in ids[:train_per_class]]
        test[name] = [f"{name}/{i}" for i in ids[train_per_class:]]
    for split, record in (("train", train), ("test", dict(reversed(test.items())))):
        with open(os.path.join(folder, "meta", f"{split}.json"), "w") as f:
            json.dump(record, f)
    with open(os.path.join(folder, "meta", "classes.txt"), "w") as f:
        f.write("\n".join(sorted(names)) + "\n")
    return root


# ImageFolder (DATA.NAME ImageFolder): folder names; class names read "apple pie", ...
FOLDER_CLASSES = ["apple_pie", "bus", "cat"]
FOLDER_LABELED_PER_CLASS, FOLDER_UNLABELED, FOLDER_TEST_PER_CLASS = 4, 12, 3
TRUNCATED = os.path.join("labeled", "bus", "broken.jpg")
NOT_AN_IMAGE = os.path.join("unlabeled", "deep", "er", "notes.png")


def _folder_image(k: int, rng: np.random.Generator) -> Image.Image:
    pixels = class_pattern(k, len(FOLDER_CLASSES)) + rng.normal(0, 10, (32, 32, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def write_image_folder(root: str, bad_files: bool = True, seed: int = 0) -> str:
    """A tiny ImageFolder: nested, mixed formats and extension cases, one truncated
    JPEG and one text file named .png (``bad_files``), and files to be ignored."""
    rng = np.random.default_rng(seed)
    exts = [".png", ".JPG", ".jpeg", ".bmp"]

    def save(rel: str, k: int) -> None:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _folder_image(k, rng).save(path, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(
            rel.rsplit(".", 1)[1].lower(), None))

    for k, name in enumerate(FOLDER_CLASSES):
        for j in range(FOLDER_LABELED_PER_CLASS):
            sub = "sub" if j % 2 else ""  # any depth below the class folder
            save(os.path.join("labeled", name, sub, f"{j}{exts[j % 4]}"), k)
        for j in range(FOLDER_TEST_PER_CLASS):
            save(os.path.join("test", name, f"t{j}.png"), k)
    for j in range(FOLDER_UNLABELED):
        depth = ["a", "b", "c"][: j % 4]
        save(os.path.join("unlabeled", *depth, f"u{j}{exts[j % 4]}"), j % len(FOLDER_CLASSES))
    with open(os.path.join(root, "unlabeled", "README.txt"), "w") as f:
        f.write("not an image extension: ignored silently\n")
    with open(os.path.join(root, "unlabeled", ".hidden.jpg"), "w") as f:
        f.write("hidden: ignored silently\n")
    if bad_files:
        big = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        big.save(os.path.join(root, TRUNCATED), format="JPEG")
        with open(os.path.join(root, TRUNCATED), "rb") as f:
            data = f.read()
        with open(os.path.join(root, TRUNCATED), "wb") as f:
            f.write(data[: len(data) // 2])
        os.makedirs(os.path.dirname(os.path.join(root, NOT_AN_IMAGE)), exist_ok=True)
        with open(os.path.join(root, NOT_AN_IMAGE), "w") as f:
            f.write("this is text, not a PNG\n")
    return root
