"""Backbone + PEFT + main head + detached auxiliary head, built from the config."""
from __future__ import annotations

import logging

import open_clip
import torch
import torch.nn as nn

from finessl.models.backbone import (OPENAI_MEAN, OPENAI_STD, ViTBackbone, load_clip,
                                     resolve_model_name)
from finessl.models.heads import CosineHead, ZeroShotHead, class_text_embeddings, text_init_weight
from finessl.models.peft import build_peft

log = logging.getLogger(__name__)


class FineSSLModel(nn.Module):
    """Returns the main logits and the auxiliary logits of a batch of images.

    The auxiliary head f_aux sees ``feat.detach()`` (METHOD.md §1): no gradient of
    an aux loss reaches the PEFT parameters, which is what keeps the smoothed aux
    targets from flattening the main head's confidence (the "decoupled" of DLS).
    """

    def __init__(self, backbone: ViTBackbone, head: nn.Module, aux_head: CosineHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.backbone(images)
        return self.head(feat), self.aux_head(feat.detach())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: PEFT parameters and both heads."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state]
        unexpected = [n for n in state if n not in params]
        if missing or unexpected:
            raise KeyError(f"checkpoint does not match the model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)


def build_model(cfg, classnames: list[str], device: torch.device, half: bool,
                mean=OPENAI_MEAN, std=OPENAI_STD) -> FineSSLModel:
    """CLIP image tower (frozen, optionally fp16) + PEFT + cosine heads on ``device``;
    uint8 inputs are normalised with the dataset's ``mean`` / ``std``."""
    clip_model = load_clip(cfg.backbone, cfg.pretrained, cfg.cache_dir)
    clip_model.requires_grad_(False).eval()
    visual = clip_model.visual
    weight = text = None
    if not cfg.rand_init or cfg.algorithm == "zeroshot":
        tokenizer = open_clip.get_tokenizer(resolve_model_name(cfg.backbone))
        text = class_text_embeddings(clip_model, tokenizer, classnames, cfg.template)
        weight = None if cfg.rand_init else text_init_weight(text, visual.proj)
    width = visual.transformer.width
    peft = build_peft(cfg, len(visual.transformer.resblocks), width,
                      tuple(visual.conv1.kernel_size))
    backbone = ViTBackbone(visual, peft, mean, std)
    backbone.grad_checkpointing = cfg.grad_checkpointing
    if half:
        backbone.visual.half()
    if cfg.algorithm == "zeroshot":
        head = ZeroShotHead(visual.proj, text, clip_model.logit_scale.exp().item())
    else:
        head = CosineHead(width, len(classnames), weight)
    aux_head = CosineHead(width, len(classnames))
    if isinstance(head, CosineHead):
        with torch.no_grad():
            aux_head.weight.copy_(head.weight)  # f_aux starts as a copy of f (METHOD.md §1)
    model = FineSSLModel(backbone, head, aux_head).to(device)
    if cfg.compile:
        backbone.compile()  # in place: parameter names, and so checkpoints, are unchanged
    del clip_model
    return model
