"""Food-101 (``DATA.NAME FOOD101``), the FineSSL paper's.

Read as torchvision's ``Food101`` reads it: classes are the sorted keys of
``meta/train.json``, images keep the order of ``meta/{train,test}.json``, and are
opened lazily (5 GB does not fit in memory). As released (docs/method.md §2): the
unlabeled pool is the whole train split and the normalisation ImageNet's.
"""

from __future__ import annotations

import json
import os

from finessl.data.base import (IMAGENET_MEAN, IMAGENET_STD, Archive, Dataset, FileImages,
                               RawDataset, class_names, register)


@register("FOOD101")
class Food101(Dataset):
    title = "Food-101"
    stats = (IMAGENET_MEAN, IMAGENET_STD)
    unlabeled_pool = "all"
    archive = Archive(
        "Food-101", "food-101", ("meta/train.json", "meta/test.json"),
        "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
        "85eeb15f3717b99a5da872d97d918f87",
    )

    def load(self, root: str, download: bool) -> RawDataset:
        folder = self.archive.ensure_present(root, download)
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
        return self.raw(
            train_targets=targets["train"],
            test_targets=targets["test"],
            classnames=class_names(classes),
            train_images=FileImages(paths["train"]),
            test_images=FileImages(paths["test"]),
        )
