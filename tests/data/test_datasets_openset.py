"""Open-set CIFAR-100 (``DATA.NAME CIFAR100_OpenSet``): 50 seen classes with N labels,
the other 50 only unlabeled (true label -2), test on the seen classes; on a generated
CIFAR-100 in its real pickle format, and the shipped configs through main.py."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from conftest import REPO, TINY_VIT, main_inprocess
from fakedata import CIFAR100_NAMES, write_fake_cifar
from finessl.data import datasets, loaders
from finessl.errors import UserError
from finessl.config_load import load_config

TRAIN, TEST = 8, 3  # images per class in the fake CIFAR-100
CONFIGS = os.path.join(REPO, "configs", "openset")


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return write_fake_cifar(str(tmp_path_factory.mktemp("c100")), "cifar100",
                            train_per_class=TRAIN, test_per_class=TEST, seed=2)


def load(root, *opts):
    cfg = load_config(None, ["DATA.NAME", "CIFAR100_OpenSet", *map(str, opts)])
    return datasets.load_dataset("CIFAR100_OpenSet", root, False, cfg), cfg


def test_seen_classes_are_labeled_the_unseen_only_unlabeled_as_minus_two(cifar100):
    raw, _ = load(cifar100, "DATA.NUM_L", 5, "DATA.NUM_U", 2)
    full = datasets.load_dataset("CIFAR100", cifar100, False)
    assert raw.classnames == [n.replace("_", " ") for n in CIFAR100_NAMES[:50]]
    labeled, unlabeled = raw.fixed_split
    # labeled: the first 5 of each seen class, in file order
    first = {k: [i for i, t in enumerate(full.train_targets) if t == k] for k in range(100)}
    assert labeled == [i for k in range(50) for i in first[k][:5]]
    assert Counter(raw.train_targets[i] for i in labeled) == {k: 5 for k in range(50)}
    # unlabeled: first 5 + 2 of each seen class, then the first 2 of each unseen class
    assert unlabeled == [i for k in range(50) for i in first[k][:7]] + \
        [i for k in range(50, 100) for i in first[k][:2]]
    truth = Counter(raw.train_targets[i] for i in unlabeled)
    assert truth[-2] == 50 * 2 and all(truth[k] == 7 for k in range(50))
    assert raw.train_targets == [-2 if t >= 50 else t for t in full.train_targets]
    # test: the seen classes only, labels unchanged (0..49), same pixels
    assert Counter(raw.test_targets) == {k: TEST for k in range(50)}
    seen_test = [i for i, t in enumerate(full.test_targets) if t < 50]
    assert (raw.test_images.array == full.test_images.array[seen_test]).all()
    assert raw.mean == (0.5071, 0.4867, 0.4408)


def test_num_u_500_and_unlabeled_all_take_every_training_image(cifar100):
    for opts in (("DATA.NUM_U", 500), ("DATA.UNLABELED", "all")):
        raw, _ = load(cifar100, "DATA.NUM_L", 5, *opts)
        assert sorted(raw.fixed_split[1]) == list(range(100 * TRAIN))


def test_build_data_counts_the_unseen_images_in_the_last_bin(cifar100, tmp_path):
    _, cfg = load(cifar100, "DATA.DATAPATH", cifar100, "DATA.NUM_L", 5,
                  "DATA.NUMBER_CLASSES", 50)
    bundle = loaders.build_data(cfg, 32, str(tmp_path))
    assert (bundle.num_classes, len(bundle.labeled), len(bundle.unlabeled), len(bundle.test)) \
        == (50, 250, 800, 150)
    assert int((bundle.unlabeled_targets == -2).sum()) == 50 * TRAIN
    split = json.load(open(tmp_path / "split.json"))
    assert split["unlabeled_per_class"] == [TRAIN] * 50 + [50 * TRAIN]
    assert split["meta"]["seen_classes"] == 50 and split["meta"]["out_of_class"] == 400


def test_seen_classes_setting_and_its_limits(cifar100, tmp_path):
    raw, _ = load(cifar100, "DATA.NUM_L", 2, "OPENSET.SEEN_CLASSES", 10)
    assert len(raw.classnames) == 10 and set(raw.test_targets) == set(range(10))
    assert sum(t == -2 for t in raw.train_targets) == 90 * TRAIN
    with pytest.raises(UserError, match=r"^OPENSET.SEEN_CLASSES: must lie in 1..99"):
        load(cifar100, "OPENSET.SEEN_CLASSES", 100)
    small = write_fake_cifar(str(tmp_path), "cifar100", num_classes=20, train_per_class=2,
                             test_per_class=1)
    with pytest.raises(UserError, match=r"^OPENSET.SEEN_CLASSES 50: .* only 20 CIFAR-100"):
        load(small, "DATA.NUM_L", 1)
    with pytest.raises(UserError, match=r"DATA\.NUM_L"):  # 8 images cannot give 10 labels
        load(cifar100, "DATA.NUM_L", 10)


@pytest.mark.parametrize("n", [5, 10])
def test_shipped_configs(n):
    cfg = load_config(os.path.join(CONFIGS, f"cifar100_seen50_N{n}.yaml"))
    assert (cfg.DATA.NAME, cfg.DATA.NUMBER_CLASSES, cfg.DATA.NUM_L, cfg.DATA.NUM_U) == \
        ("CIFAR100_OpenSet", 50, n, 500)
    assert cfg.OPENSET.SEEN_CLASSES == 50 and cfg.vpt_deep is True
    assert cfg.output_dir == f"out/cifar100_seen50_N{n}/{{algorithm}}/seed{{seed}}"


@pytest.mark.slow
def test_shipped_config_trains_through_main(cifar100, tmp_path):
    out = str(tmp_path / "run")
    code, _, err = main_inprocess([
        "--cfg", os.path.join(CONFIGS, "cifar100_seen50_N5.yaml"), "DATA.DATAPATH", cifar100,
        "DATA.BATCH_SIZE", "8", "backbone", TINY_VIT, "pretrained", "none", "prec", "fp32",
        "vpt_len", "4", "num_epochs", "1", "total_steps", "3", "num_workers", "0",
        "seed", "1", "output_dir", out])
    assert code == 0, err
    result = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= result["last_top1"] <= 1.0
    split = json.load(open(os.path.join(out, "split.json")))
    assert split["labeled_per_class"] == [5] * 50 + [0]  # the last bin: out of class
    assert split["unlabeled_per_class"] == [TRAIN] * 50 + [50 * TRAIN]
