"""Data-parallel training over ``torch.distributed`` (``torchrun``): nccl on CUDA, gloo
on CPU.

Only the PEFT parameters and the heads have gradients (the backbone is frozen), so
synchronising a step is one all-reduce of one flat gradient buffer: what
DistributedDataParallel would do here, without its wrapper around a model whose
forward the algorithms call piece by piece. Every rank also sees the whole weak-view
batch (all-gathered, no gradient), so pseudo-labels, learning-pace memories, EMAs and
counters evolve identically on every rank and equal a single-process run with the
same global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``world == 1`` means no process group."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-sized tensors of all ranks along dim 0, in rank order (no grad)."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """As :meth:`gather`, but gradients flow back to every rank's own part."""
        if not self.enabled:
            return tensor
        return torch.cat(dist_nn.all_gather(tensor.contiguous()))

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous chunk of a gathered tensor."""
        if not self.enabled:
            return tensor
        size = tensor.shape[0] // self.world
        return tensor[self.rank * size:(self.rank + 1) * size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (no grad)."""
        if not self.enabled:
            return tensor
        tensor = tensor.detach().clone()
        dist.all_reduce(tensor)
        return tensor

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Mean of every rank's gradients, in one all-reduce.

        Parameters without a gradient (the aux head when DLS is off) stay without one
        on every rank (the same code runs everywhere), so the optimizer skips them as
        in a single process instead of decaying them.
        """
        if not self.enabled:
            return
        params = [p for p in params if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = Dist()


def init_distributed() -> Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return Dist(rank, world, local_rank)
