"""The registry of fine-tuning strategies (PEFT methods), by config switch.

A strategy is registered with :func:`peft_method`, which declares its on/off switch
(``lora False``) in the config tree and names the backbone families it serves
(:data:`VIT_FAMILIES`, :data:`CNN_FAMILIES`, see ``finessl/models/families.py``).
Asking for it on another family is a one-line error
(:func:`~finessl.models.families.check_supported`), never silently ignored.

Two kinds:
- module strategies subclass :class:`~finessl.models.backbone.PeftModule` and are
  built by ``from_config(cfg, visual, first_block)``; they plug into the ViT block
  loop's hooks, in the order of their ``order`` (the released order of operations,
  docs/method.md §1: VPT 0, SSF 10, LoRA 20, Adapter 30, AdaptFormer 40; new ones 50);
- weight strategies (:class:`WeightStrategy`: BitFit, BatchNorm tuning, full
  fine-tuning) only switch ``requires_grad`` on tower weights; the tower applies them.
"""
from __future__ import annotations

from finessl.config import declare
from finessl.registry import Registry

PEFT_METHODS = Registry("fine-tuning strategy", "PEFT switch", config_key=False)
# Backbone families (finessl/models/families.py) by kind, for ``families``.
VIT_FAMILIES = ("clip_vit",)
CNN_FAMILIES = ("clip_resnet", "timm_cnn")
ALL_FAMILIES = VIT_FAMILIES + CNN_FAMILIES


def peft_method(name: str, comment: str, families: tuple[str, ...], order: float = 50):
    """Class decorator: register a strategy under its config switch ``name`` (declared
    here, default False, ``comment`` its line in docs/configuration.md), serving the
    backbone ``families`` named."""
    def wrap(cls):
        declare(name, False, comment)
        cls.families, cls.order = tuple(families), order
        return PEFT_METHODS.register(name)(cls)
    return wrap


class WeightStrategy:
    """A strategy that trains tower weights in place (no module of its own)."""

    families: tuple[str, ...] = ()


def switched_on(cfg) -> list[type]:
    """The registered strategies ``cfg`` switches on, in hook order."""
    chosen = [cls for name, cls in PEFT_METHODS.items() if cfg.get(name)]
    return sorted(chosen, key=lambda cls: cls.order)
