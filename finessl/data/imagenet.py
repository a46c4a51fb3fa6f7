"""ImageNet with 1 % or 10 % of its labels (``DATA.NAME semi_ImageNet``), the FineSSL
paper's Table 2 (74.22 / 79.21 top-1).

``DATA.DATAPATH`` holds ILSVRC2012 as ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``
(the validation images sorted into class folders). Classes are the sorted wnids of
``train/``, as the released ``ImageFolder(train)`` numbers them.

- **Labeled**: the files named in ``IMAGENET.LABEL_FILE``, one name per line
  (``n01440764_10026.JPEG``; the class is the text before the first ``_``), which is
  the format of SimCLR's ``1percent.txt`` (12,811 images) and ``10percent.txt``
  (128,116). Without a list file, a seeded subset of every class:
  ``max(1, round(n_k * DATA.LABEL_RATIO))`` of its files, drawn by
  ``IMAGENET.SPLIT_SEED``.
- **Unlabeled**: every train image, labeled ones included (as released).
- **Test**: the official validation set, ``val/<wnid>/``.

The released behaviour is two switches (docs/differences.md): ``IMAGENET.RELEASED_LISTS``
reads ``99percent.txt`` for ``LABEL_RATIO 0.01`` and ``90percent.txt`` for ``0.1``
(files it never shipped), and ``IMAGENET.TEST_FROM_TRAIN`` takes the test images
named in ``val.txt`` from ``train/``, which puts them in the unlabeled pool too.

Building scales to 1.28 M files: each class folder is listed once, no file is opened
or stat'ed, and the index can be cached (``IMAGENET.INDEX_CACHE``; see
:mod:`finessl.data.file_index`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from finessl.config import declare
from finessl.data.base import IMAGENET_MEAN, IMAGENET_STD, Dataset, RawDataset, register
from finessl.data.file_index import ClassTree, TreeImages, class_tree
from finessl.errors import UserError

log = logging.getLogger(__name__)


def _ratio(value) -> str | None:
    return None if 0.0 < value <= 1.0 else "must lie in (0, 1]"


declare("DATA.LABEL_RATIO", 0.01, "semi_ImageNet: fraction of each class labeled when "
        "IMAGENET.LABEL_FILE is ''; with IMAGENET.RELEASED_LISTS it picks the released list "
        "(0.01: 99percent.txt, 0.1: 90percent.txt)", check=_ratio)
declare("IMAGENET.LABEL_FILE", "", "semi_ImageNet: labeled list, one train file name per "
        "line (SimCLR's 1percent.txt / 10percent.txt), absolute or in DATA.DATAPATH; '' = "
        "a seeded per-class subset at DATA.LABEL_RATIO")
declare("IMAGENET.SPLIT_SEED", 0, "semi_ImageNet: seed of the per-class subset drawn when "
        "there is no list file")
declare("IMAGENET.RELEASED_LISTS", False, "semi_ImageNet: the released list-file names, "
        "DATA.DATAPATH/99percent.txt (LABEL_RATIO 0.01) or 90percent.txt (0.1)")
declare("IMAGENET.TEST_FROM_TRAIN", False, "semi_ImageNet: the released test set, the "
        "names in DATA.DATAPATH/val.txt read from train/ (so also unlabeled images)")
declare("IMAGENET.INDEX_CACHE", "auto", "semi_ImageNet: folder caching the file index "
        "(keyed by the tree's listing); 'auto' = $XDG_CACHE_HOME/finessl/file-index "
        "(~/.cache/...), '' = none")

RELEASED_LISTS = {0.01: "99percent.txt", 0.1: "90percent.txt"}
GET_DATA = "ILSVRC2012 from image-net.org"
GET_LISTS = ("SimCLR's imagenet_subsets, "
             "github.com/google-research/simclr/tree/master/imagenet_subsets")
NAME_FILES = ("imagenet-simple-labels.json", "LOC_synset_mapping.txt", "synset_words.txt")


def cache_folder(setting: str) -> str:
    if setting != "auto":
        return os.path.expanduser(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "finessl", "file-index")


def read_list(path: str) -> list[tuple[int, str]]:
    """(line number, file name) of every non-empty line of a list file."""
    with open(path, encoding="utf-8") as f:
        return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]


def lookup(tree: ClassTree, entries: list[tuple[int, str]], source: str) -> np.ndarray:
    """Sorted unique indices in ``tree`` of the listed file names; a name whose class or
    file is not in the tree is a UserError naming the line and where the file should be."""
    index = {c: k for k, c in enumerate(tree.classes)}
    by_class: dict[int, list[tuple[int, str]]] = {}
    for line, name in entries:
        wnid = name.split("_")[0]
        if wnid not in index:
            raise UserError(f"{source} line {line}: {name!r} names class {wnid!r}, which "
                            f"{tree.folder} has no folder for")
        by_class.setdefault(index[wnid], []).append((line, name))
    found = []
    for k, items in by_class.items():
        hits = tree.find(k, [name for _, name in items])
        if (hits < 0).any():
            line, name = items[int(np.argmax(hits < 0))]
            raise UserError(f"{source} line {line}: {name} is not in "
                            f"{os.path.join(tree.folder, tree.classes[k])}/ "
                            f"({int((hits < 0).sum())} listed file(s) of that class missing)")
        found.append(hits)
    indices = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
    if len(indices) < len(entries):
        log.warning("%s: %d duplicate line(s) ignored", source, len(entries) - len(indices))
    return indices


def ratio_subset(tree: ClassTree, ratio: float, seed: int) -> np.ndarray:
    """``max(1, round(n_k * ratio))`` files of every class k, drawn by (seed, k) alone, so
    one class's subset does not depend on the others."""
    chosen = []
    for k, n in enumerate(tree.counts().tolist()):
        take = min(n, max(1, round(n * ratio)))
        rng = np.random.default_rng([seed, k])
        chosen.append(tree.starts[k] + np.sort(rng.permutation(n)[:take]))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def human_names(root: str, wnids: list[str]) -> list[str]:
    """CLIP prompt names: from imagenet-simple-labels.json (a list in sorted-wnid order)
    or a ``<wnid> name, other name`` file (LOC_synset_mapping.txt, synset_words.txt) in
    ``root`` when there is one, else the wnids themselves."""
    for name in NAME_FILES:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                names = json.load(f)
            if len(names) == len(wnids):
                return [str(n) for n in names]
            log.warning("%s has %d names for %d classes: not used", path, len(names), len(wnids))
            continue
        with open(path, encoding="utf-8") as f:
            table = dict(line.strip().split(" ", 1) for line in f if " " in line.strip())
        return [table.get(w, w).split(",")[0].strip() for w in wnids]
    return list(wnids)


def _folder(root: str, name: str, what: str) -> str:
    path = os.path.join(root, name)
    if not os.path.isdir(path):
        raise UserError(f"semi_ImageNet: no folder {path}; expected {what} in DATA.DATAPATH "
                        f"{root} (get {GET_DATA})")
    return path


def train_classes(root: str) -> list[str]:
    train = _folder(root, "train", "train/<wnid>/*.JPEG, ILSVRC2012's training images")
    classes = sorted(e.name for e in os.scandir(train) if e.is_dir() and e.name[0] != ".")
    if not classes:
        raise UserError(f"semi_ImageNet: no class folders in {train}; expected "
                        f"train/<wnid>/*.JPEG (get {GET_DATA})")
    return classes


@register("semi_ImageNet", "ImageNet")
class SemiImageNet(Dataset):
    title = "ImageNet"
    stats = (IMAGENET_MEAN, IMAGENET_STD)

    def _list_file(self, root: str) -> str:
        """The labeled list's path ('' = none), after the switches."""
        if self.setting("IMAGENET.RELEASED_LISTS"):
            ratio = self.setting("DATA.LABEL_RATIO")
            if ratio not in RELEASED_LISTS:
                raise UserError(f"IMAGENET.RELEASED_LISTS True reads 99percent.txt for "
                                f"DATA.LABEL_RATIO 0.01 or 90percent.txt for 0.1; got {ratio}")
            return os.path.join(root, RELEASED_LISTS[ratio])
        name = self.setting("IMAGENET.LABEL_FILE")
        return os.path.join(root, os.path.expanduser(name)) if name else ""

    def _labeled(self, root: str, tree: ClassTree) -> tuple[np.ndarray, str]:
        path = self._list_file(root)
        if not path:
            ratio, seed = self.setting("DATA.LABEL_RATIO"), self.setting("IMAGENET.SPLIT_SEED")
            return ratio_subset(tree, ratio, seed), f"DATA.LABEL_RATIO {ratio}, seed {seed}"
        if not os.path.isfile(path):
            raise UserError(f"semi_ImageNet: labeled list {path} not found; it holds one "
                            f"train file name per line (get {GET_LISTS}) and goes in "
                            f"DATA.DATAPATH (IMAGENET.LABEL_FILE names it)")
        return lookup(tree, read_list(path), path), path

    def _test(self, root: str, train: ClassTree, cache: str) -> tuple[TreeImages, np.ndarray]:
        if self.setting("IMAGENET.TEST_FROM_TRAIN"):
            path = os.path.join(root, "val.txt")
            if not os.path.isfile(path):
                raise UserError(f"semi_ImageNet: IMAGENET.TEST_FROM_TRAIN True reads {path}, "
                                f"which is missing (one train file name per line)")
            picked = lookup(train, read_list(path), path)
            log.warning("semi_ImageNet: the %d test images of %s are train images, also in "
                        "the unlabeled set (IMAGENET.TEST_FROM_TRAIN, the released test set)",
                        len(picked), path)
            return TreeImages(train, picked), train.targets()[picked]
        val = _folder(root, "val", "val/<wnid>/*.JPEG, ILSVRC2012's validation images in "
                      "class folders (valprep.sh of the PyTorch ImageNet example sorts them)")
        strangers = sorted({e.name for e in os.scandir(val) if e.is_dir()} - set(train.classes))
        if strangers:
            raise UserError(f"semi_ImageNet: {val} has class folders that {train.folder} "
                            f"lacks: {', '.join(strangers[:5])}")
        tree = class_tree(val, train.classes, cache)
        if not len(tree):
            raise UserError(f"semi_ImageNet: no images in {val}/<wnid>/ (get {GET_DATA})")
        return TreeImages(tree), tree.targets()

    def load(self, root: str, download: bool) -> RawDataset:
        """Index ``train/`` and the test set, choose the labeled subset; see the module
        docstring. Nothing is downloaded."""
        classes = train_classes(root)
        cache = self.setting("IMAGENET.INDEX_CACHE")
        cache = cache_folder(cache) if cache else ""
        train = class_tree(os.path.join(root, "train"), classes, cache)
        if not len(train):
            raise UserError(f"semi_ImageNet: no images in {root}/train/<wnid>/ "
                            f"(get {GET_DATA})")
        labeled, source = self._labeled(root, train)
        test_images, test_targets = self._test(root, train, cache)
        log.info("semi_ImageNet: %d labeled images from %s; all %d train images unlabeled",
                 len(labeled), source, len(train))
        files = hashlib.sha256(train.names.tobytes() + train.starts.tobytes()).hexdigest()
        return self.raw(
            train_targets=train.targets().tolist(),
            test_targets=test_targets.tolist(),
            classnames=human_names(root, classes),
            train_images=TreeImages(train),
            test_images=test_images,
            fixed_split=(labeled.tolist(), list(range(len(train)))),
            split_meta={"root": root, "labeled_from": source, "wnids": classes,
                        "train_index_sha256": files},
        )

    def classnames(self, root: str) -> list[str]:
        return human_names(root, train_classes(root))  # folder names only: no file listed
