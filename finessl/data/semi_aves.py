"""Semi-Aves (``DATA.NAME Semi_Aves``), the FGVC7 semi-supervised bird challenge: 200
classes, the FineSSL paper's Table 2 (67.25 top-1 with in-class unlabeled data, 61.12
with out-of-class data added).

``DATA.DATAPATH`` holds the images and ``annotation/`` with the release's files:

| file | role |
|---|---|
| ``anno_l_train.json`` | labeled images (3,959) |
| ``anno_u_train_in.json`` | unlabeled images of the 200 classes (26,640) |
| ``anno_u_train_out.json`` | unlabeled, other species (122,208), with ``DATA.out_ulab True`` |
| ``anno_test.json`` | test images (8,000) |
| ``solution.csv`` | test labels: a header line, then ``<id>,<class>`` per test image |
| ``semi_aves_class_names.txt`` | ``<index> <Genus_species>`` per line |

The JSONs are COCO-style: an image's path is ``DATA.DATAPATH/`` + ``images[i].file_name``,
its class an ``annotations`` entry's ``category_id``. As released, the labeled set is
all of ``anno_l_train`` (``NUM_L`` / ``LABEL_RATIO`` are not applied) and the unlabeled
set is ``u_train_in`` (+ ``u_train_out``), without the labeled images (docs/differences.md).

True labels of unlabeled images (diagnostics only, never trained on): ``u_train_in``'s
``category_id`` where it is a class index 0..199, else -1 (unknown); every
``u_train_out`` image is -2, out of the label space.
"""

from __future__ import annotations

import csv
import json
import logging
import os

from finessl.config import declare
from finessl.data.base import (IMAGENET_MEAN, IMAGENET_STD, Dataset, FileImages, RawDataset,
                               class_names, register)
from finessl.errors import UserError

log = logging.getLogger(__name__)

declare("DATA.out_ulab", False, "Semi_Aves: add the out-of-class unlabeled images "
        "(anno_u_train_out.json, true label -2) to the unlabeled set")

UNKNOWN, OUT_OF_CLASS = -1, -2  # true labels of unlabeled images (finessl/data/base.py)
FILES = {"labeled": "anno_l_train.json", "in": "anno_u_train_in.json",
         "out": "anno_u_train_out.json", "test": "anno_test.json",
         "solution": "solution.csv", "names": "semi_aves_class_names.txt"}
GET_DATA = ("get the FGVC7 Semi-Aves release (github.com/cvl-umass/semi-inat-2020) and "
            "set DATA.DATAPATH to the folder holding annotation/ and the images")


def _need(root: str, key: str) -> str:
    path = os.path.join(root, "annotation", FILES[key])
    if not os.path.isfile(path):
        raise UserError(f"Semi-Aves: missing {path}; DATA.DATAPATH/annotation/ holds "
                        f"{', '.join(FILES.values())} ({GET_DATA})")
    return path


def _bad(path: str, why: str) -> UserError:
    return UserError(f"Semi-Aves: {path} {why} ({GET_DATA})")


def read_coco(path: str, root: str, labels: str) -> tuple[list[str], list[int], list]:
    """(image paths, category ids, image ids) of a COCO-style JSON.

    ``labels``: 'need' (a labeled list: every image must have its category), 'maybe'
    (unlabeled: categories used where given, else -1) or 'no' (-1 for all). Images and
    categories are paired by ``image_id`` when every annotation has one that names an
    image, else by list position, as the released reader pairs them."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        images = record["images"]
        paths = [os.path.join(root, *str(im["file_name"]).split("/")) for im in images]
        ids = [im.get("id") for im in images]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _bad(path, f"is not a COCO-style annotation file ({type(e).__name__}: {e})"
                   ) from None
    annotations = (record.get("annotations") or []) if labels != "no" else []
    unknown = [UNKNOWN] * len(images)
    if len(annotations) != len(images):
        if labels == "need":
            raise _bad(path, f"has {len(images)} images but {len(annotations)} annotations")
        return paths, unknown, ids
    try:
        category = [int(a["category_id"]) for a in annotations]
    except (KeyError, TypeError, ValueError) as e:
        if labels == "need":
            raise _bad(path, f"has an annotation without an integer category_id ({e})"
                       ) from None
        return paths, unknown, ids
    by_id = {i: n for n, i in enumerate(ids) if i is not None}
    if len(by_id) == len(images) and all(a.get("image_id") in by_id for a in annotations):
        for a, c in zip(annotations, category):
            unknown[by_id[a["image_id"]]] = c
        return paths, unknown, ids
    return paths, category, ids


def read_solution(path: str, ids: list) -> list[int]:
    """Test labels from solution.csv: column 1 of the rows after the header, paired with
    anno_test.json's images by the id in column 0 when those are the images' ids, else by
    row order (the released pairing)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f)][1:]
    rows = [r for r in rows if r]
    if len(rows) != len(ids):
        raise _bad(path, f"has {len(rows)} rows but anno_test.json {len(ids)} images")
    try:
        labels = [int(r[1]) for r in rows]
    except (IndexError, ValueError):
        raise _bad(path, "needs an integer class in column 1 of every row") from None
    keyed = {r[0].strip(): c for r, c in zip(rows, labels)}
    if len(keyed) == len(ids) and all(str(i) in keyed for i in ids):
        return [keyed[str(i)] for i in ids]
    return labels


def read_names(path: str) -> list[str]:
    """Column 1 of a whitespace-split text file (``0 Ardea_herodias``)."""
    with open(path, encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    if any(len(r) < 2 for r in rows):
        raise _bad(path, "needs '<index> <name>' on every line")
    return class_names([r[1] for r in rows])


def _check_range(path: str, targets: list[int], num_classes: int) -> None:
    bad = [t for t in targets if not 0 <= t < num_classes]
    if bad:
        raise _bad(path, f"has class {bad[0]}, outside 0..{num_classes - 1}")


def _check_first_image(path: str, source: str) -> None:
    """One stat per list: a DATA.DATAPATH that holds the annotations but not the images
    fails here, not at the first batch."""
    if not os.path.isfile(path):
        raise UserError(f"Semi-Aves: {path}, the first image of {source}, is missing; the "
                        f"images go under DATA.DATAPATH as the file_name entries say "
                        f"({GET_DATA})")


@register("Semi_Aves")
class SemiAves(Dataset):
    title = "Semi-Aves"
    stats = (IMAGENET_MEAN, IMAGENET_STD)

    def load(self, root: str, download: bool) -> RawDataset:
        """Read the annotation files; see the module docstring. Nothing is downloaded."""
        out_ulab = self.setting("DATA.out_ulab")
        needed = ["labeled", "in", "test", "solution", "names"] + (["out"] if out_ulab else [])
        paths = {key: _need(root, key) for key in needed}
        classnames = read_names(paths["names"])
        labeled, labels, _ = read_coco(paths["labeled"], root, "need")
        _check_range(paths["labeled"], labels, len(classnames))
        unlabeled, truth, _ = read_coco(paths["in"], root, "maybe")
        truth = [t if 0 <= t < len(classnames) else UNKNOWN for t in truth]
        if out_ulab:
            outside, _, _ = read_coco(paths["out"], root, "no")
            unlabeled += outside
            truth += [OUT_OF_CLASS] * len(outside)
        test, _, test_ids = read_coco(paths["test"], root, "no")
        test_labels = read_solution(paths["solution"], test_ids)
        _check_range(paths["solution"], test_labels, len(classnames))
        for files, key in ((labeled, "labeled"), (unlabeled, "in"), (test, "test")):
            if not files:
                raise _bad(paths[key], "lists no images")
            _check_first_image(files[0], paths[key])
        log.info("Semi-Aves: %d labeled, %d unlabeled (%d out-of-class: DATA.out_ulab %s), "
                 "%d test images; DATA.NUM_L and LABEL_RATIO are not used", len(labeled),
                 len(unlabeled), truth.count(OUT_OF_CLASS), out_ulab, len(test))
        train = labeled + unlabeled
        return self.raw(
            train_targets=labels + truth,
            test_targets=test_labels,
            classnames=classnames,
            train_images=FileImages(train),
            test_images=FileImages(test),
            fixed_split=(list(range(len(labeled))),
                         list(range(len(labeled), len(train)))),
            split_meta={"root": root, "out_ulab": out_ulab,
                        "out_of_class": truth.count(OUT_OF_CLASS),
                        "train_files": [os.path.relpath(p, root) for p in train]},
        )

    def classnames(self, root: str) -> list[str]:
        return read_names(_need(root, "names"))
