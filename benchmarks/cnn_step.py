"""Cost of one training step of the offline demo's CNN (EfficientNet-Lite0, full
fine-tuning, 64 px, 32 labeled + 64 unlabeled images x 3 views) with the tower in
channels-last layout (what ``CNNBackbone`` uses) against the default contiguous
(NCHW) layout, measured in one run and printed as a ratio.

    python benchmarks/cnn_step.py                  # the demo's config and batch
    python benchmarks/cnn_step.py --steps 5 --threads 2

Both layouts start from the same weights and batch and take the same steps,
interleaved (contiguous, channels-last, contiguous, ...) so that a machine getting
slower or faster during the run affects both alike. The losses of the first step are
printed too: the layout changes the order of float sums, not the math.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not __package__:  # run as a file (python benchmarks/cnn_step.py): the repository root
    sys.path.insert(0, REPO)

from finessl.algorithms import build_algorithm  # noqa: E402
from finessl.config_load import load_config  # noqa: E402
from finessl.models import build_model  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "demo", "fashion_mnist_N4.yaml")


def setup(cfg, channels_last: bool, classes: int, batch: dict):
    torch.manual_seed(0)
    model = build_model(cfg, [f"c{i}" for i in range(classes)], torch.device("cpu"), half=False)
    model.backbone.set_channels_last(channels_last)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    algorithm = build_algorithm(cfg, model, classes, 1000, torch.device("cpu"))

    def step() -> float:
        loss, _ = algorithm.train_step(copy.copy(batch))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        return loss.item()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per layout")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("overrides", nargs="*", help="KEY VALUE pairs on top of the demo config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIG, ["pretrained", "none", *args.overrides])  # layout cost needs no weights
    classes, size = 10, cfg.input_size
    n_x, n_u = cfg.DATA.BATCH_SIZE, cfg.DATA.BATCH_SIZE * cfg.DATA.MU_U
    gen = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, size, size), generator=gen,  # noqa: E731
                                     dtype=torch.uint8)
    batch = {"x": images(n_x), "y": torch.randint(classes, (n_x,), generator=gen),
             "u_w": images(n_u), "u_s1": images(n_u), "u_s2": images(n_u),
             "u_idx": torch.arange(n_u), "u_true": torch.randint(classes, (n_u,), generator=gen)}
    steps = {"contiguous": setup(cfg, False, classes, batch),
             "channels_last": setup(cfg, True, classes, batch)}
    first = {name: step() for name, step in steps.items()}  # warm-up
    seconds = dict.fromkeys(steps, 0.0)
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name] += (time.perf_counter() - start) / args.steps
    print(f"{cfg.backbone}, {size} px, {'finetune' if cfg.finetune else 'frozen tower'}, "
          f"{n_x} labeled + {n_u} unlabeled x 3 views, {args.threads} threads, "
          f"{args.steps} timed steps after one warm-up")
    print("| layout | s/step | first loss |")
    print("|---|---|---|")
    for name in steps:
        print(f"| {name} | {seconds[name]:.3f} | {first[name]:.5f} |")
    print(f"| channels_last / contiguous | {seconds['channels_last'] / seconds['contiguous']:.2f}x | |")


if __name__ == "__main__":
    main()
