"""LoRA (Hu et al., ICLR 2022) on the attention's q and v projections (METHOD.md §1)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from finessl.models.backbone import BlockwisePeft


class LowRank(nn.Module):
    """The update (x A^T) B^T / r of one projection: A (r x width) kaiming-uniform as
    in the LoRA reference code, B (width x r) zeros, so the model starts unchanged."""

    def __init__(self, width: int, rank: int):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, width))
        self.lora_B = nn.Parameter(torch.zeros(width, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = 1.0 / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(x, self.lora_A.to(x.dtype))
        return F.linear(low, self.lora_B.to(x.dtype)) * self.scaling


class LoRA(BlockwisePeft):
    """q += LoRA_q(x), v += LoRA_v(x) in every block (or the last K), k untouched.

    Rank r = ``lora_dim``, scaling 1/r. When a block queries only its first n_out
    tokens, q's update is computed for those rows only.
    """

    def __init__(self, blocks, width: int, rank: int):
        super().__init__({i: nn.ModuleDict({"q": LowRank(width, rank), "v": LowRank(width, rank)})
                          for i in blocks})

    @classmethod
    def from_config(cls, cfg, visual: nn.Module, first: int) -> LoRA:
        return cls(range(first, len(visual.transformer.resblocks)), visual.transformer.width,
                   cfg.lora_dim)

    def qkv(self, i, x, q, k, v):
        layer = self.blocks[str(i)]
        return q + layer["q"](x[:, :q.shape[1]]), k, v + layer["v"](x)
