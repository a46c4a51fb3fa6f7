"""The parts of ``benchmarks/gpu_check.py`` that go beyond one process's steps: a whole
``main.py`` run on a generated CIFAR-10 and ``predict`` with it, two ranks under torchrun
(one process each, :func:`rank_check`), the loader's throughput
(``benchmarks/data.py``) and the plain step's memory (``benchmarks/step.py``'s worker).
Each returns the detail of its row or raises with why it failed."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from benchmarks.gpu_steps import REPO, build_step, release, train

RELEASED = os.path.join(REPO, "configs", "peft", "cifar100_N4.yaml")
RELEASED_KD = os.path.join(REPO, "configs", "peft", "cifar100_N4_kd.yaml")
PREDICTED_IMAGES = 4


def _child(cmd: list[str], timeout: float, threads: int | None = None
           ) -> subprocess.CompletedProcess:
    """``cmd`` from the repository root (on ``threads`` CPU threads if given); a
    RuntimeError naming its last stderr line unless it exits 0."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)
    if proc.returncode:
        raise failure(proc.returncode, proc.stderr)
    return proc


def failure(code: int, stderr: str) -> RuntimeError:
    """A child's failure as its row says it: the exit status and the last stderr line."""
    return RuntimeError(f"exit {code}: {(stderr.strip().splitlines() or ['(no output)'])[-1]}")


def main_run(vit: list[str], workers: int, threads: int | None, run: dict) -> str:
    """``python main.py`` for one epoch of 2 steps on a generated CIFAR-10 under
    ``run['tmp']`` (loaders, evaluation, checkpoint: the whole run); ``run['dir']`` is
    its folder."""
    from finessl.data.synthetic import write_fake_cifar
    data = write_fake_cifar(os.path.join(run["tmp"], "cifar10"), "cifar10",
                            train_per_class=20, test_per_class=4)
    out = os.path.join(run["tmp"], "run")
    _child([sys.executable, os.path.join(REPO, "main.py"), "--cfg", RELEASED, *vit,
            "DATA.NAME", "CIFAR10", "DATA.DATAPATH", data, "DATA.DOWNLOAD", "False",
            "DATA.NUMBER_CLASSES", "10", "DATA.NUM_L", "2", "DATA.NUM_U", "18",
            "num_epochs", "1", "total_steps", "2", "num_workers", str(workers), "seed", "1",
            "output_dir", out], timeout=300, threads=threads)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    run["dir"] = out
    return f"exit 0, 2 steps, test top-1 {results['last_top1']:.3f} on 40 images"


def predict_images(run: dict) -> str:
    """``predict`` (in this process) with the run of :func:`main_run` on a few images."""
    from finessl.engine.predict import predict
    if "dir" not in run:
        raise RuntimeError("no run to predict with: the main.py row failed")
    images = os.path.join(run["tmp"], "images")
    os.makedirs(images)
    rng = np.random.default_rng(0)
    for i in range(PREDICTED_IMAGES):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            os.path.join(images, f"{i}.png"))
    output = os.path.join(run["tmp"], "predictions.csv")
    counts = predict(run["dir"], images, output)
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    if counts["predicted"] != PREDICTED_IMAGES or len(rows) != PREDICTED_IMAGES:
        raise AssertionError(f"{len(rows)} rows for {PREDICTED_IMAGES} images")
    if not all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows):
        raise AssertionError(f"confidences out of [0, 1]: {[r['confidence'] for r in rows]}")
    return f"{len(rows)} images labelled ({', '.join(sorted({r['class'] for r in rows}))})"


def torchrun_check(script: str, extra: list[str], out: str, steps: int) -> str:
    """Two processes under torchrun, each :func:`rank_check`: after ``steps`` steps their
    trained parameters and algorithm state (the learning-pace memory) are bit-identical."""
    _child([sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", script, "--rank-check", out, *extra], timeout=300)
    with open(out) as f:
        result = json.load(f)
    if not result["equal"]:
        raise AssertionError(f"ranks differ after {steps} steps ({result['backend']})")
    return (f"{result['backend']}, 2 ranks bit-identical after {steps} steps (parameters, "
            f"memories: {result['selected']} of {result['memory']} entries set)")


def rank_check(vit: list[str], out: str, steps: int) -> int:
    """One process of :func:`torchrun_check`: the global batch split over the ranks, the
    weak views gathered (finessl/distributed.py); rank 0 writes what it found to ``out``."""
    from finessl.distributed import init_distributed
    dist = init_distributed()
    # th 0: every pseudo-label is kept, so the memories have entries to agree on
    trainer, batches = build_step(RELEASED, [*vit, "th", "0"], dist)
    train(trainer, batches, steps)
    state = [*trainer.params, *trainer.algorithm.state_dict().values()]
    flat = torch.cat([t.detach().double().reshape(1, -1) for t in state], dim=1)
    gathered = dist.gather(flat)
    memory = trainer.algorithm.pseudo_label_memory()
    if dist.is_main:
        with open(out, "w") as f:
            json.dump({"backend": torch.distributed.get_backend(), "world": dist.world,
                       "equal": all(torch.equal(gathered[0], row) for row in gathered),
                       "selected": int((memory >= 0).sum()), "memory": memory.numel()}, f)
    torch.distributed.destroy_process_group()
    return 0


def loader_speed(workers: int, view: int, images: int, loader: dict) -> str:
    """Unlabeled images/s of our pipeline (one weak + two strong views) from 32 px
    sources, ``workers`` loader processes; ``loader['img_s']`` keeps it."""
    from benchmarks.data import Images, images_per_second
    from finessl.data.loaders import UnlabeledDataset
    from finessl.data.transforms import ViewMaker
    dataset = UnlabeledDataset(Images(64, 32), list(range(64)), ViewMaker(view))
    loader["img_s"] = images_per_second(dataset, images, workers)
    return f"{loader['img_s']:,.0f} images/s (32 px sources, 3 views each)"


def plain_memory(model: str, batch: int) -> str:
    """Peak tensor memory of one step, ours against the plain one
    (``benchmarks/step.py``'s worker, here in this process, one after the other)."""
    from benchmarks import step
    plain = step.worker("plain", model, batch, 2)["peak_mb"]
    release()
    ours = step.worker("ours", model, batch, 2)["peak_mb"]
    return f"{ours:,.0f} vs {plain:,.0f} MB above the weights: {ours / plain:.2f}x"
