"""The data pipeline against the released behaviour (docs/method.md §2), measured:
views against torchvision's transforms, Cutout and RandAugment parameters read off
generated images or the PIL calls they make, the per-epoch replay of the released
``itertools.cycle`` loop, and Food-101 against torchvision's ``Food101``."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from fakedata import write_fake_cifar, write_fake_food101
from finessl.config import get_cfg_defaults
from finessl.data import base, datasets, loaders, transforms

CLIP = (base.CLIP_MEAN, base.CLIP_STD)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _noise(h, w, seed=0):
    """Random RGB pixels, none of them 127 (so only Cutout paints 127)."""
    values = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(np.where(values >= 127, values + 1, values).astype(np.uint8))


def _hwc(view: torch.Tensor) -> np.ndarray:
    return view.permute(1, 2, 0).numpy()


def _has_block(mask: np.ndarray, h: int, w: int) -> bool:
    """Whether ``mask`` holds an all-True h x w rectangle."""
    c = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]
    return bool((sums == h * w).any())


def _cfg(root, name="CIFAR10", **data):
    cfg = get_cfg_defaults()
    cfg.DATA.update(NAME=name, DATAPATH=str(root), DOWNLOAD=False, **data)
    return cfg


# ---- views (A) -----------------------------------------------------------------

@pytest.mark.parametrize("size", [(32, 32), (500, 300), (300, 517), (512, 384)])
def test_padded_and_test_view_equal_torchvision(size):
    """Resize(256) + reflect Pad(28), and the Resize((224, 224)) test view, on PIL:
    max difference 0 grey levels (500 x 300 is where round() would give 427, not
    torchvision's truncated 426)."""
    img = _noise(size[1], size[0], seed=size[0])
    ours = transforms.padded(img, 224)
    ref = np.asarray(T.Pad(28, padding_mode="reflect")(T.Resize(256)(img)))
    assert ours.shape == ref.shape and np.array_equal(ours, ref)
    squash = transforms.ViewMaker(224).test(img)
    assert squash.shape == (3, 224, 224)
    assert np.array_equal(_hwc(squash), np.asarray(T.Resize((224, 224))(img)))


def test_weak_views_are_224_windows_of_torchvision_padded_image():
    img = _noise(32, 32)  # CIFAR-sized
    ref = np.asarray(T.Pad(28, padding_mode="reflect")(T.Resize(256)(img)))
    windows = np.lib.stride_tricks.sliding_window_view(ref, (4, 4, 3))[:89, :89, 0]
    views, tops, flips = transforms.ViewMaker(224), set(), 0
    for seed in range(60):
        view = _hwc(views.labeled(img, random.Random(seed)))
        assert view.shape == (224, 224, 3)
        found = [(t, le, flip) for flip in (False, True)
                 for cand in [view[:, ::-1] if flip else view]
                 for t, le in zip(*np.nonzero((windows == cand[:4, :4]).all(axis=(2, 3, 4))))
                 if np.array_equal(ref[t:t + 224, le:le + 224], cand)]
        assert len(found) == 1
        tops.add(found[0][0])
        flips += found[0][2]
    assert 15 < flips < 45 and len(tops) > 30 and max(tops) <= 88


def test_cutout_is_a_17px_grey_square_as_cutoutabs_draws_it():
    black = Image.new("RGB", (224, 224))
    x0s, full = set(), 0
    for seed in range(4000):
        out = np.asarray(transforms.cutout(black, random.Random(seed)))
        rng = random.Random(seed)  # CutoutAbs(img, 16), transcribed, PIL's inclusive box
        cx, cy = rng.uniform(0, 224), rng.uniform(0, 224)
        x0, y0 = int(max(0, cx - 8)), int(max(0, cy - 8))
        x1, y1 = int(min(224, x0 + 16)), int(min(224, y0 + 16))
        expected = np.zeros((224, 224, 3), np.uint8)
        expected[y0:y1 + 1, x0:x1 + 1] = 127
        assert np.array_equal(out, expected)
        rows, cols = np.nonzero(out[..., 0])
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert width == min(17, 224 - cols.min()) and height == min(17, 224 - rows.min())
        x0s.add(int(cols.min()))
        full += (height, width) == (17, 17)
    assert x0s == set(range(216))  # left edge: shifted inward, still 17 px wide
    assert abs(full / 4000 - (216 / 224) ** 2) < 0.02


def test_every_strong_view_carries_the_cutout_and_views_are_224():
    img, views = _noise(32, 32, seed=1), transforms.ViewMaker(224)
    full = edge = 0
    for seed in range(100):
        weak, *strong = views.unlabeled(img, random.Random(seed))
        assert weak.shape == (3, 224, 224)
        assert not _has_block((_hwc(weak) == 127).all(axis=2), 9, 9)
        for view in strong:
            assert view.shape == (3, 224, 224)
            mask = (_hwc(view) == 127).all(axis=2)
            assert not _has_block(mask, 18, 17) and not _has_block(mask, 17, 18)
            if _has_block(mask, 17, 17):
                full += 1
            else:  # clipped by the right or bottom edge
                assert _has_block(mask[:, -9:], 9, 9) or _has_block(mask[-9:], 9, 9)
                edge += 1
    assert full > 170 and edge > 0
    no_cutout = transforms.ViewMaker(224, 0).unlabeled(img, random.Random(0))
    assert not any(_has_block((_hwc(v) == 127).all(axis=2), 9, 9) for v in no_cutout)


@pytest.fixture
def pil_calls(monkeypatch):
    """Record the parameter of each PIL call the RandAugment ops make."""
    calls = []

    def spy(owner, name, pick):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls.append((name, pick(*args, **kwargs)))
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)

    spy(ImageEnhance._Enhance, "enhance", lambda self, factor: factor)
    spy(ImageOps, "posterize", lambda img, bits: bits)
    spy(ImageOps, "solarize", lambda img, threshold=128: threshold)
    spy(Image.Image, "rotate", lambda self, angle, *a, **k: angle)
    spy(Image.Image, "transform", lambda self, size, method, data=None, *a, **k: tuple(data))
    return calls


def _expected(name, v):
    """The released magnitudes (docs/method.md §2) at a 224 px view, by hand."""
    shift, shear = 672 * v // 100, 0.03 * v
    return {
        "Brightness": ("enhance", {0.09 * v + 0.05}), "Color": ("enhance", {0.09 * v + 0.05}),
        "Contrast": ("enhance", {0.09 * v + 0.05}), "Sharpness": ("enhance", {0.09 * v + 0.05}),
        "Posterize": ("posterize", {4 * v // 10 + 4}),
        "Solarize": ("solarize", {256 - 256 * v // 10}),
        "Rotate": ("rotate", {3 * v, -3 * v}),
        "ShearX": ("transform", {(1, s, 0, 0, 1, 0) for s in (shear, -shear)}),
        "ShearY": ("transform", {(1, 0, 0, s, 1, 0) for s in (shear, -shear)}),
        "TranslateX": ("transform", {(1, 0, s, 0, 1, 0) for s in (shift, -shift)}),
        "TranslateY": ("transform", {(1, 0, 0, 0, 1, s) for s in (shift, -shift)}),
    }.get(name, (None, set()))


def _rounded(p):
    return tuple(round(x, 9) for x in p) if isinstance(p, tuple) else round(p, 9)


@pytest.mark.parametrize("name, op", transforms.RANDAUGMENT_POOL,
                         ids=[n for n, _ in transforms.RANDAUGMENT_POOL])
def test_randaugment_op_parameters(pil_calls, name, op):
    img = _noise(224, 224)
    seen = set()
    for v in range(1, 10):
        kind, expected = _expected(name, v)
        got = set()
        for seed in range(30):
            pil_calls.clear()
            op(img, v, random.Random(seed))
            got |= {_rounded(p) for k, p in pil_calls if k == kind}
        assert got == {_rounded(e) for e in expected}  # both signs where there is one
        seen |= got
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        assert min(seen) == pytest.approx(0.14) and max(seen) == pytest.approx(0.86)
    if name == "Posterize":
        assert seen == {4, 5, 6, 7}
    if name in ("AutoContrast", "Equalize", "Identity"):
        assert not seen


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"])
def test_geometric_ops_are_nearest_with_black_fill_about_the_origin(name):
    op = dict(transforms.RANDAUGMENT_POOL)[name]
    two_valued = np.random.default_rng(0).choice(np.array([100, 255], np.uint8), (224, 224))
    img = Image.fromarray(two_valued).convert("RGB")
    for seed in range(6):
        out = np.asarray(op(img, 9, random.Random(seed)))[..., 0]
        assert set(np.unique(out)) == {0, 100, 255}  # black fill, nothing interpolated
        if name == "TranslateX":
            assert (out == 0).all(axis=0).sum() == 60  # floor(6.72 * 9) columns
        if name == "ShearX":
            assert np.array_equal(out[0], two_valued[0]) and (out[-1] == 0).sum() == 60


def test_rand_augment_picks_two_ops_with_replacement(monkeypatch):
    applied = []
    pool = tuple((n, (lambda n: lambda img, v, rng: applied[-1].append(n) or img)(n))
                 for n, _ in transforms.RANDAUGMENT_POOL)
    monkeypatch.setattr(transforms, "RANDAUGMENT_POOL", pool)
    img = Image.new("RGB", (8, 8))
    for seed in range(12000):
        applied.append([])
        transforms.rand_augment(img, random.Random(seed))
    pairs = [a for a in applied if len(a) == 2]  # both ops applied: p = 1/4
    assert abs(len(pairs) / 12000 - 0.25) < 0.02
    assert abs(sum(a[0] == a[1] for a in pairs) / len(pairs) - 1 / 14) < 0.02


# ---- per-epoch replay (B) --------------------------------------------------------

@pytest.fixture(scope="module")
def c10_root(tmp_path_factory):
    return write_fake_cifar(str(tmp_path_factory.mktemp("c10")), "cifar10",
                            train_per_class=6, test_per_class=1)


def _epoch(bundle, epoch, batch_size=8, mu=2, steps=5, seed=3, **replay):
    labeled, unlabeled = loaders.build_train_loaders(
        bundle, batch_size, mu, steps, num_workers=0, seed=seed, pin_memory=False, **replay)
    for loader in (labeled, unlabeled):  # what the trainer does before each epoch
        loader.sampler.set_epoch(epoch)
    return list(labeled), list(unlabeled)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_n1_replays_one_batch_of_8_all_epoch(c10_root):
    """CIFAR-10 N1: 10 labeled images, B = 8, so P = 1: each step of an epoch is the
    same 8 images with the same pixels; the unlabeled stream (50 images, 16 a step,
    P = 3) cycles after 3 steps. A new epoch brings other images or other views."""
    cfg = _cfg(c10_root, NUM_L=1, NUM_U=4)
    bundle = loaders.build_data(cfg, 32, None)
    assert (len(bundle.labeled), len(bundle.unlabeled)) == (10, 50)
    assert cfg.DATA.REPLAY is True
    labeled, unlabeled = _epoch(bundle, 0)  # build_train_loaders' default: replay
    assert len(labeled) == 5 and all(_same(batch, labeled[0]) for batch in labeled)
    assert _same(unlabeled[3], unlabeled[0]) and _same(unlabeled[4], unlabeled[1])
    assert not torch.equal(unlabeled[1][3], unlabeled[0][3])
    positions = torch.cat([unlabeled[t][3] for t in range(3)]).tolist()
    assert len(set(positions)) == 48  # the first pass: 3 batches of one permutation
    next_labeled, next_unlabeled = _epoch(bundle, 1)
    assert not torch.equal(next_labeled[0][0], labeled[0][0])
    assert not torch.equal(next_unlabeled[0][1], unlabeled[0][1])
    resumed = _epoch(bundle, 1)  # fresh loaders, same (seed, epoch): a resume
    assert _same(resumed[0][0], next_labeled[0]) and _same(resumed[1][2], next_unlabeled[2])
    fresh, _ = _epoch(bundle, 0, replay=False)
    assert not any(torch.equal(fresh[t][0], fresh[0][0]) for t in range(1, 5))


def test_twelve_labeled_at_batch_4_cycle_three_batches(tmp_path):
    """A CIFAR-100-like L = 12, B = 4: P = 3 batches, 0 1 2 0 1 2 0."""
    write_fake_cifar(str(tmp_path), "cifar100", num_classes=3, train_per_class=5,
                     test_per_class=1)
    bundle = loaders.build_data(_cfg(tmp_path, "CIFAR100", NUM_L=4, NUM_U=1), 32, None)
    sampler = loaders.EpochSampler(12, 7 * 4, seed=3, stream=0, batch_size=4, replay=True)
    batches = [list(sampler)[4 * t:4 * t + 4] for t in range(7)]
    assert sorted(i for b in batches[:3] for i, _ in b) == list(range(12))
    assert all(batches[t] == batches[t % 3] for t in range(7))
    labeled, _ = _epoch(bundle, 2, batch_size=4, mu=1, steps=7)
    assert all(_same(labeled[t], labeled[t % 3]) for t in range(7))
    assert not torch.equal(labeled[0][0], labeled[1][0])


def test_replay_sharding_and_small_set_fallback(caplog):
    def draw(n, batch, rank=0, world=1, replay=True):
        sampler = loaders.EpochSampler(n, 6 * batch, 7, 1, batch, rank, world, replay)
        sampler.set_epoch(4)
        return list(sampler)

    whole, shards = draw(20, 8), [draw(20, 8, r, 2) for r in range(2)]
    assert whole == [p for t in range(6) for r in range(2) for p in shards[r][4 * t:4 * t + 4]]
    assert whole[:16] == whole[16:32]  # P = 2 batches of 8, replayed
    with caplog.at_level(logging.WARNING, logger="finessl.data.loaders"):
        small = draw(5, 8)
    assert small == draw(5, 8, replay=False)  # L < B: fresh draws, as without replay
    assert small[:8] != small[8:16]
    assert sum("fewer than a batch" in r.message for r in caplog.records) == 1


# ---- Food-101 (C) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def food_root(tmp_path_factory):
    return write_fake_food101(str(tmp_path_factory.mktemp("food")))


def test_food101_reads_as_torchvision_food101(food_root):
    raw = datasets.load_dataset("food101", food_root, download=False)
    for split, paths, targets in (("train", raw.train_images.paths, raw.train_targets),
                                  ("test", raw.test_images.paths, raw.test_targets)):
        ref = tv_datasets.Food101(food_root, split=split, download=False)
        assert paths == [str(p) for p in ref._image_files] and targets == ref._labels
        assert raw.classnames == [c.replace("_", " ") for c in ref.classes]
    assert raw.classnames[:2] == ["apple pie", "baby back ribs"]  # sorted, not JSON order
    with open(f"{food_root}/food-101/meta/train.json") as f:
        assert list(json.load(f))[0] == "tiramisu"
    image, label = ref[3]
    assert np.array_equal(np.asarray(raw.test_image(3)), np.asarray(image))
    assert label == raw.test_targets[3]


def test_food101_split_and_statistics(food_root, tmp_path, caplog):
    ref = tv_datasets.Food101(food_root, split="train", download=False)
    with caplog.at_level(logging.INFO, logger="finessl.data.loaders"):
        bundle = loaders.build_data(_cfg(food_root, "FOOD101", NUM_L=2, NUM_U=400), 32,
                                    str(tmp_path))
    first_two = [i for k in range(5) for i in [j for j, y in enumerate(ref._labels) if y == k][:2]]
    assert bundle.labeled_idx == first_two
    assert bundle.unlabeled_idx == list(range(len(ref)))  # the whole train split, NUM_U unused
    assert len(bundle.test) == len(tv_datasets.Food101(food_root, split="test"))
    assert any("NUM_U" in r.message and "not used" in r.message for r in caplog.records)
    with open(tmp_path / "split.json") as f:
        meta = json.load(f)["meta"]
    assert meta["UNLABELED"] == "all" and "NUM_U" not in meta
    assert (bundle.mean, bundle.std) == IMAGENET
    clip = loaders.build_data(_cfg(food_root, "FOOD101", NUM_L=2, NORMALIZE="clip"), 32, None)
    assert (clip.mean, clip.std) == CLIP
    per_class = loaders.build_data(_cfg(food_root, "FOOD101", NUM_L=2, NUM_U=1,
                                        UNLABELED="num_u"), 32, None)
    assert per_class.unlabeled_idx == [i for k in range(5) for i in
                                       [j for j, y in enumerate(ref._labels) if y == k][:3]]


def test_cifar_pool_and_statistics_switches(c10_root):
    own = loaders.build_data(_cfg(c10_root, NUM_L=1, NUM_U=2), 32, None)
    assert len(own.unlabeled) == 30 and (own.mean, own.std) == datasets.dataset_stats("CIFAR10")
    assert own.mean == (0.4914, 0.4822, 0.4465)
    whole = loaders.build_data(_cfg(c10_root, NUM_L=1, NUM_U=2, UNLABELED="all",
                                    NORMALIZE="clip"), 32, None)
    assert whole.unlabeled_idx == list(range(60)) and (whole.mean, whole.std) == CLIP
    assert datasets.dataset_stats("FOOD101") == IMAGENET
    assert datasets.dataset_stats("FOOD101", "clip") == CLIP
