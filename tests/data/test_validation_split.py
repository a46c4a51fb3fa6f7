"""The validation split (DATA.NUM_VAL, finessl.data.splits.draw_validation and
finessl.data.loaders): drawn by the seed, held out of both sets, in split.json and its
hash, for datasets split by rule and by folder (CPU, fractions of a second)."""
from __future__ import annotations

import json
import os

import pytest

from fakedata import FOLDER_LABELED_PER_CLASS, write_image_folder
from finessl.data import loaders, splits
from finessl.errors import UserError
from helpers import data_cfg


def make_cfg(root, name="CIFAR10", num_val=0):
    return data_cfg(root, name, NUM_VAL=num_val, NUM_SIGNAL=5)


TARGETS = [k for k in range(3) for _ in range(6)]  # 3 classes, 6 images each, in order


def test_draw_validation_per_class_outside_the_labeled_set_and_by_seed():
    labeled = [0, 6, 12]
    val = splits.draw_validation(TARGETS, 3, labeled, 2, seed=1)
    assert [sum(TARGETS[i] == k for i in val) for k in range(3)] == [2, 2, 2]
    assert not set(val) & set(labeled) and val == sorted(val)
    assert val == splits.draw_validation(TARGETS, 3, labeled, 2, seed=1)
    draws = {tuple(splits.draw_validation(TARGETS, 3, labeled, 2, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed draws


def test_draw_validation_from_the_labeled_set_when_nothing_else_is_labelled():
    targets = [0, 0, 0, 1, 1, 1, -1, -1]  # ImageFolder: the unlabeled folder has no labels
    val = splits.draw_validation(targets, 2, list(range(6)), 2, seed=0)
    assert [sum(targets[i] == k for i in val) for k in range(2)] == [2, 2]
    with pytest.raises(UserError, match="DATA.NUM_VAL 3: class 0 .* lower DATA.NUM_VAL"):
        splits.draw_validation(targets, 2, list(range(6)), 3, seed=0)  # one must stay


def test_hash_without_validation_is_the_released_one():
    assert splits.split_hash([1], [1, 2]) == splits.split_hash([1], [1, 2], None, [])
    assert splits.split_hash([1], [1, 2]) != splits.split_hash([1], [1, 2], None, [3])


def test_build_data_holds_the_validation_split_out_and_lists_it(cifar10_root, tmp_path):
    plain = loaders.build_data(make_cfg(cifar10_root), 32, None)
    assert plain.val is None and plain.val_idx is None
    bundle = loaders.build_data(make_cfg(cifar10_root, num_val=3), 32, str(tmp_path), seed=4)
    val = bundle.val_idx
    assert len(val) == 30 and len(bundle.val) == 30
    assert not set(val) & set(bundle.labeled_idx) and not set(val) & set(bundle.unlabeled_idx)
    assert bundle.labeled_idx == plain.labeled_idx  # CIFAR has labelled images to spare
    assert set(bundle.unlabeled_idx) == set(plain.unlabeled_idx) - set(val)
    image, label = bundle.val[0]
    assert image.shape[-1] == 32 and label == bundle.val.raw.train_targets[val[0]]
    record = json.load(open(os.path.join(tmp_path, "split.json")))
    assert record["val"] == val and record["val_per_class"] == [3] * 10
    assert record["meta"]["NUM_VAL"] == 3 and record["meta"]["val_seed"] == 4
    assert record["sha256"] == bundle.split_hash == splits.split_hash(
        bundle.labeled_idx, bundle.unlabeled_idx, None, val)
    other = loaders.build_data(make_cfg(cifar10_root, num_val=3), 32, None, seed=5)
    assert other.val_idx != val and other.split_hash != bundle.split_hash


def test_image_folder_validation_comes_from_its_labeled_folder(tmp_path):
    root = write_image_folder(str(tmp_path / "images"), bad_files=False)
    bundle = loaders.build_data(make_cfg(root, "ImageFolder", num_val=1), 32, None, seed=0)
    assert len(bundle.val_idx) == 3
    assert len(bundle.labeled_idx) == 3 * (FOLDER_LABELED_PER_CLASS - 1)
    assert not set(bundle.val_idx) & set(bundle.unlabeled_idx)


def test_signal_subset_is_fixed_and_spread():
    assert loaders.signal_indices(list(range(10, 20)), 5) == [10, 12, 14, 16, 18]
    assert loaders.signal_indices([3, 4], 5) == [3, 4] and loaders.signal_indices([3], 0) == []
