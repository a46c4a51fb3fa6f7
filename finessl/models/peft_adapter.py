"""Bottleneck branches on the MLP: Adapter (Houlsby et al., ICML 2019) after it and
AdaptFormer (Chen et al., NeurIPS 2022) beside it (docs/method.md §1)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from finessl.config import declare, non_negative, positive
from finessl.models.backbone import BlockwisePeft
from finessl.models.methods import peft_method

declare("adapter_dim", 8, "adapter bottleneck width", check=positive, shapes_model=True)
declare("ffn_num", 64, "AdaptFormer bottleneck width", check=positive, shapes_model=True)
declare("ln_opt", "in", "AdaptFormer LayerNorm: 'in' before the down-projection (released "
        "default), 'out' after the scaling, 'none'", choices=("in", "out", "none"), shapes_model=True)
declare("ffn_opt", "parallel", "AdaptFormer branch: 'parallel' beside the MLP (input: the "
        "block's residual stream), 'sequential' after it (input: the MLP output)",
        choices=("parallel", "sequential"), shapes_model=True)
declare("adapter_scalar", 0.1, "scale s of the Adapter and AdaptFormer branches (released 0.1)",
        check=non_negative)
declare("scalar_learnable", False, "the scale s of each Adapter / AdaptFormer block is a "
        "trained parameter starting at adapter_scalar, as released (False: a constant)",
        shapes_model=True)


def layer_norm_fp32(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``ln(x)`` computed in fp32 whatever the dtypes of x and of ln's parameters (fp16
    under ``prec fp16``), returned in x's dtype, as CLIP's own LayerNorms."""
    return F.layer_norm(x.float(), ln.normalized_shape, ln.weight.float(), ln.bias.float(),
                        ln.eps).to(x.dtype)


class Bottleneck(nn.Module):
    """scale * up(dropout(ReLU(down(x)))), with a LayerNorm on the input (``ln 'in'``),
    on the scaled output (``'out'``) or none (``'none'``).

    Init as released: the down-projection kaiming (a = sqrt(5)), normal (Adapter: std
    1/sqrt(3 width), 1/48 on ViT-B/16) or uniform (AdaptFormer: U(+-1/sqrt(width)));
    up-projection and both biases zero, so the branch starts at exactly zero (with
    ``ln 'out'`` too: LN(0) is its bias, zero). Parameters are cast to the input's dtype.
    ``learnable``: the scale is a trained scalar parameter (the released
    ``scalar_learnable``), else a constant.
    """

    def __init__(self, width: int, dim: int, scale: float, dropout: float = 0.0,
                 ln: str = "in", normal_init: bool = False, learnable: bool = False):
        super().__init__()
        self.ln = None if ln == "none" else nn.LayerNorm(width)
        self.ln_out = ln == "out"
        self.down, self.up = nn.Linear(width, dim), nn.Linear(dim, width)
        init = nn.init.kaiming_normal_ if normal_init else nn.init.kaiming_uniform_
        init(self.down.weight, a=math.sqrt(5))
        for p in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(p)
        self.scale = nn.Parameter(torch.tensor(float(scale))) if learnable else scale
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ln is not None and not self.ln_out:
            x = layer_norm_fp32(self.ln, x)
        h = F.relu(F.linear(x, self.down.weight.to(x.dtype), self.down.bias.to(x.dtype)))
        h = F.dropout(h, self.dropout, self.training)
        scale = self.scale.to(x.dtype) if isinstance(self.scale, torch.Tensor) else self.scale
        out = F.linear(h, self.up.weight.to(x.dtype), self.up.bias.to(x.dtype)) * scale
        return layer_norm_fp32(self.ln, out) if self.ln_out else out


@peft_method("adapter", "bottleneck adapter after each MLP", order=30)
class Adapter(BlockwisePeft):
    """Adapter after each MLP: h + s * up(ReLU(down(LN(h)))), with h the MLP branch's
    output (bottleneck ``adapter_dim``, s = ``adapter_scalar``, trained with
    ``scalar_learnable``)."""

    def __init__(self, blocks, width: int, dim: int, scale: float = 0.1,
                 learnable: bool = False):
        super().__init__({i: Bottleneck(width, dim, scale, normal_init=True,
                                        learnable=learnable) for i in blocks})

    @classmethod
    def from_config(cls, cfg, visual: nn.Module, first: int) -> Adapter:
        return cls(range(first, len(visual.transformer.resblocks)), visual.transformer.width,
                   cfg.adapter_dim, cfg.adapter_scalar, cfg.scalar_learnable)

    def mlp(self, i, x, h):
        return h + self.blocks[str(i)](h)


@peft_method("adaptformer", "AdaptFormer: parallel bottleneck branch beside each MLP",
             order=40)
class AdaptFormer(BlockwisePeft):
    """AdaptFormer's branch a = s * up(dropout(ReLU(down(LN(.))))) (bottleneck
    ``ffn_num``, dropout 0.1, LayerNorm placed by ``ln_opt``, s = ``adapter_scalar``,
    trained with ``scalar_learnable``), added to the MLP branch.

    ``ffn_opt 'parallel'``: a reads the block's post-attention residual stream (the
    MLP's input before ``ln_2``); ``'sequential'``: a reads the MLP branch's output,
    after the Adapter when both are on (built after it, docs/method.md §1 steps 8-11).
    """

    def __init__(self, blocks, width: int, dim: int, scale: float = 0.1, dropout: float = 0.1,
                 ln: str = "in", sequential: bool = False, learnable: bool = False):
        super().__init__({i: Bottleneck(width, dim, scale, dropout, ln, learnable=learnable)
                          for i in blocks})
        self.sequential = sequential

    @classmethod
    def from_config(cls, cfg, visual: nn.Module, first: int) -> AdaptFormer:
        return cls(range(first, len(visual.transformer.resblocks)), visual.transformer.width,
                   cfg.ffn_num, cfg.adapter_scalar, ln=cfg.ln_opt,
                   sequential=cfg.ffn_opt == "sequential", learnable=cfg.scalar_learnable)

    def mlp(self, i, x, h):
        return h + self.blocks[str(i)](h if self.sequential else x)
