"""The fine-tuning strategies of a CLIP ViT (docs/method.md §1), built from the config.

Module strategies plug into :class:`~finessl.models.backbone.ViTBackbone`'s hooks,
one file each: VPT (``peft_vpt``), LoRA (``peft_lora``), Adapter and AdaptFormer
(``peft_adapter``), SSF (``peft_ssf``). Weight strategies switch ``requires_grad``
on backbone parameters: BitFit (``bias_tuning``) and full fine-tuning
(``finetune``). Nothing switched on = linear probe: only the heads train.
Strategies compose (e.g. ``vpt_deep`` + ``lora``).

``partial K`` restricts the block-wise modules (deep prompts, LoRA, adapters, SSF)
to the last K blocks. As released, BitFit and fine-tuning ignore it (fine-tuning is
scoped by ``block_num K``: the last K blocks' weights) and shallow prompts enter at
block 0; ``partial_weights True`` makes BitFit / fine-tuning unfreeze only the last K
blocks plus ``ln_post``, the final LayerNorm above them, and ``partial_shallow True``
makes shallow prompts enter at block L - K (docs/differences.md).
"""
from __future__ import annotations

import torch.nn as nn

from finessl.errors import UserError
from finessl.models.backbone import PeftModule, ViTBackbone
from finessl.models.families import BACKBONES, BackboneFamily, OpenClipFamily, check_supported
from finessl.models.methods import (CNN, PEFT_METHODS, VIT, WeightStrategy, attach_all,
                                    peft_method, switched_on)
from finessl.models.peft_adapter import AdaptFormer, Adapter
from finessl.models.peft_lora import LoRA
from finessl.models.peft_ssf import SSF
from finessl.models.peft_vpt import VisualPrompts
from finessl.models.tower import train_tower_weights

__all__ = ["PEFT_METHODS", "VisualPrompts", "LoRA", "Adapter", "AdaptFormer", "SSF",
           "build_peft", "build_vit_backbone"]


@peft_method("bias_tuning", "BitFit: all backbone biases trainable", (VIT, CNN))
class BitFit(WeightStrategy):
    """BitFit (Ben Zaken et al., ACL 2022): every bias of the tower
    (:func:`~finessl.models.tower.train_tower_weights`)."""

    @classmethod
    def attach(cls, cfg, tower):
        partial = cfg.partial if cfg.partial_weights else None  # released: every bias
        train_tower_weights(tower, bias_tuning=True, finetune=False, partial=partial)


@peft_method("finetune", "full fine-tuning: every backbone weight trainable", (VIT, CNN))
class FullFineTuning(WeightStrategy):
    """Every weight that computes the feature
    (:func:`~finessl.models.tower.train_tower_weights`); the tower is told it is
    fine-tuned whole (a CNN then runs its BatchNorms in train mode)."""

    @classmethod
    def attach(cls, cfg, tower):
        partial = cfg.partial if cfg.partial_weights else None
        if cfg.block_num is not None:
            if partial is not None:
                raise UserError(f"block_num {cfg.block_num} and partial_weights True with "
                                f"partial {partial}: two scopes for finetune; choose one")
            blocks = getattr(tower, "num_blocks", None)
            if blocks is None or cfg.block_num > blocks:
                raise UserError(f"block_num: {cfg.block_num} blocks asked for, "
                                f"{cfg.backbone} has {blocks or 'no transformer'} blocks")
            # released: the last K blocks' weights only, not ln_post above them
            train_tower_weights(tower, bias_tuning=False, finetune=True,
                                partial=cfg.block_num, ln_post=False)
        else:
            train_tower_weights(tower, bias_tuning=False, finetune=True, partial=partial)
        tower.finetune = True


def first_tuned_block(cfg, num_blocks: int) -> int:
    """0, or L - K with ``partial K``."""
    if cfg.partial is None:
        return 0
    if cfg.partial > num_blocks:
        raise UserError(f"partial: {cfg.partial} blocks asked for, the backbone has {num_blocks}")
    return num_blocks - cfg.partial


def build_peft(cfg, visual: nn.Module) -> list[PeftModule]:
    """The PEFT modules the config switches on, in the released order of their hooks
    (docs/method.md §1): SSF scales the plain in-projection before LoRA adds its update
    (steps 3-4); the Adapter acts on the MLP output before AdaptFormer's branch is
    added (steps 10-11)."""
    first = first_tuned_block(cfg, len(visual.transformer.resblocks))
    return [cls.from_config(cfg, visual, first) for cls in switched_on(cfg)
            if issubclass(cls, PeftModule)]


def build_vit_backbone(cfg, visual: nn.Module, mean, std,
                       family: type[BackboneFamily] | None = None) -> ViTBackbone:
    """ViT image tower (frozen) with the fine-tuning strategies ``cfg`` switches on, of
    ``family`` (None: an open_clip ViT): module strategies built into its hooks, then
    every strategy attached (weight strategies switch on tower weights)."""
    check_supported(cfg, family or ClipViT)
    backbone = ViTBackbone(visual, build_peft(cfg, visual), mean, std)
    first_tuned_block(cfg, backbone.num_blocks)  # a partial K beyond the blocks: an error
    attach_all(cfg, backbone)
    return backbone


@BACKBONES.register("clip_vit", kind=VIT, label="ViT", priority=90)
class ClipViT(OpenClipFamily):
    """open_clip ViTs: any open_clip name no other family claims (asked last)."""

    @classmethod
    def claims(cls, backbone):
        return True

    @classmethod
    def input_size(cls, cfg):
        size = cls.native_size(cfg)
        if cfg.input_size and cfg.input_size != size:
            raise UserError(f"input_size: {cfg.backbone} takes {size} px inputs, got "
                            f"{cfg.input_size}")
        return size

    @classmethod
    def build(cls, cfg, visual, mean, std):
        return build_vit_backbone(cfg, visual, mean, std, cls)
