"""LoRA (Hu et al., ICLR 2022) on the attention's q and v projections (docs/method.md §1)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from finessl.config import declare, positive
from finessl.models.backbone import BlockwisePeft
from finessl.models.methods import peft_method

declare("lora_dim", 8, "LoRA rank r (scaling 1/r)", check=positive, shapes_model=True)
declare("lora_init", "released", "LoRA A init: 'released' U(+-1/sqrt(r)) (fan_in = r), 'standard' "
        "U(+-1/sqrt(width)) as in the LoRA paper's code", choices=("released", "standard"))


class LowRank(nn.Module):
    """The update x A B / r of one projection: A (width x r), B (r x width) zeros, so
    the model starts unchanged.

    ``init 'released'``: A is kaiming-uniform (a = sqrt(5)) on the width x r tensor
    itself, as the authors' code does, so its fan-in is r and A ~ U(+-1/sqrt(r)).
    ``init 'standard'``: the LoRA reference code's fan-in of width, A ~ U(+-1/sqrt(width)),
    about sqrt(width / r) times smaller. (kaiming_uniform_ with a = sqrt(5) is
    U(+-1/sqrt(fan_in)).)
    """

    def __init__(self, width: int, rank: int, init: str = "released"):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(width, rank))
        self.lora_B = nn.Parameter(torch.zeros(rank, width))
        bound = 1.0 / math.sqrt(rank if init == "released" else width)
        nn.init.uniform_(self.lora_A, -bound, bound)
        self.scaling = 1.0 / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.lora_A.to(x.dtype) @ self.lora_B.to(x.dtype) * self.scaling


@peft_method("lora", "LoRA on the q and v projections of every block", order=20)
class LoRA(BlockwisePeft):
    """q += LoRA_q(x), v += LoRA_v(x) in every block (or the last K), k untouched, x the
    ``ln_1`` output. Added after SSF's scaling of the in-projection (SSF is built, and
    so hooked, first: docs/method.md §1 steps 3-4).

    Rank r = ``lora_dim``, scaling 1/r, A's init ``lora_init``. When a block queries
    only its first n_out tokens, q's update is computed for those rows only.
    """

    def __init__(self, blocks, width: int, rank: int, init: str = "released"):
        super().__init__({i: nn.ModuleDict({"q": LowRank(width, rank, init),
                                            "v": LowRank(width, rank, init)}) for i in blocks})

    @classmethod
    def from_config(cls, cfg, visual: nn.Module, first: int) -> LoRA:
        return cls(range(first, len(visual.transformer.resblocks)), visual.transformer.width,
                   cfg.lora_dim, cfg.lora_init)

    def qkv(self, i, x, q, k, v):
        layer = self.blocks[str(i)]
        return q + layer["q"](x[:, :q.shape[1]]), k, v + layer["v"](x)
