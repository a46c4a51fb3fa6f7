"""CNN backbones (CLIP ResNets, timm models): placeholder until the CNN strategies land."""
from __future__ import annotations

from finessl.errors import UserError

TIMM_ALIASES: dict[str, str] = {}


def load_timm(name: str, pretrained: str, cache_dir: str = ""):
    raise UserError(f"backbone: timm CNNs are not available yet ({name})")


def build_cnn_backbone(cfg, visual, mean, std):
    raise UserError(f"backbone: {cfg.backbone} is a CNN; CNN backbones are not available yet")
