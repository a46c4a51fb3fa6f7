"""Visual Prompt Tuning (Jia et al., ECCV 2022), deep or shallow (docs/method.md §1)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from finessl.config import cross_check, declare, positive
from finessl.errors import UserError
from finessl.models.backbone import PeftModule
from finessl.models.methods import peft_method

declare("vpt_len", 50, "prompt tokens per block", check=positive, shapes_model=True)


@cross_check
def _one_prompt_depth(cfg) -> None:
    """Deep and shallow prompts are two readings of one prompt table: one at a time."""
    if cfg.vpt_deep and cfg.vpt_shallow:
        raise UserError("vpt_deep and vpt_shallow are both True: choose one")


class VisualPrompts(PeftModule):
    """Learnable prompt tokens appended after the class and patch tokens.

    Deep: before block i, drop the previous block's prompts (keep the first
    ``n_keep`` class + patch tokens) and append block i's own ``length`` prompts.
    Shallow: prompts are appended before one block only and carried through.
    Both start at block ``first``: 0, or L - K with ``partial K``; shallow prompts enter
    at block 0 whatever ``partial`` is, as released, unless ``partial_shallow True``.
    Init uniform(-v, v), v = sqrt(6 / (3 * patch_h * patch_w + width)).
    """

    def __init__(self, num_blocks: int, width: int, length: int, patch_size: tuple[int, int],
                 deep: bool = True, first: int = 0):
        super().__init__()
        v = math.sqrt(6.0 / (3 * patch_size[0] * patch_size[1] + width))
        depth = num_blocks - first if deep else 1
        self.first = first
        self.prompts = nn.Parameter(torch.empty(depth, length, width).uniform_(-v, v))

    deep = True  # what ``from_config`` builds by default (set by the registered subclasses)

    @classmethod
    def from_config(cls, cfg, visual: nn.Module, first: int,
                    deep: bool | None = None) -> VisualPrompts:
        deep = cls.deep if deep is None else deep
        if not deep and not cfg.partial_shallow:
            first = 0  # the released shallow prompts ignore partial
        return VisualPrompts(len(visual.transformer.resblocks), visual.transformer.width, cfg.vpt_len,
                   tuple(visual.conv1.kernel_size), deep=deep, first=first)

    def drops_extra_tokens(self, i: int) -> bool:
        """Deep: block i+1 replaces block i's prompts; shallow: they are carried on."""
        return self.first <= i + 1 < self.first + self.prompts.shape[0]

    def before_block(self, i: int, x: torch.Tensor, n_keep: int) -> torch.Tensor:
        j = i - self.first
        if not 0 <= j < self.prompts.shape[0]:
            return x
        prompts = self.prompts[j].to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :n_keep], prompts], dim=1)


@peft_method("vpt_deep", "VPT-deep: new prompt tokens before every transformer block",
             order=0)
class DeepPrompts(VisualPrompts):
    """The ``vpt_deep`` switch: builds deep :class:`VisualPrompts`."""

    deep = True


@peft_method("vpt_shallow", "VPT-shallow: prompt tokens before the first block only",
             order=0)
class ShallowPrompts(VisualPrompts):
    """The ``vpt_shallow`` switch: builds shallow :class:`VisualPrompts`."""

    deep = False
