"""Throughput of the unlabeled data pipeline (one weak + two strong views at 224 px per
image): ours against the plain per-image PIL pipeline of docs/method.md §2, which builds
each view from scratch with torchvision transforms and normalises to float in the
loader. Measured in one run, printed as ratios.

    python benchmarks/data.py                  # CIFAR-sized sources (32 px), 224 px views
    python benchmarks/data.py --source 512     # large photos (Food-101-like)

Rows: the main process (num_workers 0), then DataLoaders with 1 and 2 workers;
"per core" divides by the processes doing the work.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

if not __package__:  # run as a file (python benchmarks/data.py): the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from finessl.data.loaders import EpochSampler, UnlabeledDataset  # noqa: E402
from finessl.data.transforms import cutout, rand_augment  # noqa: E402

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


class Images:
    """Stand-in for a RawDataset: random photos of a given side."""

    def __init__(self, n: int, side: int):
        rng = np.random.default_rng(0)
        self.arrays = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]
        self.train_targets = [0] * n

    def train_image(self, i: int) -> Image.Image:
        return Image.fromarray(self.arrays[i])


class PlainUnlabeled(Dataset):
    """docs/method.md §2 as a torchvision Compose per view, float tensors out."""

    def __init__(self, raw: Images, crop: int = 224):
        weak = [T.Resize(round(crop * 256 / 224)),
                T.RandomCrop(crop, padding=int(crop * 0.125), padding_mode="reflect"),
                T.RandomHorizontalFlip()]
        finish = [T.ToTensor(), T.Normalize(MEAN, STD)]
        self.raw = raw
        self.weak = T.Compose(weak + finish)
        self.strong = T.Compose(weak + [T.Lambda(lambda im: cutout(rand_augment(im, random), random))]
                                + finish)

    def __len__(self):
        return len(self.raw.arrays)

    def __getitem__(self, item):
        i, _ = item
        img = self.raw.train_image(i)
        return self.weak(img), self.strong(img), self.strong(img), i, 0


def images_per_second(dataset, n: int, workers: int) -> float:
    sampler = EpochSampler(len(dataset), n, seed=0, stream=1)
    if workers == 0:
        start = time.perf_counter()
        for item in sampler:
            dataset[item]
        return n / (time.perf_counter() - start)
    loader = DataLoader(dataset, batch_size=16, sampler=sampler, num_workers=workers,
                        persistent_workers=True, prefetch_factor=4)
    iter(loader).__next__()  # start the workers before the clock
    start = time.perf_counter()
    count = sum(batch[0].shape[0] for batch in loader)
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=int, default=32, help="side of the source images")
    parser.add_argument("--images", type=int, default=192, help="images per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = Images(64, args.source)
    ours = UnlabeledDataset(raw, list(range(64)), __import__("finessl.data.transforms",
                                                           fromlist=["ViewMaker"]).ViewMaker(224))
    plain = PlainUnlabeled(raw)
    print(f"unlabeled images/s (1 weak + 2 strong views at 224 px), {args.source} px sources, "
          f"{os.cpu_count()} cores")
    print("| workers | plain img/s | ours img/s | plain per core | ours per core | ours / plain |")
    print("|---|---|---|---|---|---|")
    for workers in args.workers:
        p = images_per_second(plain, args.images, workers)
        o = images_per_second(ours, args.images, workers)
        cores = max(workers, 1)
        print(f"| {workers} | {p:.1f} | {o:.1f} | {p / cores:.1f} | {o / cores:.1f} | "
              f"{o / p:.2f}x |")


if __name__ == "__main__":
    main()
