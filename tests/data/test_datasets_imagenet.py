"""ImageNet 1 % / 10 % (``DATA.NAME semi_ImageNet``) on a generated ILSVRC2012 tree:
classes, list files, the seeded ratio subset, the released switches, the file-index
cache, missing files, and the released YAML through main.py."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import yaml

from conftest import REPO, TINY_VIT, main_inprocess
from fakedata import write_fake_imagenet
from finessl.config import INERT_KEYS
from finessl.data import datasets, file_index, loaders
from finessl.errors import UserError
from helpers import one_line_error, released_yaml
from finessl.config_load import load_config

PER_CLASS, VAL_PER_CLASS, CLASSES = 6, 2, 10

# The authors' released configs/peft/semi_imagenet.yaml (Gank0078/FineSSL), verbatim.
AUTHORS_SEMI_IMAGENET = released_yaml("semi_imagenet.yaml")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("imagenet"))
    return root, write_fake_imagenet(root, CLASSES, PER_CLASS, VAL_PER_CLASS)


def load(root, *opts):
    cfg = load_config(None, ["DATA.NAME", "semi_ImageNet", "DATA.DATAPATH", root,
                             "IMAGENET.INDEX_CACHE", "", *map(str, opts)])
    return datasets.load_dataset("semi_ImageNet", root, False, cfg)


def paths(images):
    return [images.path(i) for i in range(len(images))]


def test_list_file_labels_exactly_the_listed_files_and_everything_is_unlabeled(tree):
    root, info = tree
    raw = load(root, "IMAGENET.LABEL_FILE", "10percent.txt")
    assert raw.classnames == info["wnids"]  # sorted wnids, not the order they were made in
    train = paths(raw.train_images)
    assert len(train) == CLASSES * PER_CLASS  # .DS_Store and notes.txt are not images
    assert all(os.path.basename(os.path.dirname(p)) == raw.classnames[t]
               for p, t in zip(train, raw.train_targets))
    labeled, unlabeled = raw.fixed_split
    assert sorted(os.path.basename(train[i]) for i in labeled) == \
        sorted(info["lists"]["10percent.txt"])
    assert len(labeled) == 2 * CLASSES and unlabeled == list(range(CLASSES * PER_CLASS))
    test = paths(raw.test_images)
    assert len(test) == CLASSES * VAL_PER_CLASS
    assert all(p.startswith(os.path.join(root, "val")) for p in test)
    assert all(os.path.basename(os.path.dirname(p)) == raw.classnames[t]
               for p, t in zip(test, raw.test_targets))
    assert not set(test) & {train[i] for i in unlabeled}  # the default test set is apart
    assert raw.mean == (0.485, 0.456, 0.406) and raw.std == (0.229, 0.224, 0.225)
    assert np.asarray(raw.train_images[labeled[0]]).shape == (16, 16, 3)


def test_ratio_subset_is_seeded_per_class_and_rounds_with_at_least_one(tree):
    root, _ = tree
    raw = load(root, "DATA.LABEL_RATIO", 0.34)  # round(6 * 0.34) = 2 per class
    labeled = raw.fixed_split[0]
    assert np.bincount([raw.train_targets[i] for i in labeled]).tolist() == [2] * CLASSES
    assert load(root, "DATA.LABEL_RATIO", 0.34).fixed_split[0] == labeled  # deterministic
    other = load(root, "DATA.LABEL_RATIO", 0.34, "IMAGENET.SPLIT_SEED", 1).fixed_split[0]
    assert other != labeled and len(other) == len(labeled)
    assert len(load(root, "DATA.LABEL_RATIO", 0.01).fixed_split[0]) == CLASSES  # max(1, 0)
    assert len(load(root, "DATA.LABEL_RATIO", 1.0).fixed_split[0]) == CLASSES * PER_CLASS


def test_released_list_names_follow_label_ratio(tree):
    root, info = tree
    for ratio, name in ((0.01, "99percent.txt"), (0.1, "90percent.txt")):
        raw = load(root, "IMAGENET.RELEASED_LISTS", True, "DATA.LABEL_RATIO", ratio)
        got = sorted(os.path.basename(raw.train_images.path(i)) for i in raw.fixed_split[0])
        assert got == sorted(info["lists"][name])
    with pytest.raises(UserError, match=r"^IMAGENET.RELEASED_LISTS True reads .* got 0.05$"):
        load(root, "IMAGENET.RELEASED_LISTS", True, "DATA.LABEL_RATIO", 0.05)


def test_released_test_set_is_read_from_train_and_overlaps_the_unlabeled_set(tree, caplog):
    root, info = tree
    raw = load(root, "IMAGENET.TEST_FROM_TRAIN", True)
    test = paths(raw.test_images)
    assert sorted(os.path.basename(p) for p in test) == sorted(info["lists"]["val.txt"])
    assert all(os.path.basename(os.path.dirname(p)) == raw.classnames[t]
               for p, t in zip(test, raw.test_targets))
    assert set(test) <= set(paths(raw.train_images))  # the released transductive overlap
    assert "also in the unlabeled set" in caplog.text


def test_build_data_splits_and_records_the_index(tree, tmp_path):
    root, _ = tree
    cfg = load_config(None, ["DATA.NAME", "semi_ImageNet", "DATA.DATAPATH", root,
                             "IMAGENET.LABEL_FILE", "1percent.txt", "IMAGENET.INDEX_CACHE", "",
                             "DATA.NUMBER_CLASSES", str(CLASSES)])
    bundle = loaders.build_data(cfg, 32, str(tmp_path))
    assert (len(bundle.labeled), len(bundle.unlabeled), len(bundle.test)) == \
        (CLASSES, CLASSES * PER_CLASS, CLASSES * VAL_PER_CLASS)
    split = json.load(open(tmp_path / "split.json"))
    assert split["labeled_per_class"] == [1] * CLASSES
    assert split["unlabeled_per_class"] == [PER_CLASS] * CLASSES
    assert split["meta"]["labeled_from"] == os.path.join(root, "1percent.txt")
    assert len(split["meta"]["train_index_sha256"]) == 64
    assert bundle.unlabeled_targets.min() >= 0  # every ImageNet train label is known


def test_index_cache_is_reused_until_a_class_folder_changes(tmp_path, monkeypatch):
    root = str(tmp_path / "tree")
    write_fake_imagenet(root, 3, 4, 1, seed=3)
    cache, train = str(tmp_path / "cache"), os.path.join(root, "train")
    first = file_index.class_tree(train, cache_dir=cache)
    assert len(first) == 12 and len(os.listdir(cache)) == 1

    def no_listing(*args):
        raise AssertionError("listed again")

    with monkeypatch.context() as m:
        m.setattr(file_index, "scan", no_listing)
        again = file_index.class_tree(train, cache_dir=cache)
    assert again.classes == first.classes and (again.names == first.names).all()
    wnid = first.classes[1]
    stat = os.stat(os.path.join(train, wnid))
    open(os.path.join(train, wnid, f"{wnid}_new.JPEG"), "wb").close()
    os.utime(os.path.join(train, wnid), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = file_index.class_tree(train, cache_dir=cache)
    assert len(changed) == 13 and changed.counts().tolist() == [4, 5, 4]
    assert f"{wnid}_new.JPEG".encode() in changed.names.tolist()


def test_missing_data_is_one_line_naming_the_file_and_where_to_get_it(tree, tmp_path):
    root, info = tree
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    one_line_error(lambda: load(empty), names=(os.path.join(empty, "train"), "image-net.org"))
    one_line_error(lambda: load(root, "IMAGENET.LABEL_FILE", "2percent.txt"),
                   names=(os.path.join(root, "2percent.txt"), "SimCLR", "imagenet_subsets"))
    wrong = tmp_path / "wrong.txt"
    first = info["lists"]["1percent.txt"][0]
    wrong.write_text(f"{first}\n{first.split('_')[0]}_999999.JPEG\n")
    one_line_error(lambda: load(root, "IMAGENET.LABEL_FILE", str(wrong)),
                   names=(f"{wrong} line 2", "_999999.JPEG",
                          os.path.join(root, "train", first.split("_")[0])))
    no_val = str(tmp_path / "no_val")
    os.makedirs(os.path.join(no_val, "train", "n00000001"))
    open(os.path.join(no_val, "train", "n00000001", "n00000001_1.JPEG"), "wb").close()
    one_line_error(lambda: load(no_val), names=(os.path.join(no_val, "val"), "image-net.org"))


def test_released_yaml_loads_unchanged_and_its_dead_keys_warn_once(tmp_path, caplog):
    path = tmp_path / "semi_imagenet.yaml"
    path.write_text(AUTHORS_SEMI_IMAGENET)
    cfg = load_config(str(path))
    assert "DATA.LABEL_RATIO" not in INERT_KEYS and cfg.DATA.LABEL_RATIO == 0.01
    assert (cfg.DATA.NAME, cfg.DATA.NUMBER_CLASSES, cfg.DATA.BATCH_SIZE) == \
        ("semi_ImageNet", 1000, 16)
    assert cfg.total_steps == 500 and cfg.vpt_deep is False and cfg.lora_dim == 8
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert sorted(warnings[0].split(": ", 1)[1].split(", ")) == \
        ["batch_size", "dataset", "resolution", "root", "stride", "tau"]


@pytest.mark.parametrize("name, ratio, listed, top1", [
    ("imagenet_1p", 0.01, "1percent.txt", 74.22), ("imagenet_10p", 0.1, "10percent.txt", 79.21)])
def test_shipped_configs(name, ratio, listed, top1):
    path = os.path.join(REPO, "configs", "peft", f"{name}.yaml")
    cfg = load_config(path)
    assert (cfg.DATA.NAME, cfg.DATA.NUMBER_CLASSES, cfg.DATA.MU_U, cfg.DATA.BATCH_SIZE) == \
        ("semi_ImageNet", 1000, 2, 16)
    assert (cfg.DATA.LABEL_RATIO, cfg.IMAGENET.LABEL_FILE, cfg.paper_top1) == (ratio, listed, top1)
    assert cfg.vpt_deep is True and cfg.IMAGENET.TEST_FROM_TRAIN is False
    assert yaml.safe_load(open(path))["output_dir"] == "out/{config}/{algorithm}/seed{seed}"


@pytest.mark.slow
def test_released_yaml_trains_through_main(tmp_path):
    root = str(tmp_path / "imagenet")
    write_fake_imagenet(root, 1000, 2, 1, seed=1)  # the YAML's 1000 classes
    path = tmp_path / "semi_imagenet.yaml"
    path.write_text(AUTHORS_SEMI_IMAGENET)
    out = str(tmp_path / "run")
    code, _, err = main_inprocess([
        "--cfg", str(path), "DATA.DATAPATH", root, "IMAGENET.LABEL_FILE", "1percent.txt",
        "IMAGENET.INDEX_CACHE", str(tmp_path / "cache"), "DATA.BATCH_SIZE", "8",
        "backbone", TINY_VIT, "pretrained", "none", "prec", "fp32", "num_epochs", "1",
        "total_steps", "3", "num_workers", "0", "seed", "1", "output_dir", out,
        "DATA.NUM_TEST", "200"])
    assert code == 0, err
    result = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= result["last_top1"] <= 1.0
    split = json.load(open(os.path.join(out, "split.json")))
    assert len(split["labeled"]) == 1000 and len(split["unlabeled"]) == 2000
    assert os.listdir(tmp_path / "cache")  # the index was cached where the key said
