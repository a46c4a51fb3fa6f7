"""The file index of a big ``<folder>/<class>/<image>`` tree (ImageNet's 1.28 M files),
built fast and kept small.

Building the index lists each class folder once with :func:`os.scandir`, whose entries
carry their type, so no file is stat'ed or opened (which at ImageNet's size would take
minutes). File names are kept as one fixed-width numpy bytes array sorted within each
class, not as Python strings: 1.28 M names take about 30 MB, DataLoader workers share
them without copy-on-write growth (a list of Python strings is copied page by page as
workers touch its reference counts), and a list file of names is looked up with
``numpy.searchsorted``. docs/data.md gives the measured times.

The index can be cached on disk (:func:`class_tree` with ``cache_dir``). The cache is
keyed by the tree's listing: the folder, its sorted class folders and each class
folder's modification time and inode. Adding, removing or renaming a file changes its
folder's modification time, so a changed tree is listed again; a file rewritten in
place under the same name keeps the index, which holds names only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CACHE_VERSION = 1  # bump when the cache file's format changes


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _class_folders(folder: str) -> list[os.DirEntry]:
    entries = [e for e in os.scandir(folder) if _visible(e.name) and e.is_dir()]
    return sorted(entries, key=lambda e: e.name)


def _image_names(folder: str) -> list[str]:
    """Image file names directly inside ``folder`` (no recursion, no stat)."""
    with os.scandir(folder) as entries:
        return [e.name for e in entries if _visible(e.name)
                and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()]


@dataclass
class ClassTree:
    """``folder/<classes[k]>/<names[i]>``: the files of class k are
    ``names[starts[k]:starts[k + 1]]``, sorted."""

    folder: str
    classes: list[str]
    names: np.ndarray  # fixed-width bytes (numpy 'S'), utf-8 file names
    starts: np.ndarray  # int64, len(classes) + 1

    def __len__(self) -> int:
        return len(self.names)

    def counts(self) -> np.ndarray:
        return np.diff(self.starts)

    def targets(self) -> np.ndarray:
        """The class index of every file, in index order (int64)."""
        return np.repeat(np.arange(len(self.classes), dtype=np.int64), self.counts())

    def find(self, k: int, names: Sequence[str]) -> np.ndarray:
        """Indices of files ``names`` of class ``k``; -1 for a name not there."""
        block = self.names[self.starts[k]:self.starts[k + 1]]
        encoded = [n.encode() for n in names]
        result = np.full(len(encoded), -1, dtype=np.int64)
        if not len(block) or not encoded:
            return result
        fits = np.array([len(e) <= block.dtype.itemsize for e in encoded])
        wanted = np.array(encoded, dtype=block.dtype)  # a longer name is cut: ``fits`` drops it
        pos = np.searchsorted(block, wanted).clip(0, len(block) - 1)
        found = fits & (block[pos] == wanted)
        result[found] = pos[found] + self.starts[k]
        return result

    def path(self, i: int) -> str:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return os.path.join(self.folder, self.classes[k], self.names[i].decode())


def scan(folder: str, classes: Sequence[str] | None = None) -> ClassTree:
    """List ``folder``'s class folders (sorted; or ``classes``, in that order, a missing
    one counted empty) and the image files directly in each."""
    if classes is None:
        classes = [e.name for e in _class_folders(folder)]
    names, starts = [], [0]
    for name in classes:
        sub = os.path.join(folder, name)
        files = sorted(n.encode() for n in _image_names(sub)) if os.path.isdir(sub) else []
        names += files
        starts.append(len(names))
    array = np.array(names, dtype="S") if names else np.zeros(0, dtype="S1")
    return ClassTree(folder, list(classes), array, np.array(starts, dtype=np.int64))


def listing_key(folder: str, classes: Sequence[str] | None = None) -> str:
    """sha256 of the tree's listing: the folder, its class folders (or ``classes``) and
    each one's modification time (ns) and inode: one stat per class, none per file."""
    if classes is None:
        entries = [(e.name, e.stat()) for e in _class_folders(folder)]
    else:
        entries = [(c, os.stat(os.path.join(folder, c))) for c in classes
                   if os.path.isdir(os.path.join(folder, c))]
    digest = hashlib.sha256(f"v{CACHE_VERSION}\0{os.path.abspath(folder)}".encode())
    for name, st in entries:
        digest.update(f"\0{name}\0{st.st_mtime_ns}\0{st.st_ino}".encode())
    if classes is not None:
        digest.update(("\0classes\0" + "\0".join(classes)).encode())
    return digest.hexdigest()


def _cache_path(cache_dir: str, folder: str) -> str:
    name = hashlib.sha256(os.path.abspath(folder).encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"{name}.npz")


def _read_cache(path: str, key: str, folder: str) -> ClassTree | None:
    try:
        with np.load(path, allow_pickle=False) as record:
            if str(record["key"]) != key:
                return None
            return ClassTree(folder, [str(c) for c in record["classes"]], record["names"],
                             record["starts"])
    except (OSError, KeyError, ValueError):  # absent, half-written by a crash, older format
        return None


def _write_cache(path: str, key: str, tree: ClassTree) -> None:
    """Best effort: a cache that cannot be written costs the next run a listing, no more."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), classes=np.array(tree.classes, dtype=str),
                     names=tree.names, starts=tree.starts)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("file index cache not written to %s (%s)", path, e.strerror or e)


def class_tree(folder: str, classes: Sequence[str] | None = None,
               cache_dir: str = "") -> ClassTree:
    """The :class:`ClassTree` of ``folder`` (see :func:`scan`), read from ``cache_dir``
    when its listing is unchanged there, else listed and, with ``cache_dir``, saved."""
    if not cache_dir:
        return scan(folder, classes)
    key = listing_key(folder, classes)
    path = _cache_path(cache_dir, folder)
    tree = _read_cache(path, key, folder)
    if tree is not None:
        log.info("file index of %s: %d files, from the cache %s", folder, len(tree), path)
        return tree
    tree = scan(folder, classes)
    _write_cache(path, key, tree)
    return tree


class TreeImages:
    """Images of a :class:`ClassTree` (``indices`` of it, or all), opened on demand as RGB."""

    def __init__(self, tree: ClassTree, indices: np.ndarray | None = None):
        self.tree = tree
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.tree) if self.indices is None else len(self.indices)

    def path(self, i: int) -> str:
        return self.tree.path(i if self.indices is None else int(self.indices[i]))

    def __getitem__(self, i: int) -> Image.Image:
        with Image.open(self.path(i)) as img:
            return img.convert("RGB")
