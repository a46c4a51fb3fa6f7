"""A toy fine-tuning strategy as one file: a learnable shift of every block's MLP output.

Shown in docs/extending.md; tests/test_plugins.py trains with it through main.py
(``plugins tests/assets/plugins/toy_peft.py mlp_shift True``)."""
import torch
import torch.nn as nn

from finessl.config import declare
from finessl.models.backbone import BlockwisePeft
from finessl.models.methods import VIT, peft_method

declare("mlp_shift_init", 0.0, "toy strategy: initial value of the MLP-output shift")


@peft_method("mlp_shift", "toy strategy: a learnable shift of each block's MLP output",
             serves=(VIT,))
class MLPShift(BlockwisePeft):
    def __init__(self, blocks, width: int, init: float):
        super().__init__({i: nn.ParameterDict({"shift": nn.Parameter(torch.full((width,), init))})
                          for i in blocks})

    @classmethod
    def from_config(cls, cfg, visual, first):
        return cls(range(first, len(visual.transformer.resblocks)), visual.transformer.width,
                   cfg.mlp_shift_init)

    def mlp(self, i, x, h):  # hook: the MLP branch's output h of block i
        return h + self.blocks[str(i)]["shift"].to(h.dtype)
