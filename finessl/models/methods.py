"""The registry of fine-tuning strategies (PEFT methods), by config switch.

A strategy is registered with :func:`peft_method`, which declares its on/off switch
(``lora False``) in the config tree and says what it serves: kinds of backbone
(``"vit"``, ``"cnn"``: every family declares its ``kind``, see
``finessl/models/families.py``) or single families by name (``"timm_vit"``). Asking
for it on a backbone it does not serve is a one-line error
(:func:`~finessl.models.families.check_supported`), never silently ignored.

Two kinds:
- module strategies subclass :class:`~finessl.models.backbone.PeftModule` and are
  built by ``from_config(cfg, visual, first_block)``; they plug into the ViT block
  loop's hooks, in the order of their ``order`` (the released order of operations,
  docs/method.md §1: VPT 0, SSF 10, LoRA 20, Adapter 30, AdaptFormer 40; new ones 50);
- weight strategies (:class:`WeightStrategy`: BitFit, BatchNorm tuning, full
  fine-tuning) change the built tower in place.

Either applies itself to a built tower with :meth:`Strategy.attach`, which the family
calls for every strategy switched on (:func:`attach_all`): a new strategy needs no
argument, flag or list entry in the towers' code.
"""
from __future__ import annotations

from finessl.config import declare
from finessl.registry import Registry

PEFT_METHODS = Registry("fine-tuning strategy", "PEFT switch", config_key=False)
VIT, CNN = "vit", "cnn"  # the kinds of backbone family (``BackboneFamily.kind``)


def peft_method(name: str, comment: str, serves: tuple[str, ...] = (VIT,), order: float = 50):
    """Class decorator: register a strategy under its config switch ``name`` (declared
    here, default False, ``comment`` its line in docs/configuration.md; a switch shapes
    the model, so a SemiKD teacher must match it), serving the backbone kinds or
    families named in ``serves``."""
    def wrap(cls):
        declare(name, False, comment, shapes_model=True)
        cls.serves, cls.order = tuple(serves), order
        return PEFT_METHODS.register(name)(cls)
    return wrap


class Strategy:
    """What every strategy has: what it ``serves``, and how it applies to a built tower."""

    serves: tuple[str, ...] = ()

    @classmethod
    def serves_family(cls, family) -> bool:
        """Whether this strategy applies to backbone ``family`` (its name or its kind)."""
        return family.name in cls.serves or family.kind in cls.serves

    @classmethod
    def attach(cls, cfg, tower) -> None:
        """Apply the strategy to ``tower`` once it is built (default: nothing; a ViT's
        module strategies are built into its block hooks, ``from_config``)."""


class WeightStrategy(Strategy):
    """A strategy that trains tower weights in place (no module of its own)."""


def switched_on(cfg) -> list[type]:
    """The registered strategies ``cfg`` switches on, in hook order."""
    chosen = [cls for name, cls in PEFT_METHODS.items() if cfg.get(name)]
    return sorted(chosen, key=lambda cls: cls.order)


def attach_all(cfg, tower) -> list[str]:
    """Every strategy ``cfg`` switches on, applied to ``tower`` in hook order; their
    names (for the log)."""
    chosen = switched_on(cfg)
    for cls in chosen:
        cls.attach(cfg, tower)
    return [cls.name for cls in chosen]
