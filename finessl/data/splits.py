"""Labeled / unlabeled splits of a training set, balanced or long-tailed.

FineSSL (Gan & Wei, ICML 2024) evaluates on balanced splits (N labeled images per
class) and on long-tailed ones where class ``k`` keeps ``n_max * mu**k`` images with
``mu = (1/imb)**(1/(C-1))``, the exponential profile of DARP/ABC/ACR. The unlabeled
set's profile is consistent with the labeled one (the same ratio), uniform (ratio 1)
or reversed (a negative ratio, as USB writes it: class ``C-1`` keeps the most). The split is a
pure function of the dataset order and the config, so it needs no seed; its sha256
is stored with every run so two runs can be checked to have trained on the same data.

A validation split (DATA.NUM_VAL images per class, :func:`draw_validation`) is the one
part drawn by the run's seed; it is listed in split.json and covered by the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

from finessl.errors import UserError
from finessl.io import atomic_write_text


def class_counts(n_max: int, num_classes: int, imb_ratio: float) -> list[int]:
    """Images per class, from ``n_max`` for class 0 down to ``n_max / imb_ratio``; a
    negative ratio reverses the profile (``n_max`` for class ``C-1``, USB's ``r_ulb <
    0``), and -1 is balanced as 1 is.

    The last class is set to ``int(n_max / imb_ratio)`` exactly rather than through
    ``mu**(C-1)``, so floating point error cannot cost it one image.
    """
    if imb_ratio < 0:
        return class_counts(n_max, num_classes, -imb_ratio)[::-1]
    if num_classes == 1:
        return [n_max]
    mu = (1.0 / imb_ratio) ** (1.0 / (num_classes - 1))
    counts = [int(n_max * mu**i) for i in range(num_classes - 1)]
    return counts + [int(n_max / imb_ratio)]


def make_split(
    targets: Sequence[int],
    num_classes: int,
    num_l: int,
    num_u: int | None,
    imb_l: float,
    imb_u: float,
) -> tuple[list[int], list[int]]:
    """Pick labeled and unlabeled training indices, class by class, in dataset order.

    Class ``k`` gives its first ``l_k`` images to the labeled set and its first
    ``l_k + u_k`` to the unlabeled set: as in FixMatch and FineSSL, the labeled
    images are also used without their labels. A class with fewer than
    ``l_k + u_k`` images gives all it has (CIFAR-100 N4 asks for 4 + 500 of 500,
    as the released configs do); too few for the labeled set is an error.
    ``num_u`` None: the unlabeled set is the whole training set, in dataset order
    (Food-101's released rule, docs/method.md §2; ``imb_u`` unused).
    """
    per_class: list[list[int]] = [[] for _ in range(num_classes)]
    for index, label in enumerate(targets):
        per_class[label].append(index)
    labeled_counts = class_counts(num_l, num_classes, imb_l)
    unlabeled_counts = class_counts(num_u or 0, num_classes, imb_u)
    labeled: list[int] = []
    unlabeled: list[int] = []
    for k, (l_k, u_k) in enumerate(zip(labeled_counts, unlabeled_counts)):
        have = len(per_class[k])
        if have < l_k:
            raise UserError(
                f"class {k} has {have} training images but DATA.NUM_L asks for {l_k} "
                f"labeled ones; lower DATA.NUM_L"
            )
        labeled += per_class[k][:l_k]
        unlabeled += per_class[k][: l_k + u_k]
    return labeled, list(range(len(targets))) if num_u is None else unlabeled


def draw_validation(targets: Sequence[int], num_classes: int, labeled_idx: Sequence[int],
                    num_val: int, seed: int) -> list[int]:
    """``num_val`` training images of each class, drawn by ``seed``, to hold out of both
    the labeled and the unlabeled sets (DATA.NUM_VAL). A class draws from its labelled
    images outside the labeled set; where it has too few of those (a dataset whose only
    labels are its labeled set: ImageFolder, Semi-Aves), from its labeled images, of
    which at least one stays labeled. Sorted, so the list is the split's, not the draw's."""
    labeled = set(labeled_idx)
    outside: list[list[int]] = [[] for _ in range(num_classes)]
    inside: list[list[int]] = [[] for _ in range(num_classes)]
    for index, label in enumerate(targets):
        if label >= 0:
            (inside if index in labeled else outside)[label].append(index)
    generator = torch.Generator().manual_seed(seed % 2**63)
    val: list[int] = []
    for k in range(num_classes):
        pool = outside[k] if len(outside[k]) >= num_val else inside[k]
        if pool is inside[k] and len(pool) <= num_val:
            raise UserError(
                f"DATA.NUM_VAL {num_val}: class {k} has {len(outside[k])} labelled images "
                f"outside the labeled set and {len(inside[k])} in it (one must stay "
                f"labeled); lower DATA.NUM_VAL")
        order = torch.randperm(len(pool), generator=generator)[:num_val]
        val += [pool[i] for i in order.tolist()]
    return sorted(val)


def split_hash(labeled_idx: Sequence[int], unlabeled_idx: Sequence[int],
               files: Sequence[str] | None = None, val_idx: Sequence[int] = ()) -> str:
    """sha256 of the canonical JSON of both index lists (the split's identity), of the
    validation list when there is one, and of the file list the indices point into
    when there is one (ImageFolder). Without a validation split the hash is the one
    it always was."""
    record = {"labeled": list(labeled_idx), "unlabeled": list(unlabeled_idx)}
    if files is not None:
        record["files"] = list(files)
    if val_idx:
        record["val"] = list(val_idx)
    canonical = json.dumps(
        record,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def save_split(
    path: str,
    labeled_idx: Sequence[int],
    unlabeled_idx: Sequence[int],
    meta: dict,
    targets: Sequence[int],
    num_classes: int,
    val_idx: Sequence[int] = (),
) -> str:
    """Write the split as JSON atomically and return its sha256.

    Written atomically, so a crash never leaves a half-written split behind.
    ``targets`` and ``num_classes`` only serve the per-class counts kept for reading.
    """
    digest = split_hash(labeled_idx, unlabeled_idx, meta.get("train_files"), val_idx)
    labeled_per_class = [0] * num_classes
    unlabeled_per_class = [0] * num_classes
    for i in labeled_idx:
        labeled_per_class[targets[i]] += 1
    for i in unlabeled_idx:
        unlabeled_per_class[targets[i]] += 1
    record = {
        "labeled": list(labeled_idx),
        "unlabeled": list(unlabeled_idx),
        "labeled_per_class": labeled_per_class,
        "unlabeled_per_class": unlabeled_per_class,
        "meta": meta,
        "sha256": digest,
    }
    if val_idx:
        val_per_class = [0] * num_classes
        for i in val_idx:
            val_per_class[targets[i]] += 1
        record.update(val=list(val_idx), val_per_class=val_per_class)
    atomic_write_text(json.dumps(record), path)
    return digest
