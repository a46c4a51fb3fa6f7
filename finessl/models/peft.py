"""The fine-tuning strategies of a CLIP ViT (docs/method.md §1), built from the config.

Module strategies plug into :class:`~finessl.models.backbone.ViTBackbone`'s hooks,
one file each: VPT (``peft_vpt``), LoRA (``peft_lora``), Adapter and AdaptFormer
(``peft_adapter``), SSF (``peft_ssf``). Weight strategies switch ``requires_grad``
on backbone parameters: BitFit (``bias_tuning``) and full fine-tuning
(``finetune``). Nothing switched on = linear probe: only the heads train.
Strategies compose (e.g. ``vpt_deep`` + ``lora``).

``partial K`` restricts every strategy to the last K blocks: block-wise modules
exist only there (VPT prompts enter at block L - K), and BitFit / fine-tuning
unfreeze only those blocks plus ``ln_post``, the final LayerNorm above them.
"""
from __future__ import annotations

import torch.nn as nn

from finessl.errors import UserError
from finessl.models.backbone import PeftModule, ViTBackbone
from finessl.models.peft_adapter import AdaptFormer, Adapter
from finessl.models.peft_lora import LoRA
from finessl.models.peft_ssf import SSF
from finessl.models.peft_vpt import VisualPrompts

__all__ = ["PEFT_MODULES", "VisualPrompts", "LoRA", "Adapter", "AdaptFormer", "SSF",
           "build_peft", "unfreeze", "build_vit_backbone"]

# Config switch -> builder(cfg, visual, first block). Built, and so called in each
# hook, in this order, the released one (docs/method.md §1): SSF scales the plain
# in-projection before LoRA adds its update (steps 3-4); the Adapter acts on the MLP
# output before AdaptFormer's branch is added (steps 10-11).
PEFT_MODULES = {
    "vpt_deep": lambda cfg, visual, first: VisualPrompts.from_config(cfg, visual, first, True),
    "vpt_shallow": lambda cfg, visual, first: VisualPrompts.from_config(cfg, visual, first, False),
    "ssf": SSF.from_config,
    "lora": LoRA.from_config,
    "adapter": Adapter.from_config,
    "adaptformer": AdaptFormer.from_config,
}


def first_tuned_block(cfg, num_blocks: int) -> int:
    """0, or L - K with ``partial K``."""
    if cfg.partial is None:
        return 0
    if cfg.partial > num_blocks:
        raise UserError(f"partial: {cfg.partial} blocks asked for, the backbone has {num_blocks}")
    return num_blocks - cfg.partial


def build_peft(cfg, visual: nn.Module) -> list[PeftModule]:
    """The PEFT modules the config switches on."""
    first = first_tuned_block(cfg, len(visual.transformer.resblocks))
    return [build(cfg, visual, first) for key, build in PEFT_MODULES.items() if cfg[key]]


def unfreeze(cfg, visual: nn.Module) -> None:
    """BitFit (Ben Zaken et al., ACL 2022): every bias term, LayerNorm biases included
    as in the paper; full fine-tuning: every weight that computes the feature (all but
    ``proj``, which maps the feature into CLIP's joint space and is read only by text
    init and zero-shot). With ``partial K``: the last K blocks and ``ln_post`` only."""
    if not (cfg.bias_tuning or cfg.finetune):
        return
    blocks = visual.transformer.resblocks
    first = first_tuned_block(cfg, len(blocks))
    if cfg.partial is None:
        params = [(n, p) for n, p in visual.named_parameters() if n != "proj"]
    else:
        params = [(n, p) for i in range(first, len(blocks)) for n, p in blocks[i].named_parameters()]
        params += list(visual.ln_post.named_parameters())
    for name, p in params:
        if cfg.finetune or name.endswith("bias"):
            p.requires_grad_(True)


def build_vit_backbone(cfg, visual: nn.Module, mean, std) -> ViTBackbone:
    """CLIP ViT image tower (frozen) with the fine-tuning strategy ``cfg`` asks for."""
    if cfg.bn_tuning:
        raise UserError(f"bn_tuning: {cfg.backbone} is a ViT, it has no BatchNorm layers "
                        f"(use bias_tuning, ssf, lora, ...)")
    backbone = ViTBackbone(visual, build_peft(cfg, visual), mean, std)
    unfreeze(cfg, visual)
    backbone.grad_checkpointing = cfg.grad_checkpointing
    return backbone
