"""Backbone families, registered by name: how each kind of image tower is recognised
from the ``backbone`` value, loaded with its weights, sized, and wrapped with the
fine-tuning strategies it serves.

- ``clip_vit`` (``finessl/models/peft.py``): open_clip ViTs (``ViT-B/16``, any open_clip
  ViT name, a model-config JSON);
- ``timm_vit`` (``finessl/models/timm_vit.py``): timm ViTs (``timm:vit_*``, SemiKD's
  ``IN21K-ViT-*`` students), moved into an open_clip tower;
- ``clip_resnet`` and ``timm_cnn`` (``finessl/models/cnn.py``): open_clip's CLIP ResNets
  (``RN50``, ...) and timm CNNs (``timm:<model>``, ``efficientnet_lite0``).

A new family is one file: a :class:`BackboneFamily` subclass registered with
``@BACKBONES.register(name)`` beside the code that wraps its tower, declaring its
``kind`` (``"vit"`` or ``"cnn"``): fine-tuning strategies serve kinds (or single
families by name, ``finessl/models/methods.py``), so every strategy of its kind
serves it with no other edit. open_clip and timm are imported when a model is built,
not with this package: a config error never waits for them.
"""
from __future__ import annotations

import os

import torch.nn as nn

from finessl.errors import UserError
from finessl.models import clip_weights
from finessl.models.clip import load_clip, open_clip_lib, pretrained_source, resolve_model_name
from finessl.models.methods import PEFT_METHODS, switched_on
from finessl.models.tower import ImageTower
from finessl.registry import Registry

BACKBONES = Registry("backbone family", "backbone", config_key=False)


class BackboneFamily:
    """One family of image towers, of a ``kind`` (``"vit"``, ``"cnn"``: which strategies
    serve it) that ``label`` names in messages ("ViT", "CNN"); families are asked in
    ``priority`` order whether they :meth:`claim` a name."""

    kind: str = ""
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
    def student_pretrained(cls, backbone: str, value: str, cache_dir: str) -> str:
        """``pretrained`` for a SemiKD student of this family from ``stu_pretrained``
        ``value`` (docs/semikd.md): 'default' made concrete, else the value as given."""
        if value.lower() == "default":
            raise UserError(f"stu_pretrained: {backbone} has no default weights; give a tag, "
                            f"a local file or none (random init)")
        return value

    @classmethod
    def build(cls, cfg, visual: nn.Module, mean, std) -> ImageTower:
        """The tower wrapped with the strategies ``cfg`` switches on."""
        raise NotImplementedError


def open_clip_vision_cfg(backbone: str) -> dict:
    name = resolve_model_name(backbone)
    return open_clip_lib().get_model_config(name)["vision_cfg"]


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
    def student_pretrained(cls, backbone, value, cache_dir):
        """'default': the model's ``openai`` weights, else its first open_clip tag."""
        if value.lower() != "default":
            return value
        tags = open_clip_lib().list_pretrained_tags_by_model(resolve_model_name(backbone))
        if not tags:
            raise UserError(f"stu_pretrained: {backbone} has no open_clip pretrained weights; "
                            f"give a local file (stu_pretrained /path/to/weights.pt) or none "
                            f"(random init)")
        return "openai" if "openai" in tags else tags[0]

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
    labels = {f.kind: f.label for _, f in BACKBONES.items()}  # "vit" -> "ViT"
    labels.update({name: f.label for name, f in BACKBONES.items()})
    for method in switched_on(cfg):
        if not method.serves_family(family):
            served = "/".join(sorted({labels.get(s, s) for s in method.serves}))
            others = [n for n, m in PEFT_METHODS.items() if m.serves_family(family)]
            raise UserError(f"{method.name}: a {served}-only strategy; {cfg.backbone} is a "
                            f"{family.label} (use {', '.join(others)})")
