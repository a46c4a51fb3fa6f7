"""Real training steps for ``benchmarks/gpu_check.py``, built the way a run builds them,
so that the check exercises the code a run executes and not a copy of it: the config
from a YAML with ``KEY VALUE`` pairs (``load_config``), the device, :class:`Precision`
and the trained model's config from ``preflight.setup``, then ``build_model``,
``build_algorithm`` (SemiKD: with a teacher built in memory), ``build_optimizer`` and
the :class:`StepGuard`; each step is the Trainer's own ``optimizer_step`` (``Batch``
from loader-shaped uint8 tensors, autocast, gradient scaler, gradient all-reduce,
divergence guard, SGD). Only the data is random: loaders and datasets are measured
apart (``benchmarks/data.py``), and a whole run through ``main.py`` by the check.
"""
from __future__ import annotations

import gc
import os
import time

import torch

from finessl.algorithms import ALGORITHMS, build_algorithm
from finessl.algorithms.semikd import Teacher
from finessl.config_load import load_config
from finessl.distributed import SINGLE, Dist
from finessl.engine import preflight
from finessl.engine.guard import StepGuard
from finessl.engine.optim import build_optimizer
from finessl.engine.trainer import Trainer
from finessl.models import build_model
from finessl.models.model import input_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_UNLABELED = 1000  # size of the learning-pace memory: the batch's indices lie below it

# aten op of F.scaled_dot_product_attention -> the kernel it is (forward and backward)
ATTENTION_KERNELS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "fused (backend's own)",
}


class NoGuard:
    """The step without the divergence guard (its reduction and host sync): what the
    guard costs is the difference."""

    def check(self, loss):
        return True, False


def loader_batches(cfg, size: int, dist: Dist, pin: bool, seed: int = 0) -> tuple:
    """What ``zip(labeled_loader, unlabeled_loader)`` yields for one step on this rank:
    ``DATA.BATCH_SIZE`` / world labeled and ``MU_U`` times as many unlabeled uint8
    images of ``size`` px (pinned when the step runs on CUDA, as the loaders pin)."""
    gen = torch.Generator().manual_seed(seed + dist.rank)
    n_x = cfg.DATA.BATCH_SIZE // dist.world
    n_u = n_x * cfg.DATA.MU_U
    classes = cfg.DATA.NUMBER_CLASSES

    def images(n):
        batch = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
        return batch.pin_memory() if pin else batch
    labeled = (images(n_x), torch.randint(classes, (n_x,), generator=gen))
    unlabeled = (images(n_u), images(n_u), images(n_u),
                 torch.arange(n_u) + dist.rank * n_u, torch.randint(classes, (n_u,), generator=gen))
    return labeled, unlabeled


def build_step(cfg_file: str, opts: list[str], dist: Dist = SINGLE) -> tuple[Trainer, tuple]:
    """(a Trainer holding what its ``optimizer_step`` reads, one step's loader batches).

    The Trainer is made without its data (``Trainer.__new__``): its model, algorithm,
    optimizer and guard are built by the functions ``Trainer.__init__`` and ``fit`` call."""
    cfg = load_config(cfg_file, opts)
    setup = preflight.setup(cfg, dist)
    names = [f"c{i}" for i in range(cfg.DATA.NUMBER_CLASSES)]
    device, precision = setup.device, setup.precision
    torch.manual_seed(0)
    model = build_model(setup.model_cfg, names, device, precision.fp16_params).train()
    algorithm = build_algorithm(cfg, model, len(names), NUM_UNLABELED, device, dist)
    if ALGORITHMS.get(cfg.algorithm).uses_teacher:  # SemiKD: the teacher's own keys
        teacher = Teacher(build_model(cfg, names, device, precision.fp16_params),
                          input_size(cfg), "built in memory", 0.0)
        algorithm.set_teacher(lambda: teacher)
    algorithm.on_epoch_start(0)
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.dist, trainer.device, trainer.precision = cfg, dist, device, precision
    trainer.model, trainer.algorithm = model, algorithm
    trainer.params = [p for p in model.parameters() if p.requires_grad]
    trainer.optim, trainer.sched = build_optimizer(cfg, trainer.params)
    trainer.guard = StepGuard(model, trainer.params, precision, dist, device)
    trainer.saved, trainer.global_step = None, 0
    return trainer, loader_batches(cfg, setup.input_size, dist, device.type == "cuda")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(trainer: Trainer, batches: tuple, steps: int) -> dict:
    """``steps`` optimizer steps: the last loss, and how many trained tensors changed.
    A non-finite step raises ``Diverged`` (the guard's check, as in a run)."""
    before = [p.detach().clone() for p in trainer.params]
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for i in range(steps):
        logs, _ = trainer.optimizer_step(batches, 0, i)
    loss = float(logs["loss/total"])
    if not torch.isfinite(torch.tensor(loss)):
        raise AssertionError(f"loss {loss} is not finite")
    unchanged = [names[id(p)] for p, b in zip(trainer.params, before) if torch.equal(p, b)]
    return {"loss": loss, "tensors": len(before), "unchanged": unchanged}


def timed(trainer: Trainer, batches: tuple, steps: int) -> dict:
    """Steps/s over ``steps`` steps after one warm-up step (compilation, cuDNN autotune,
    allocator growth), and the peak GPU memory they allocated (weights included)."""
    device = trainer.device
    trainer.optimizer_step(batches, 0, 0)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(steps):
        trainer.optimizer_step(batches, 0, i)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"steps_s": 1.0 / seconds, "peak_mb": peak}


def attention_kernels(trainer: Trainer, batches: tuple) -> str:
    """The kernels ``F.scaled_dot_product_attention`` dispatched to in one step (the
    aten ops the profiler records, forward and backward)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.optimizer_step(batches, 0, 0)
    found = set()
    for event in prof.events():
        name = event.name.removeprefix("aten::").removesuffix("_backward")
        if name in ATTENTION_KERNELS:
            found.add(ATTENTION_KERNELS[name])
    return " + ".join(sorted(found)) or "none recorded"


def release() -> None:
    """Free what the last step's model and optimizer held (the caller dropped them)
    before the next is built."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

