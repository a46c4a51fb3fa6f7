"""Weak, strong and test views (docs/method.md §2), each a pure function of
(image, seed).

Every random choice draws from an explicit ``random.Random`` that the loader seeds
per sample (see ``loaders.EpochSampler``), never from the global ``random``,
``numpy`` or ``torch`` generators. The view of a sample therefore does not depend on
the number of workers or on which worker built it, and a resumed run sees exactly
the same images as an uninterrupted one.

weak: resize the shorter side to 256 (bilinear, torchvision's ``Resize(256)``
rounding), reflect-pad 28, random 224 crop, horizontal flip (p = 0.5). test: resize
to 224 x 224. strong: an independent weak draw, then FixMatch's RandAugmentMC (Sohn
et al. 2020, kekmodel's FixMatch-pytorch, which FineSSL uses): two ops drawn with
replacement from the pool below, each with magnitude ``v = rng.randrange(1, 10)``
(1..9, as ``np.random.randint(1, 10)`` there) and applied with probability 0.5;
then Cutout, always. Geometric ops resample nearest with black fill; every sign is
a fair coin. Sizes in px are at the 224 px view.

=============  ==========================================  =====================
op             parameter                                   range over v = 1..9
=============  ==========================================  =====================
AutoContrast   --                                          --
Brightness     enhance factor 0.05 + 0.9 v/10              0.14 .. 0.86
Color          enhance factor 0.05 + 0.9 v/10              0.14 .. 0.86
Contrast       enhance factor 0.05 + 0.9 v/10              0.14 .. 0.86
Equalize       --                                          --
Identity       --                                          --
Posterize      bits 4 + int(4 v/10)                        4 .. 7
Rotate         degrees int(30 v/10), random sign           +-3 .. +-27
Sharpness      enhance factor 0.05 + 0.9 v/10              0.14 .. 0.86
ShearX/ShearY  shear 0.3 v/10 about the origin, rand. sign  +-0.03 .. +-0.27
Solarize       threshold 256 - int(256 v/10)               231 .. 26
TranslateX/Y   int(0.3 v/10 x side) px, random sign        +-6 .. +-60 px
Cutout         grey (127) square of DATA.CUTOUT px (16),   17 x 17 px drawn
               centre uniform over the view
=============  ==========================================  =====================

Cutout follows FixMatch's ``CutoutAbs``: x0 = int(max(0, cx - s/2)),
x1 = int(min(w, x0 + s)), likewise y, and PIL's rectangle includes both corners, so
a 16 px Cutout paints 17 x 17 px (fewer where it meets the right or bottom edge).
``DATA.CUTOUT -1`` draws the side uniform(0, 0.5) x the image side instead, 0 skips it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from finessl.errors import UserError

_BILINEAR = Image.Resampling.BILINEAR
_AFFINE = Image.Transform.AFFINE


def _enhance_factor(v: int) -> float:
    return 0.05 + 0.9 * v / 10


def _signed(value: float, rng: random.Random) -> float:
    return -value if rng.random() < 0.5 else value


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, _AFFINE, coeffs)


def _shear_x(img, v, rng):
    return _affine(img, (1, _signed(0.3 * v / 10, rng), 0, 0, 1, 0))


def _shear_y(img, v, rng):
    return _affine(img, (1, 0, 0, _signed(0.3 * v / 10, rng), 1, 0))


def _translate_x(img, v, rng):
    return _affine(img, (1, 0, int(_signed(0.3 * v / 10, rng) * img.size[0]), 0, 1, 0))


def _translate_y(img, v, rng):
    return _affine(img, (1, 0, 0, 0, 1, int(_signed(0.3 * v / 10, rng) * img.size[1])))


Op = Callable[[Image.Image, int, random.Random], Image.Image]

RANDAUGMENT_POOL: tuple[tuple[str, Op], ...] = (
    ("AutoContrast", lambda img, v, rng: ImageOps.autocontrast(img)),
    ("Brightness", lambda img, v, rng: ImageEnhance.Brightness(img).enhance(_enhance_factor(v))),
    ("Color", lambda img, v, rng: ImageEnhance.Color(img).enhance(_enhance_factor(v))),
    ("Contrast", lambda img, v, rng: ImageEnhance.Contrast(img).enhance(_enhance_factor(v))),
    ("Equalize", lambda img, v, rng: ImageOps.equalize(img)),
    ("Identity", lambda img, v, rng: img),
    ("Posterize", lambda img, v, rng: ImageOps.posterize(img, 4 + int(4 * v / 10))),
    ("Rotate", lambda img, v, rng: img.rotate(_signed(int(30 * v / 10), rng))),
    ("Sharpness", lambda img, v, rng: ImageEnhance.Sharpness(img).enhance(_enhance_factor(v))),
    ("ShearX", _shear_x),
    ("ShearY", _shear_y),
    ("Solarize", lambda img, v, rng: ImageOps.solarize(img, 256 - int(256 * v / 10))),
    ("TranslateX", _translate_x),
    ("TranslateY", _translate_y),
)


def cutout(img: Image.Image, rng: random.Random, size: int = 16) -> Image.Image:
    """Paint a grey square of ``size`` px (-1: uniform(0, 0.5) x the image side; 0:
    none) at a uniformly drawn centre, as FixMatch's CutoutAbs."""
    if size == 0:
        return img
    w, h = img.size
    side = rng.uniform(0, 0.5) * min(w, h) if size < 0 else size
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(w, x0 + side)), int(min(h, y0 + side))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), fill=(127, 127, 127))
    return img


def check_cutout(size: int, crop: int) -> None:
    """A Cutout square larger than the views paints the strong views blank grey (their
    consistency target would be a grey image): one line naming DATA.CUTOUT and the side."""
    if size > crop:
        raise UserError(f"DATA.CUTOUT {size} is larger than the {crop} px input size: the "
                        f"strong views would be blank grey; use at most {crop} (the released "
                        f"16 for 32 px CIFAR, -1 for half the image at most, 0 for none)")


def rand_augment(img: Image.Image, rng: random.Random, num_ops: int = 2) -> Image.Image:
    """FixMatch RandAugmentMC: ``num_ops`` ops with replacement, each with p=0.5."""
    for _, op in rng.choices(RANDAUGMENT_POOL, k=num_ops):
        v = rng.randrange(1, 10)
        if rng.random() < 0.5:
            img = op(img, v, rng)
    return img


def _resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """torchvision's ``Resize(size)`` on a PIL image: the longer side is truncated."""
    w, h = img.size
    if w <= h:
        new = (size, max(1, int(size * h / w)))
    else:
        new = (max(1, int(size * w / h)), size)
    return img.resize(new, _BILINEAR)


def padded(img: Image.Image, crop: int) -> np.ndarray:
    """The deterministic part of the weak view: resized and reflect-padded, HWC uint8.

    Every view of an image starts from this array, so it is computed once per image,
    not once per view.
    """
    pad = int(crop * 0.125)
    array = np.asarray(_resize_shorter(img, round(crop * 256 / 224)))
    return np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _crop_flip(array: np.ndarray, rng: random.Random, crop: int) -> np.ndarray:
    """Random ``crop`` x ``crop`` window and horizontal flip (p = 0.5), as views."""
    top = rng.randint(0, array.shape[0] - crop)
    left = rng.randint(0, array.shape[1] - crop)
    window = array[top : top + crop, left : left + crop]
    return window[:, ::-1] if rng.random() < 0.5 else window


def to_uint8_tensor(array: np.ndarray) -> torch.Tensor:
    """HWC uint8 array -> CHW uint8 tensor. Scaling and normalisation happen on the
    model's device (``ViTBackbone.normalize``): a quarter of the bytes to copy, and
    no float work in the loader."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def test_transform(img: Image.Image, crop: int) -> torch.Tensor:
    """Evaluation view: resize to crop x crop, nothing random (uint8 CHW)."""
    return to_uint8_tensor(np.asarray(img.resize((crop, crop), _BILINEAR)))


test_transform.__test__ = False  # its name starts with "test": keep pytest from collecting it


class ViewMaker:
    """The uint8 tensors each kind of sample feeds to the model.

    A labeled image gets one weak view; an unlabeled image gets a weak view (for the
    pseudo-label) and two independent strong views drawn one after the other from
    the same ``rng``. The resize and padding all views share are done once.
    ``cutout`` is the strong views' Cutout side in px (DATA.CUTOUT; see ``cutout``).
    """

    def __init__(self, crop: int, cutout: int = 16):
        check_cutout(cutout, crop)
        self.crop, self.cutout = crop, cutout

    def labeled(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        return to_uint8_tensor(_crop_flip(padded(img, self.crop), rng, self.crop))

    def unlabeled(
        self, img: Image.Image, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        base = padded(img, self.crop)
        weak_view = to_uint8_tensor(_crop_flip(base, rng, self.crop))
        strong1, strong2 = (self._strong(base, rng) for _ in range(2))
        return weak_view, strong1, strong2

    def _strong(self, base: np.ndarray, rng: random.Random, num_ops: int = 2) -> torch.Tensor:
        view = Image.fromarray(np.ascontiguousarray(_crop_flip(base, rng, self.crop)))
        return to_uint8_tensor(np.asarray(cutout(rand_augment(view, rng, num_ops), rng,
                                                 self.cutout)))

    def strong(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        """One strong view of ``img`` (a labeled image's, for algorithms that ask)."""
        return self._strong(padded(img, self.crop), rng)

    def medium(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        """A view between weak and strong: one RandAugment op instead of two, and the
        strong views' Cutout (SequenceMatch's medium view)."""
        return self._strong(padded(img, self.crop), rng, num_ops=1)

    def test(self, img: Image.Image) -> torch.Tensor:
        return test_transform(img, self.crop)
