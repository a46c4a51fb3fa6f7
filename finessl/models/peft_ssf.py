"""SSF: Scaling and Shifting your Features (Lian et al., NeurIPS 2022), docs/method.md §1."""
from __future__ import annotations

import torch
import torch.nn as nn

from finessl.models.backbone import BlockwisePeft, ViTBackbone
from finessl.models.methods import CNN, VIT, peft_method


class ScaleShift(nn.Module):
    """h * scale + shift per channel; scale ~ N(1, 0.02), shift ~ N(0, 0.02) as in the
    SSF code, so the model starts close to (not exactly at) the frozen one."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim).normal_(1.0, 0.02))
        self.shift = nn.Parameter(torch.empty(dim).normal_(0.0, 0.02))

    def forward(self, h: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Channels ``start : start + h.shape[-1]`` of this layer's output (channels last)."""
        end = start + h.shape[-1]
        return h * self.scale[start:end].to(h.dtype) + self.shift[start:end].to(h.dtype)

    def hook(self, conv: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        """As a forward hook of a conv: its output, channels on dim 1. A bound method,
        so ``copy.deepcopy`` of a tower hooks the copy's convs to the copy's parameters."""
        shape = (1, -1) + (1,) * (output.dim() - 2)
        return (output * self.scale.to(output.dtype).view(shape)
                + self.shift.to(output.dtype).view(shape))


def scale_shift_convs(visual: nn.Module) -> nn.ModuleList:
    """SSF on a CNN: a :class:`ScaleShift` after every conv of ``visual``, applied as a
    forward hook, so the tower's modules and key names stay untouched."""
    convs = [m for m in visual.modules() if isinstance(m, nn.Conv2d)]
    modules = nn.ModuleList(ScaleShift(conv.out_channels) for conv in convs)
    for conv, module in zip(convs, modules):
        conv.register_forward_hook(module.hook)
    return modules


@peft_method("ssf", "SSF: learnable per-channel scale and shift (ViT: after qkv, out-proj, fc1, "
             "fc2; CNN: after convs)", (VIT, CNN), order=10)
class SSF(BlockwisePeft):
    """SSF on a ViT: scale and shift after the attention in-projection (q, k, v: 3 x
    width channels), the attention out-projection, and the MLP's fc1 and fc2. On a CNN
    they follow its convs (:func:`scale_shift_convs`), attached to the built tower."""

    def __init__(self, blocks, width: int, mlp_width: int):
        super().__init__({i: nn.ModuleDict({
            "qkv": ScaleShift(3 * width), "attn_out": ScaleShift(width),
            "fc1": ScaleShift(mlp_width), "fc2": ScaleShift(width)}) for i in blocks})

    @classmethod
    def attach(cls, cfg, tower) -> None:
        if not isinstance(tower, ViTBackbone):  # a ViT's are in its hooks (from_config)
            tower.ssf = scale_shift_convs(tower.visual)

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
