"""Tests of ``DATA.NAME ImageFolder`` (finessl.data.folder): layout, class names,
counts, the fixed split, and bad files skipped and reported by path (CPU, seconds)."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

from fakedata import (FOLDER_CLASSES as CLASSES, FOLDER_LABELED_PER_CLASS as LABELED_PER_CLASS,
                      FOLDER_TEST_PER_CLASS as TEST_PER_CLASS, FOLDER_UNLABELED as UNLABELED,
                      NOT_AN_IMAGE, TRUNCATED, write_image_folder)
from finessl.data import datasets, folder, loaders
from finessl.errors import UserError
from helpers import data_cfg


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("folder")))


def make_cfg(root, num_test=0):
    return data_cfg(root, "ImageFolder", num_l=1, num_u=1, NUM_TEST=num_test)


def test_class_names_counts_and_split(image_root):
    raw = datasets.load_dataset("imagefolder", image_root, download=False)
    assert raw.classnames == ["apple_pie", "bus", "cat"]  # the folder names
    labeled = LABELED_PER_CLASS * len(CLASSES)  # the truncated JPEG is not counted
    assert raw.train_targets[:labeled] == [k for k in range(3) for _ in range(LABELED_PER_CLASS)]
    assert raw.train_targets[labeled:] == [folder.UNKNOWN] * UNLABELED
    assert raw.fixed_split == (list(range(labeled)), list(range(labeled + UNLABELED)))
    assert sorted(np.bincount(raw.test_targets)) == [TEST_PER_CLASS] * 3
    for i in (0, labeled - 1, labeled, raw.num_train - 1):
        img = raw.train_image(i)
        assert img.mode == "RGB" and img.size == (32, 32)


def test_images_at_any_depth_and_any_extension_case(image_root):
    raw = datasets.load_dataset("ImageFolder", image_root, download=False)
    files = raw.split_meta["train_files"]
    assert os.path.join("labeled", "cat", "sub", "1.JPG") in files
    assert os.path.join("unlabeled", "a", "b", "c", "u3.bmp") in files
    assert not any(f.endswith((".txt", ".hidden.jpg")) for f in files)


def test_bad_files_are_skipped_and_reported_by_path(image_root, caplog):
    with caplog.at_level(logging.WARNING):
        raw = datasets.load_dataset("ImageFolder", image_root, download=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for bad in (TRUNCATED, NOT_AN_IMAGE):
        lines = [w for w in warnings if os.path.join(image_root, bad) in w]
        assert len(lines) == 1 and "\n" not in lines[0]
        assert bad not in raw.split_meta["train_files"]
    assert sorted(raw.split_meta["unreadable"]) == sorted([NOT_AN_IMAGE, TRUNCATED])
    assert any("skipped 2 unreadable" in w for w in warnings)


def test_only_the_first_files_are_listed(tmp_path, caplog):
    root = write_image_folder(str(tmp_path), bad_files=False)
    for j in range(folder.MAX_LISTED + 5):
        (tmp_path / "unlabeled" / f"junk{j:02d}.jpg").write_text("junk")
    with caplog.at_level(logging.WARNING):
        raw = datasets.load_dataset("ImageFolder", root, download=False)
    listed = [r for r in caplog.records if "unreadable image skipped" in r.getMessage()]
    assert len(listed) == folder.MAX_LISTED
    assert any(f"skipped {folder.MAX_LISTED + 5} unreadable" in r.getMessage()
               for r in caplog.records)
    assert raw.num_train == LABELED_PER_CLASS * 3 + UNLABELED


def test_file_failing_at_load_time_is_replaced_by_the_next_of_its_class(tmp_path, caplog):
    root = write_image_folder(str(tmp_path), bad_files=False)
    raw = datasets.load_dataset("ImageFolder", root, download=False)
    with open(raw.train_images.paths[1], "wb") as f:  # broken after the scan
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    with caplog.at_level(logging.WARNING):
        img = raw.train_image(1)
    assert raw.train_targets[1] == raw.train_targets[2] == 0
    assert np.array_equal(np.asarray(img), np.asarray(raw.train_image(2)))
    assert any(raw.train_images.paths[1] in r.getMessage() for r in caplog.records)


def test_build_data_writes_split_json_and_ignores_num_l(image_root, tmp_path):
    bundle = loaders.build_data(make_cfg(image_root, num_test=4), 32, str(tmp_path))
    labeled = LABELED_PER_CLASS * 3
    assert (len(bundle.labeled), len(bundle.unlabeled)) == (labeled, labeled + UNLABELED)
    assert (bundle.unlabeled_targets == -1).sum() == UNLABELED
    assert len(bundle.test) == 4
    with open(tmp_path / "split.json") as f:
        record = json.load(f)
    assert record["labeled"] == list(range(labeled))
    assert record["labeled_per_class"] == [LABELED_PER_CLASS] * 3 + [0]
    assert record["unlabeled_per_class"] == [LABELED_PER_CLASS] * 3 + [UNLABELED]
    assert record["meta"]["dataset"] == "ImageFolder"
    assert len(record["meta"]["train_files"]) == labeled + UNLABELED
    weak_view, _, _, _, target = bundle.unlabeled[(labeled, 3)]
    assert weak_view.shape == (3, 32, 32) and target == -1
    batch = next(iter(loaders.build_test_loader(bundle, batch_size=16, num_workers=0)))
    assert batch[0].dtype == torch.uint8 and len(batch[1]) == 4


@pytest.mark.parametrize("remove, needle", [
    ("test", "no test folder"),
    ("labeled", "no class folders"),
])
def test_layout_errors_are_one_line(tmp_path, remove, needle):
    root = write_image_folder(str(tmp_path), bad_files=False)
    os.rename(os.path.join(root, remove), os.path.join(root, remove + ".moved"))
    with pytest.raises(UserError, match=needle) as info:
        datasets.load_dataset("ImageFolder", root, download=False)
    assert "\n" not in str(info.value) and os.path.join(root, remove) in str(info.value)


def test_test_class_missing_from_labeled_is_named(tmp_path):
    root = write_image_folder(str(tmp_path), bad_files=False)
    os.makedirs(os.path.join(root, "test", "dog"))
    with pytest.raises(UserError, match="dog"):
        datasets.load_dataset("ImageFolder", root, download=False)


def test_missing_datapath_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a folder.*labeled/<class>"):
        datasets.load_dataset("ImageFolder", str(tmp_path / "nope"), download=False)
