"""Your own images as a FineSSL dataset (``DATA.NAME ImageFolder``, or ``folder``).

``DATA.DATAPATH`` holds three folders::

    labeled/<class>/...    labelled training images, at any depth below their class folder
    unlabeled/...          unlabelled training images, at any depth (optional)
    test/<class>/...       labelled test images (required: every run is evaluated)

Class names are the folder names under ``labeled/``, sorted (that order is the label
index), kept as they are (what ``predict`` writes; the CLIP prompts read ``_`` as a
space, finessl/models/heads.py); ``test/`` may hold a subset
of them. The split is the folders: every labeled image is labeled, and the unlabeled
set is the labeled images followed by the unlabeled ones (labeled images are also
used without their labels, as in FixMatch and FineSSL); DATA.NUM_L, NUM_U, IMB_L and
IMB_U are not used. Unlabeled images have target -1: their class is unknown, and
pseudo-label accuracies are computed on known targets only.

Image files are those ending in one of :data:`IMAGE_EXTENSIONS` (any case); hidden
files and folders (``.name``) are ignored. Bad files never stop a run:

* at build time every file is opened and checked (:func:`check_image`: the header
  and, for PNG, every chunk; a JPEG that lacks its end marker is decoded in full,
  which is what catches truncated downloads). Unreadable files are logged by path,
  one line each for the first :data:`MAX_LISTED`, counted, and left out of the
  dataset and of ``split.json``;
* a file that fails later, when a loader decodes it (damage the check cannot see,
  or a file changed during the run), is logged once and replaced by the next image
  of the same split and label (:class:`CheckedFileImages`), so labels stay right and
  batches stay the same on every rerun.

A class of ``labeled/`` whose every file is unreadable is an error (one line naming
the class and the file): training would otherwise go on without a class it was asked
to learn. 16-bit images (PNG or TIFF grey, Pillow's modes ``I;16*`` and ``I``) are
scaled to 8 bits by their range (value / 257), not clipped (:func:`open_rgb`).

Images are normalised with CLIP's own mean and std.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from finessl.data.base import FileImages, Dataset, RawDataset, one_line, register
from finessl.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_LISTED = 20  # unreadable files logged by path; later ones are only counted
UNKNOWN = -1  # the target of an image whose class is not known
LAYOUT = "labeled/<class>/<images>, unlabeled/<images> (optional), test/<class>/<images>"


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_images(folder: str) -> list[str]:
    """Image files anywhere below ``folder``, sorted by path (a stable dataset order)."""
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if _visible(d)]
        found += [os.path.join(here, f) for f in files
                  if _visible(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _jpeg_ends_with_eoi(path: str) -> bool:
    """True when the EOI marker (FF D9) is in the last KB, as in any complete JPEG
    without a long trailer; a truncated download never has it."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 1024))
        return b"\xff\xd9" in f.read()


def check_image(path: str) -> str:
    """'' when ``path`` reads as an image, else the reason (one line).

    ``verify`` reads the header (and checks every PNG chunk's CRC) in microseconds;
    a JPEG without its end marker is also decoded, at 1/8 scale, since ``verify``
    does not look at JPEG data.
    """
    try:
        with Image.open(path) as img:
            jpeg = img.format == "JPEG"
            img.verify()
        if jpeg and not _jpeg_ends_with_eoi(path):
            with Image.open(path) as img:
                img.draft("RGB", (img.width // 8 or 1, img.height // 8 or 1))
                img.load()
    except Exception as e:  # PIL raises many types for bad files; all mean "skip it"
        return one_line(e)
    return ""


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's 16-bit grey


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """16-bit grey (``I;16*``, or ``I`` holding values above 255) as 8-bit ``L``, scaled
    by the 16-bit range: round(value / 257), so 65535 is 255. Pillow's own conversion
    clips at 255 instead, which turns a 16-bit image almost white. Mode ``I`` with values
    in 0..255 is 8-bit data already and is kept as it is."""
    values = np.asarray(img)
    if img.mode == "I" and values.size and 0 <= values.min() and values.max() <= 255:
        return Image.fromarray(values.astype(np.uint8), "L")
    scaled = np.rint(values.astype(np.float64) / 257.0)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def open_rgb(path: str) -> Image.Image:
    """The decoded image at ``path`` as RGB (transparent palettes via RGBA, 16-bit grey
    scaled to 8 bits by :func:`_grey_to_8bit`)."""
    with Image.open(path) as img:
        if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
            return _grey_to_8bit(img).convert("RGB")
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        return img.convert("RGB")


class UnreadableLog:
    """Logs unreadable files by path, the first ``limit`` of them, and counts all."""

    def __init__(self, limit: int = MAX_LISTED):
        self.limit, self.paths, self.reasons = limit, [], []

    def add(self, path: str, reason: str) -> None:
        self.paths.append(path)
        self.reasons.append(reason)
        if len(self.paths) <= self.limit:
            log.warning("unreadable image skipped: %s (%s)", path, reason)
        elif len(self.paths) == self.limit + 1:
            log.warning("more unreadable images: counted but not listed")


def readable(paths: Sequence[str], report: UnreadableLog) -> list[str]:
    """The paths :func:`check_image` accepts; the others go to ``report``."""
    good = []
    for path in paths:
        reason = check_image(path)
        if reason:
            report.add(path, reason)
        else:
            good.append(path)
    return good


class CheckedFileImages(FileImages):
    """Files decoded on demand; a file that fails to decode is logged once and the next
    image with the same target (cyclically) is returned in its place."""

    _report = UnreadableLog()  # one per process: a DataLoader worker logs its own

    def __init__(self, paths: Sequence[str], targets: Sequence[int]):
        super().__init__(paths)
        self.targets = list(targets)
        self._bad: set[int] = set()

    def __getitem__(self, i: int) -> Image.Image:
        n = len(self.paths)
        for j in ((i + step) % n for step in range(n)):
            if j in self._bad or self.targets[j] != self.targets[i]:
                continue
            try:
                return open_rgb(self.paths[j])
            except Exception as e:  # any decoding failure: substitute, never crash
                self._bad.add(j)
                self._report.add(self.paths[j], one_line(e))
        raise RuntimeError(f"no readable image left with target {self.targets[i]} "
                           f"(first: {self.paths[i]})")


def _class_folders(folder: str) -> list[str]:
    return sorted(d.name for d in os.scandir(folder) if d.is_dir() and _visible(d.name))


def _labelled(folder: str, classes: list[str], report: UnreadableLog,
              every_class: bool = False):
    """Readable (paths, targets) of ``folder/<class>/...`` for the given classes.

    ``every_class``: a class whose image files are all unreadable is a UserError naming
    the class and its first file (the labeled set must not silently lose a class)."""
    paths, targets = [], []
    for k, name in enumerate(classes):
        class_dir = os.path.join(folder, name)
        files = list_images(class_dir) if os.path.isdir(class_dir) else []
        first_bad = len(report.paths)
        found = readable(files, report)
        if every_class and files and not found:
            bad, why = report.paths[first_bad], report.reasons[first_bad]
            more = len(files) - 1
            also = f" (and {more} more unreadable file(s))" if more else ""
            raise UserError(f"ImageFolder: class {name!r} has no readable labeled image: "
                            f"{bad} is unreadable ({why}){also}; replace it, add a readable "
                            f"image to {class_dir}, or remove that class folder")
        paths += found
        targets += [k] * len(found)
    return paths, targets


def classnames_of(root: str) -> list[str]:
    """The class names of the folder dataset at ``root`` (no image is opened)."""
    labeled = os.path.join(root, "labeled")
    if not os.path.isdir(root):
        raise UserError(f"ImageFolder: DATA.DATAPATH {root} is not a folder; expected {LAYOUT}")
    classes = _class_folders(labeled) if os.path.isdir(labeled) else []
    if not classes:
        raise UserError(f"ImageFolder: no class folders in {labeled}; expected {LAYOUT}")
    return classes


def _relative(paths: Sequence[str], root: str) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


@register("ImageFolder", "folder")
class ImageFolder(Dataset):
    title = "ImageFolder"  # stats: CLIP's (the default)

    def load(self, root: str, download: bool) -> RawDataset:
        """Scan and check the three folders under ``root``; see the module docstring."""
        classnames_of(root)  # the layout errors, before the slow part
        labeled_dir, test_dir = os.path.join(root, "labeled"), os.path.join(root, "test")
        unlabeled_dir = os.path.join(root, "unlabeled")
        if not os.path.isdir(test_dir):
            raise UserError(f"ImageFolder: no test folder {test_dir}; every run is evaluated, "
                            f"so put labelled test images in test/<class>/ (classes as in "
                            f"labeled/)")
        classes = _class_folders(labeled_dir)
        strangers = sorted(set(_class_folders(test_dir)) - set(classes))
        if strangers:
            raise UserError(f"ImageFolder: {test_dir} has class folders that {labeled_dir} "
                            f"lacks: {', '.join(strangers)}")
        report = UnreadableLog()
        labeled, labels = _labelled(labeled_dir, classes, report, every_class=True)
        if os.path.isdir(unlabeled_dir):
            unlabeled = readable(list_images(unlabeled_dir), report)
        else:
            log.warning("ImageFolder: no %s; the unlabeled set is the labeled images only",
                        unlabeled_dir)
            unlabeled = []
        test, test_labels = _labelled(test_dir, classes, report)
        if report.paths:
            log.warning("ImageFolder: skipped %d unreadable image file(s) under %s",
                        len(report.paths), root)
        for what, files in (("labeled", labeled), ("test", test)):
            if not files:
                raise UserError(f"ImageFolder: no readable images in {root}/{what}/<class>/ "
                                f"(extensions: {' '.join(IMAGE_EXTENSIONS)})")
        present = set(labels)
        empty = [c for k, c in enumerate(classes) if k not in present]
        if empty:
            log.warning("ImageFolder: no labeled images for class(es) %s", ", ".join(empty))
        train = labeled + unlabeled
        train_targets = labels + [UNKNOWN] * len(unlabeled)
        return self.raw(
            train_targets=train_targets,
            test_targets=test_labels,
            classnames=list(classes),
            train_images=CheckedFileImages(train, train_targets),
            test_images=CheckedFileImages(test, test_labels),
            fixed_split=(list(range(len(labeled))), list(range(len(train)))),
            split_meta={"root": root, "train_files": _relative(train, root),
                        "test_files": _relative(test, root),
                        "unreadable": _relative(report.paths, root)},
        )

    def classnames(self, root: str) -> list[str]:
        return classnames_of(root)  # the folder names: no image opened
