"""Tests of finessl.data: splits, dataset files, views and loaders (CPU, seconds)."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fakedata import class_pattern, write_fake_cifar
from finessl.data import datasets, loaders, splits, transforms
from finessl.errors import UserError
from helpers import data_cfg

CROP = 32


# ---- splits ----------------------------------------------------------------

def test_class_counts_long_tailed_by_hand():
    # mu = 100**(-1/9) = 0.5995; 100 * mu**i = 100, 59.9, 35.9, 21.5, 12.9, 7.7,
    # 4.6, 2.8, 1.7; the last class is 100 / 100.
    assert splits.class_counts(100, 10, 100) == [100, 59, 35, 21, 12, 7, 4, 2, 1, 1]


def test_class_counts_balanced_and_single_class():
    assert splits.class_counts(4, 3, 1.0) == [4, 4, 4]
    assert splits.class_counts(7, 1, 10.0) == [7]


def test_class_counts_reversed_and_minus_one():
    # USB's r_ulb < 0: the same profile, largest class last; -1 is balanced.
    assert splits.class_counts(100, 10, -100) == [1, 1, 2, 4, 7, 12, 21, 35, 59, 100]
    assert splits.class_counts(5, 3, -1.0) == [5, 5, 5]


def test_reversed_unlabeled_split_counts():
    targets = [k for _ in range(10) for k in range(3)]
    labeled, unlabeled = splits.make_split(targets, 3, num_l=4, num_u=6, imb_l=4, imb_u=-6)
    per_class = lambda idx: [sum(targets[i] == k for i in idx) for k in range(3)]
    assert per_class(labeled) == [4, 2, 1]
    assert per_class(unlabeled) == [5, 4, 7]  # l_k + u_k with u = [1, 2, 6]


def test_balanced_split_takes_first_images_of_each_class():
    targets = [0, 1, 2, 0, 1, 2, 2, 1, 0, 0, 1, 2, 0, 1, 2]
    labeled, unlabeled = splits.make_split(targets, 3, num_l=1, num_u=3, imb_l=1, imb_u=1)
    assert labeled == [0, 1, 2]
    assert unlabeled == [0, 3, 8, 9, 1, 4, 7, 10, 2, 5, 6, 11]
    assert set(labeled) <= set(unlabeled)


def test_long_tailed_split_counts():
    targets = [k for _ in range(10) for k in range(3)]
    labeled, unlabeled = splits.make_split(targets, 3, num_l=4, num_u=6, imb_l=4, imb_u=6)
    per_class = lambda idx: [sum(targets[i] == k for i in idx) for k in range(3)]
    assert per_class(labeled) == [4, 2, 1]
    assert per_class(unlabeled) == [10, 4, 2]  # l_k + u_k with u = [6, 2, 1]


def test_split_asking_too_many_labels_names_the_key():
    with pytest.raises(UserError, match=r"DATA\.NUM_L"):
        splits.make_split([0, 0, 1], 2, num_l=2, num_u=1, imb_l=1, imb_u=1)


def test_unlabeled_set_takes_all_a_class_has_when_asked_for_more():
    # CIFAR-100 N4 asks for 4 + 500 of a class's 500 images, as the released configs do.
    targets = [0, 1] * 5
    labeled, unlabeled = splits.make_split(targets, 2, num_l=2, num_u=500, imb_l=1, imb_u=1)
    assert labeled == [0, 2, 1, 3]
    assert unlabeled == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]


def test_num_u_none_makes_the_whole_training_set_unlabeled():
    # Food-101's released pool (DATA.UNLABELED all): every training image, in order.
    targets = [1, 0, 1, 0, 2, 2]
    labeled, unlabeled = splits.make_split(targets, 3, num_l=1, num_u=None, imb_l=1, imb_u=1)
    assert labeled == [1, 0, 4] and unlabeled == list(range(6))


def test_split_and_hash_are_deterministic():
    targets = [i % 5 for i in range(100)]
    first = splits.make_split(targets, 5, 3, 10, 1, 1)
    assert first == splits.make_split(targets, 5, 3, 10, 1, 1)
    assert splits.split_hash(*first) == splits.split_hash(*first)
    assert splits.split_hash(*first) != splits.split_hash(first[0], first[1][:-1])


def test_save_split_writes_json_atomically(tmp_path):
    targets = [0, 1, 0, 1, 1]
    path = str(tmp_path / "run" / "split.json")
    meta = {"dataset": "toy", "NUM_L": 1}
    digest = splits.save_split(path, [0, 1], [0, 2, 1, 3], meta, targets, 2)
    with open(path) as f:
        record = json.load(f)
    assert record == {
        "labeled": [0, 1], "unlabeled": [0, 2, 1, 3],
        "labeled_per_class": [1, 1], "unlabeled_per_class": [2, 2],
        "meta": meta, "sha256": digest,
    }
    assert digest == splits.split_hash([0, 1], [0, 2, 1, 3])
    assert splits.save_split(path, [0, 1], [0, 2, 1, 3], meta, targets, 2) == digest
    assert os.listdir(tmp_path / "run") == ["split.json"]  # no temp file left behind


# ---- datasets --------------------------------------------------------------

@pytest.mark.parametrize("name, expected, url", [
    ("cifar-10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    ("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz"),
    ("food101", "food-101", "food-101.tar.gz"),
])
def test_missing_dataset_says_where_and_from_where(tmp_path, name, expected, url):
    with pytest.raises(UserError) as info:
        datasets.load_dataset(name, str(tmp_path), download=False)
    message = str(info.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), expected) in message
    assert url in message and "DATA.DATAPATH" in message


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(UserError, match=r"DATA\.NAME.*CIFAR10.*CIFAR100.*FOOD101"):
        datasets.load_dataset("mnist", str(tmp_path), download=False)


def test_fake_cifar10_round_trip(cifar10_root):
    raw = datasets.load_dataset("CIFAR10", cifar10_root, download=False)
    assert raw.classnames[:3] == ["airplane", "automobile", "bird"]
    assert (raw.num_train, raw.num_test) == (120, 30)
    assert sorted(np.bincount(raw.train_targets)) == [12] * 10
    for i in range(5):
        img = raw.train_image(i)
        assert img.mode == "RGB" and img.size == (32, 32)
        pattern = class_pattern(raw.train_targets[i], 10)
        assert np.abs(np.asarray(img, dtype=np.float64) - pattern).mean() < 15


def test_fake_cifar100_round_trip(tmp_path):
    write_fake_cifar(str(tmp_path), "cifar100", num_classes=7,
                     train_per_class=3, test_per_class=2)
    raw = datasets.load_dataset("Cifar-100", str(tmp_path), download=False)
    assert raw.classnames == ["apple", "aquarium fish", "baby", "bear", "beaver",
                              "bed", "bee"]
    assert sorted(np.bincount(raw.test_targets)) == [2] * 7
    assert raw.mean == (0.5071, 0.4867, 0.4408)
    pattern = class_pattern(raw.test_targets[0], 7)
    assert np.abs(np.asarray(raw.test_image(0), dtype=np.float64) - pattern).mean() < 15


def test_food101_layout(tmp_path):
    folder = tmp_path / "food-101"
    classes = ["apple_pie", "baby_back_ribs"]
    for c in classes:
        (folder / "images" / c).mkdir(parents=True)
        for j in range(2):
            Image.new("L", (40, 30), 50 * j).save(folder / "images" / c / f"{j}.jpg")
    (folder / "meta").mkdir()
    (folder / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    split = {"baby_back_ribs": ["baby_back_ribs/0", "baby_back_ribs/1"],
             "apple_pie": ["apple_pie/1"]}
    (folder / "meta" / "train.json").write_text(json.dumps(split))
    (folder / "meta" / "test.json").write_text(json.dumps({"apple_pie": ["apple_pie/0"]}))
    raw = datasets.load_dataset("Food-101", str(tmp_path), download=False)
    assert raw.classnames == ["apple pie", "baby back ribs"]
    assert raw.train_targets == [1, 1, 0] and raw.test_targets == [0]
    assert raw.train_image(0).mode == "RGB" and raw.train_image(0).size == (40, 30)


def test_wrong_number_classes_names_the_key(cifar10_root):
    with pytest.raises(UserError, match=r"DATA\.NUMBER_CLASSES is 100 .* 10 classes"):
        loaders.build_data(data_cfg(cifar10_root, NUMBER_CLASSES=100), CROP, None)


# ---- transforms ------------------------------------------------------------

@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.clip(class_pattern(3, 10), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name, op", transforms.RANDAUGMENT_POOL,
                         ids=[n for n, _ in transforms.RANDAUGMENT_POOL])
@pytest.mark.parametrize("v", [1, 9])
def test_randaugment_op_keeps_a_valid_image(image, name, op, v):
    out = op(image, v, random.Random(0))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == image.size


def test_views_shapes_and_strong_views_differ(image):
    views = transforms.ViewMaker(CROP)
    weak_view, strong1, strong2 = views.unlabeled(image, random.Random(1))
    assert weak_view.shape == strong1.shape == (3, CROP, CROP)
    assert views.labeled(image, random.Random(1)).shape == (3, CROP, CROP)
    assert views.test(image).shape == (3, CROP, CROP)
    assert not torch.equal(strong1, strong2)


def test_cutout_paints_grey(image):
    grey = np.asarray(transforms.cutout(image, random.Random(3))) == 127
    assert grey.all(axis=2).any()


# ---- loaders ---------------------------------------------------------------

@pytest.mark.parametrize("replay", [False, True])
def test_epoch_sampler_is_a_function_of_seed_epoch_stream(replay):
    def draw(seed=0, epoch=0, stream=0):
        sampler = loaders.EpochSampler(7, 20, seed, stream, replay=replay)
        sampler.set_epoch(epoch)
        return list(sampler)

    first = draw()
    assert len(first) == 20 and first == draw()
    assert sorted(i for i, _ in first[:7]) == list(range(7))
    assert (first[7:14] == first[:7]) == replay  # replay repeats the first pass
    assert all(0 <= s < 2**63 for _, s in first)
    assert first != draw(epoch=1)
    assert first != draw(stream=1)
    assert first != draw(seed=1)


def test_aug_seed_decides_the_views(cifar10_root):
    bundle = loaders.build_data(data_cfg(cifar10_root), CROP, None)
    a, b, c = bundle.unlabeled[(3, 11)], bundle.unlabeled[(3, 11)], bundle.unlabeled[(3, 12)]
    assert all(torch.equal(x, y) for x, y in zip(a[:3], b[:3]))
    assert not torch.equal(a[1], c[1])
    assert a[3] == 3 and a[4] == bundle.unlabeled.raw.train_targets[bundle.unlabeled_idx[3]]
    assert torch.equal(bundle.labeled[(0, 5)][0], bundle.labeled[(0, 5)][0])
    assert not torch.equal(bundle.labeled[(0, 5)][0], bundle.labeled[(0, 6)][0])


def test_extra_views_leave_the_others_as_they_were(cifar10_root):
    # A labeled strong view (DeFixMatch) and an unlabeled medium view (SequenceMatch)
    # are drawn last from the item's rng: the weak and strong views do not move.
    bundle = loaders.build_data(data_cfg(cifar10_root), CROP, None)
    plain_l, plain_u = bundle.labeled[(2, 7)], bundle.unlabeled[(3, 11)]
    bundle.labeled.strong = bundle.unlabeled.medium = True
    more_l, more_u = bundle.labeled[(2, 7)], bundle.unlabeled[(3, 11)]
    assert len(plain_l) == 3 and len(more_l) == 4 and len(plain_u) == 5 and len(more_u) == 6
    assert torch.equal(more_l[0], plain_l[0]) and more_l[1:3] == plain_l[1:3]
    assert all(torch.equal(a, b) for a, b in zip(more_u[:3], plain_u[:3]))
    strong, medium = more_l[3], more_u[5]
    assert strong.shape == medium.shape == plain_l[0].shape and strong.dtype == torch.uint8
    assert not torch.equal(strong, plain_l[0]) and not torch.equal(medium, plain_u[0])
    # the medium view is the strong recipe with one RandAugment op: same rng, same crop
    views, image = bundle.unlabeled.views, bundle.unlabeled.raw.train_image(
        bundle.unlabeled_idx[3])
    rng = random.Random(11)
    views.unlabeled(image, rng)
    twin = views._strong(transforms.padded(image, CROP), rng, num_ops=1)
    assert torch.equal(twin, medium)


def test_build_data_and_loaders(cifar10_root, tmp_path):
    bundle = loaders.build_data(data_cfg(cifar10_root), CROP, str(tmp_path))
    assert (len(bundle.labeled), len(bundle.unlabeled), bundle.num_classes) == (20, 60, 10)
    with open(tmp_path / "split.json") as f:
        record = json.load(f)
    assert record["sha256"] == bundle.split_hash and record["meta"]["NUM_L"] == 2
    assert record["meta"]["UNLABELED"] == "num_u" and record["meta"]["NUM_U"] == 4

    def epoch_batches(num_workers):
        labeled, unlabeled = loaders.build_train_loaders(
            bundle, batch_size=4, mu=2, steps_per_epoch=3, num_workers=num_workers,
            seed=5, pin_memory=False)
        for loader in (labeled, unlabeled):
            loader.sampler.set_epoch(1)
        return list(labeled), list(unlabeled)

    labeled, unlabeled = epoch_batches(0)
    assert len(labeled) == len(unlabeled) == 3
    x, y, x_idx = labeled[0]
    assert x.shape == (4, 3, CROP, CROP) and y.shape == (4,)
    assert y.tolist() == [bundle.labeled.raw.train_targets[bundle.labeled_idx[p]] for p in x_idx]
    weak_view, strong1, strong2, position, label = unlabeled[0]
    assert weak_view.shape == strong2.shape == (8, 3, CROP, CROP) and position.shape == (8,)
    truth = [bundle.unlabeled.raw.train_targets[bundle.unlabeled_idx[p]] for p in position]
    assert label.tolist() == truth
    # Two workers build the very same batches: augmentation depends on seeds only.
    labeled2, unlabeled2 = epoch_batches(2)
    assert torch.equal(labeled[2][0], labeled2[2][0])
    assert torch.equal(unlabeled[1][2], unlabeled2[1][2])

    test_batches = list(loaders.build_test_loader(bundle, batch_size=16, num_workers=0))
    assert sum(len(b[1]) for b in test_batches) == 30


# ---- the transform distribution (docs/method.md §2) -----------------------------------

def _coordinate_image(side=32):
    """Each pixel encodes its (row, col), so a crop's origin and flip can be read back."""
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return np.stack([rows * 8, cols * 8, np.zeros_like(rows)], axis=2).astype(np.uint8)


def test_weak_view_crop_offsets_cover_the_padded_image_and_flip_half_the_time():
    crop = 32
    base = transforms.padded(Image.fromarray(_coordinate_image()), crop)
    pad = int(crop * 0.125)
    assert base.shape == (round(crop * 256 / 224) + 2 * pad,) * 2 + (3,)
    tops, flips = set(), 0
    for seed in range(2000):
        rng = random.Random(seed)
        window = transforms._crop_flip(base, rng, crop)
        assert window.shape == (crop, crop, 3)
        rng = random.Random(seed)
        tops.add(rng.randint(0, base.shape[0] - crop))
        rng.randint(0, base.shape[1] - crop)
        flips += rng.random() < 0.5
    assert tops == set(range(base.shape[0] - crop + 1))
    assert 900 < flips < 1100


def test_rand_augment_draws_two_ops_with_replacement_magnitudes_1_to_9_each_at_p_half(
        monkeypatch):
    calls = []
    pool = tuple((name, (lambda name: lambda img, v, rng: calls.append((name, v)) or img)(name))
                 for name, _ in transforms.RANDAUGMENT_POOL)
    monkeypatch.setattr(transforms, "RANDAUGMENT_POOL", pool)
    img = Image.new("RGB", (8, 8))
    for seed in range(3000):
        transforms.rand_augment(img, random.Random(seed))
    assert {v for _, v in calls} == set(range(1, 10))
    assert {name for name, _ in calls} == {name for name, _ in pool}
    assert 2800 < len(calls) < 3200  # 2 ops x p=0.5 x 3000 images


def test_random_side_cutout_is_at_most_half_the_image():
    """DATA.CUTOUT -1: FixMatch's random side, uniform(0, 0.5) x the image side."""
    img = Image.new("RGB", (64, 64), (0, 0, 0))
    sides = []
    for seed in range(500):
        grey = (np.asarray(transforms.cutout(img, random.Random(seed), -1))[..., 0] == 127)
        rows, cols = np.nonzero(grey)
        if len(rows):
            sides.append(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)
    assert max(sides) <= 33 and max(sides) >= 28
    assert len(set(sides)) > 20  # a spread of sides, not the fixed 17 px of the default


def test_cutout_zero_paints_nothing(image):
    assert np.array_equal(np.asarray(transforms.cutout(image, random.Random(0), 0)),
                          np.asarray(image))
