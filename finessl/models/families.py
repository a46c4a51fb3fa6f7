"""Backbone families, registered by name: how each kind of image tower is recognised
from the ``backbone`` value, loaded with its weights, sized, and wrapped with the
fine-tuning strategies it serves.

- ``clip_vit`` (``finessl/models/peft.py``): open_clip ViTs (``ViT-B/16``, any open_clip
  ViT name, a model-config JSON);
- ``clip_resnet`` and ``timm_cnn`` (``finessl/models/cnn.py``): open_clip's CLIP ResNets
  (``RN50``, ...) and timm CNNs (``timm:<model>``, ``efficientnet_lite0``).

A new family is one file: a :class:`BackboneFamily` subclass registered with
``@BACKBONES.register(name)`` beside the code that wraps its tower; fine-tuning
strategies name the families they serve (``finessl/models/methods.py``).
"""
from __future__ import annotations

import os

import open_clip
import torch.nn as nn

from finessl.errors import UserError
from finessl.models import clip_weights
from finessl.models.clip import load_clip, pretrained_source, resolve_model_name
from finessl.models.methods import PEFT_METHODS, switched_on
from finessl.models.tower import ImageTower
from finessl.registry import Registry

BACKBONES = Registry("backbone family", "backbone", config_key=False)


class BackboneFamily:
    """One kind of image tower. ``label`` names its kind in messages ("ViT", "CNN");
    families are asked in ``priority`` order whether they :meth:`claim` a name."""

    label = "ViT"
    priority = 50

    @classmethod
    def claims(cls, backbone: str) -> bool:
        raise NotImplementedError

    @classmethod
    def input_size(cls, cfg) -> int:
        """Side of the views the tower takes (``input_size``, else its own)."""
        return cfg.input_size or 224

    @classmethod
    def check_weights(cls, cfg) -> None:
        """What a run (and ``--dry-run``) checks before building anything: the model
        name is known and its weights are at hand (a file, a cache) or can be fetched
        now; else the one-line UserError :meth:`load` would raise."""

    @classmethod
    def load(cls, cfg, half: bool) -> tuple[nn.Module, nn.Module | None]:
        """(image tower, CLIP model with its text tower or None), weights loaded."""
        raise NotImplementedError

    @classmethod
    def build(cls, cfg, visual: nn.Module, mean, std) -> ImageTower:
        """The tower wrapped with the strategies ``cfg`` switches on."""
        raise NotImplementedError


def open_clip_vision_cfg(backbone: str) -> dict:
    return open_clip.get_model_config(resolve_model_name(backbone))["vision_cfg"]


class OpenClipFamily(BackboneFamily):
    """A family of open_clip models: loaded with their weights and text tower."""

    @classmethod
    def check_weights(cls, cfg):
        name = resolve_model_name(cfg.backbone)
        source = pretrained_source(name, cfg.pretrained)
        if source is not None and not os.path.isfile(source):  # a tag
            clip_weights.require(name, source, cfg.cache_dir)

    @classmethod
    def load(cls, cfg, half):
        clip_model = load_clip(cfg.backbone, cfg.pretrained, cfg.cache_dir,
                               "fp16" if half else "fp32")
        clip_model.requires_grad_(False).eval()
        return clip_model.visual, clip_model

    @classmethod
    def native_size(cls, cfg) -> int:
        """The input side of the model's config."""
        size = open_clip_vision_cfg(cfg.backbone)["image_size"]
        return size if isinstance(size, int) else size[0]


def family_of(backbone: str) -> type[BackboneFamily]:
    """The family whose :meth:`~BackboneFamily.claims` takes ``backbone`` first."""
    for _, family in sorted(BACKBONES.items(), key=lambda item: item[1].priority):
        if family.claims(backbone):
            return family
    raise UserError(f"backbone: no backbone family takes {backbone!r}")


def check_supported(cfg, family: type[BackboneFamily]) -> None:
    """A one-line error for a strategy switched on that ``family`` does not serve."""
    labels = {name: f.label for name, f in BACKBONES.items()}
    for method in switched_on(cfg):
        if family.name not in method.families:
            served = "/".join(sorted({labels.get(f, f) for f in method.families}))
            others = [n for n, m in PEFT_METHODS.items() if family.name in m.families]
            raise UserError(f"{method.name}: a {served}-only strategy; {cfg.backbone} is a "
                            f"{family.label} (use {', '.join(others)})")
