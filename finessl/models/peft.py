"""Parameter-efficient fine-tuning modules that plug into ``ViTBackbone``'s hooks.

Only these modules and the heads are trained; every backbone weight stays frozen.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from finessl.models.backbone import PeftModule, ViTBackbone


class VisualPrompts(PeftModule):
    """Visual Prompt Tuning (Jia et al., ECCV 2022), deep or shallow.

    Deep: before block i, drop the previous block's prompts (keep the first
    ``n_keep`` class + patch tokens) and append block i's own ``length`` prompts.
    Shallow: prompts are appended before block 0 only and carried through.
    Init uniform(-v, v), v = sqrt(6 / (3 * patch_h * patch_w + width)) (METHOD.md §1).
    """

    def __init__(self, num_blocks: int, width: int, length: int, patch_size: tuple[int, int],
                 deep: bool = True):
        super().__init__()
        v = math.sqrt(6.0 / (3 * patch_size[0] * patch_size[1] + width))
        depth = num_blocks if deep else 1
        self.prompts = nn.Parameter(torch.empty(depth, length, width).uniform_(-v, v))

    def drops_extra_tokens(self, i: int) -> bool:
        """Deep: block i+1 replaces block i's prompts; shallow: they are carried on."""
        return i + 1 < self.prompts.shape[0]

    def before_block(self, i: int, x: torch.Tensor, n_keep: int) -> torch.Tensor:
        if i >= self.prompts.shape[0]:
            return x
        prompts = self.prompts[i].to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :n_keep], prompts], dim=1)


def build_peft(cfg, num_blocks: int, width: int, patch_size: tuple[int, int]) -> list[PeftModule]:
    """The PEFT modules the config switches on (none = linear probe of the heads)."""
    modules: list[PeftModule] = []
    if cfg.vpt_deep or cfg.vpt_shallow:
        modules.append(VisualPrompts(num_blocks, width, cfg.vpt_len, patch_size,
                                     deep=cfg.vpt_deep))
    return modules


def build_vit_backbone(cfg, visual: nn.Module, mean, std) -> ViTBackbone:
    """CLIP ViT image tower (frozen) with the fine-tuning strategy ``cfg`` asks for."""
    peft = build_peft(cfg, len(visual.transformer.resblocks), visual.transformer.width,
                      tuple(visual.conv1.kernel_size))
    backbone = ViTBackbone(visual, peft, mean, std)
    backbone.grad_checkpointing = cfg.grad_checkpointing
    return backbone
