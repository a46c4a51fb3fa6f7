"""Small CIFAR-10/100 look-alikes in the real on-disk pickle format, a small
Food-101 in torchvision's on-disk layout, and a small ImageFolder.

The real loader (``finessl.data.datasets``) reads them unchanged, so tests exercise
the same code as a real run. Each class is a distinct colour with stripes of its
own orientation and period plus gaussian noise: a tiny ViT separates the classes
within a few hundred steps, so end-to-end tests can check that accuracy rises.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from finessl.data.synthetic import (  # noqa: F401  (the CIFAR look-alikes live in the package)
    CIFAR10_NAMES, CIFAR100_NAMES, _dump, _images, _labels, class_pattern, write_fake_cifar)


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


# ImageFolder (DATA.NAME ImageFolder): folder names, which are its class names
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


# ---- Semi-Aves and ImageNet in their released layouts ----------------------------------
def _class_jpeg(k: int, num_classes: int, rng: np.random.Generator, side: int = 16) -> bytes:
    """One small JPEG of class ``k``'s pattern: encoded once, written for every file of
    the class, so a tree of thousands of files is made in a fraction of a second."""
    import io
    pixels = np.resize(class_pattern(k, num_classes), (side, side, 3))
    pixels = np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _put(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_fake_semi_aves(root: str, num_classes: int = 200, labeled_per_class: int = 2,
                         u_in_per_class: int = 1, u_out: int = 30, test_per_class: int = 1,
                         with_ids: bool = True, seed: int = 0) -> str:
    """``root/annotation/{anno_l_train,anno_u_train_in,anno_u_train_out,anno_test}.json,
    solution.csv, semi_aves_class_names.txt}`` and the images they name.

    File names hold the true class (``l_train/<k>_<j>.jpg``; out-of-class images
    ``u_train_out/x_<j>.jpg``) so tests can check labels against files. ``with_ids``:
    COCO ids are given, annotations are listed in a shuffled order and solution.csv's
    rows too (pairing by position would mislabel them); without, neither ids nor
    shuffling, the released reader's positional pairing.
    """
    rng = np.random.default_rng(seed)
    jpeg = [_class_jpeg(k, num_classes, rng) for k in range(num_classes)]
    other = _class_jpeg(num_classes, num_classes + 1, rng)
    next_id = iter(range(10**6, 10**7, 7))

    def coco(name: str, items: list[tuple[str, int]]) -> list[tuple[int, int]]:
        ids = [next(next_id) for _ in items]
        images = [{"file_name": rel, **({"id": i} if with_ids else {})}
                  for (rel, _), i in zip(items, ids)]
        annotations = [{"category_id": k, **({"image_id": i, "id": i + 1} if with_ids else {})}
                       for (_, k), i in zip(items, ids)]
        if with_ids:
            annotations = [annotations[j] for j in rng.permutation(len(annotations))]
        record = {"images": images, "annotations": annotations,
                  "categories": [{"id": k} for k in range(num_classes)]}
        _put(os.path.join(root, "annotation", name), json.dumps(record).encode())
        return [(i, k) for i, (_, k) in zip(ids, items)]

    def images(folder: str, per_class: int) -> list[tuple[str, int]]:
        items = [(f"{folder}/{k}_{j}.jpg", k) for k in range(num_classes) for j in range(per_class)]
        items = [items[j] for j in rng.permutation(len(items))]
        for rel, k in items:
            _put(os.path.join(root, rel), jpeg[k])
        return items

    coco("anno_l_train.json", images("l_train", labeled_per_class))
    coco("anno_u_train_in.json", images("u_train_in", u_in_per_class))
    outside = [(f"u_train_out/x_{j}.jpg", 0) for j in range(u_out)]  # category_id unused
    for rel, _ in outside:
        _put(os.path.join(root, rel), other)
    coco("anno_u_train_out.json", outside)
    test = images("test", test_per_class)
    rows = coco("anno_test.json", [(rel, -1) for rel, _ in test])
    solution = [(i, k) for (i, _), (_, k) in zip(rows, test)]
    if with_ids:
        solution = [solution[j] for j in rng.permutation(len(solution))]
    _put(os.path.join(root, "annotation", "solution.csv"),
         ("Id,Category\n" + "".join(f"{i},{k}\n" for i, k in solution)).encode())
    _put(os.path.join(root, "annotation", "semi_aves_class_names.txt"),
         "".join(f"{k} Genus_species{k}\n" for k in range(num_classes)).encode())
    return root


def write_fake_imagenet(root: str, num_classes: int = 10, train_per_class: int = 6,
                        val_per_class: int = 2, seed: int = 0) -> dict:
    """ILSVRC2012 as ``root/train/<wnid>/<wnid>_<n>.JPEG`` and ``root/val/<wnid>/
    ILSVRC2012_val_<n>.JPEG``, with SimCLR-style list files (``1percent.txt``: the first
    file of each class; ``10percent.txt``: the first two), the released names of lists
    (``99percent.txt``, ``90percent.txt``: the same contents) and ``val.txt`` (the last
    train file of each class: the released test set). Wnids are random, so their sorted
    order is not the order they were made in; each class folder also holds a hidden file
    and a text file, which are not images. Returns the wnids (sorted) and the lists."""
    rng = np.random.default_rng(seed)
    wnids = [f"n{w:08d}" for w in rng.choice(10**7, num_classes, replace=False)]
    lists: dict[str, list[str]] = {"1percent.txt": [], "10percent.txt": [], "val.txt": []}
    val_number = iter(range(1, 10**6))
    for k, wnid in enumerate(wnids):
        data = _class_jpeg(k, num_classes, rng)
        names = [f"{wnid}_{n}.JPEG" for n in rng.choice(10**5, train_per_class, replace=False)]
        for name in names:
            _put(os.path.join(root, "train", wnid, name), data)
        _put(os.path.join(root, "train", wnid, ".DS_Store"), b"")
        _put(os.path.join(root, "train", wnid, "notes.txt"), b"not an image")
        for _ in range(val_per_class):
            _put(os.path.join(root, "val", wnid, f"ILSVRC2012_val_{next(val_number):08d}.JPEG"),
                 data)
        lists["1percent.txt"].append(names[0])
        lists["10percent.txt"] += names[:2]
        lists["val.txt"].append(names[-1])
    lists["99percent.txt"], lists["90percent.txt"] = lists["1percent.txt"], lists["10percent.txt"]
    for name, lines in lists.items():
        _put(os.path.join(root, name), "".join(f"{line}\n" for line in lines).encode())
    return {"wnids": sorted(wnids), "lists": lists}
