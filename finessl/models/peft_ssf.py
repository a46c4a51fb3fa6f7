"""SSF: Scaling and Shifting your Features (Lian et al., NeurIPS 2022), docs/method.md §1."""
from __future__ import annotations

import torch
import torch.nn as nn

from finessl.models.backbone import BlockwisePeft


class ScaleShift(nn.Module):
    """h * scale + shift per channel; scale ~ N(1, 0.02), shift ~ N(0, 0.02) as in the
    SSF code, so the model starts close to (not exactly at) the frozen one."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim).normal_(1.0, 0.02))
        self.shift = nn.Parameter(torch.empty(dim).normal_(0.0, 0.02))

    def forward(self, h: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Channels ``start : start + h.shape[-1]`` of this layer's output."""
        end = start + h.shape[-1]
        return h * self.scale[start:end].to(h.dtype) + self.shift[start:end].to(h.dtype)


class SSF(BlockwisePeft):
    """Scale and shift after the attention in-projection (q, k, v: 3 x width
    channels), the attention out-projection, and the MLP's fc1 and fc2."""

    def __init__(self, blocks, width: int, mlp_width: int):
        super().__init__({i: nn.ModuleDict({
            "qkv": ScaleShift(3 * width), "attn_out": ScaleShift(width),
            "fc1": ScaleShift(mlp_width), "fc2": ScaleShift(width)}) for i in blocks})

    @classmethod
    def from_config(cls, cfg, visual: nn.Module, first: int) -> SSF:
        blocks = visual.transformer.resblocks
        return cls(range(first, len(blocks)), visual.transformer.width,
                   blocks[0].mlp.c_fc.out_features)

    def qkv(self, i, x, q, k, v):
        ssf, d = self.blocks[str(i)]["qkv"], q.shape[-1]
        return ssf(q), ssf(k, d), ssf(v, 2 * d)

    def attn_out(self, i, h):
        return self.blocks[str(i)]["attn_out"](h)

    def fc1(self, i, h):
        return self.blocks[str(i)]["fc1"](h)

    def fc2(self, i, h):
        return self.blocks[str(i)]["fc2"](h)
