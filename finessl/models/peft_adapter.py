"""Bottleneck branches on the MLP: Adapter (Houlsby et al., ICML 2019) after it and
AdaptFormer (Chen et al., NeurIPS 2022) beside it (METHOD.md §1)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from finessl.models.backbone import BlockwisePeft


class Bottleneck(nn.Module):
    """[LN ->] down -> ReLU -> dropout -> up, times ``scale``.

    Init as AdaptFormer's "lora" option: down kaiming-uniform, up and both biases
    zero, so the branch outputs exactly zero at the start. Computed in fp32-cast
    parameters of the input's dtype; the LayerNorm in fp32, as CLIP's own.
    """

    def __init__(self, width: int, dim: int, scale: float, dropout: float = 0.0,
                 layer_norm: bool = False):
        super().__init__()
        self.ln = nn.LayerNorm(width) if layer_norm else None
        self.down, self.up = nn.Linear(width, dim), nn.Linear(dim, width)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        for p in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(p)
        self.scale, self.dropout = scale, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ln is not None:
            x = F.layer_norm(x.float(), self.ln.normalized_shape, self.ln.weight, self.ln.bias,
                             self.ln.eps).to(x.dtype)
        h = F.relu(F.linear(x, self.down.weight.to(x.dtype), self.down.bias.to(x.dtype)))
        h = F.dropout(h, self.dropout, self.training)
        return F.linear(h, self.up.weight.to(x.dtype), self.up.bias.to(x.dtype)) * self.scale


class _BottleneckPeft(BlockwisePeft):
    """A bottleneck per block from ``first`` on; ``dim_key`` names its width's config key."""

    dim_key = ""

    @classmethod
    def from_config(cls, cfg, visual: nn.Module, first: int) -> _BottleneckPeft:
        return cls(range(first, len(visual.transformer.resblocks)), visual.transformer.width,
                   getattr(cfg, cls.dim_key))


class Adapter(_BottleneckPeft):
    """Sequential adapter after each MLP: h + 0.1 * up(ReLU(down(LN(h)))), with h the
    MLP branch's output (bottleneck ``adapter_dim``)."""

    dim_key = "adapter_dim"

    def __init__(self, blocks, width: int, dim: int, scale: float = 0.1):
        super().__init__({i: Bottleneck(width, dim, scale, layer_norm=True) for i in blocks})

    def mlp(self, i, x, h):
        return h + self.blocks[str(i)](h)


class AdaptFormer(_BottleneckPeft):
    """Parallel branch beside each MLP: h + 0.1 * up(dropout(ReLU(down(x)))), with x the
    block's post-attention residual stream, i.e. the MLP's input before ``ln_2``
    (AdaptFormer's "parallel" option, no LayerNorm; bottleneck ``ffn_num``, dropout 0.1)."""

    dim_key = "ffn_num"

    def __init__(self, blocks, width: int, dim: int, scale: float = 0.1, dropout: float = 0.1):
        super().__init__({i: Bottleneck(width, dim, scale, dropout) for i in blocks})

    def mlp(self, i, x, h):
        return h + self.blocks[str(i)](x)
