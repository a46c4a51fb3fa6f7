"""Imbalanced-SSL methods applied on top of a pseudo-labelling algorithm (config key
``imb``: ``algorithm fixmatch imb abc``), as USB's imbalanced track runs them.

Each method is one file here: a mixin registered in :data:`IMB_METHODS` with
``@register_imb("name")``, written against :class:`PseudoLabeling`'s hooks
(``pseudo_label``, ``extra_losses``, ``extra_modules``, ``initial_statistics``) and
always calling ``super()``, so that it composes with any base algorithm.
:func:`with_imb` puts the mixin before the base algorithm's class; the run is named
``fixmatch+abc`` in reports and sweeps (:meth:`ImbMethod.method_label`).
"""
from __future__ import annotations

import functools

import torch

from finessl.algorithms.base import ALGORITHMS
from finessl.algorithms.pseudo_labeling import PseudoLabeling
from finessl.config import cross_check, declare
from finessl.errors import UserError
from finessl.registry import Registry, import_package_modules

# ``imb`` may be null, so the registry does not check the key itself: _imb_fits does.
IMB_METHODS = Registry("method for imbalanced SSL", "imb", config_key=False)
register_imb = IMB_METHODS.register

declare("imb", None, "imbalanced-SSL method applied on top of the pseudo-labelling 'algorithm': abc, darp, saw, adsh, crest, crest+, daso (null = none; finessl/algorithms/imb/)", types=(str,))


class ImbMethod:
    """Base of the mixins: the epoch the run is in (a statistic, since a mid-epoch
    resume does not call ``on_epoch_start``) and the labeled set's class counts."""

    imb = ""  # the method's name, set on the composed class by with_imb
    grows_labeled = False  # True: adds pseudo-labelled images to the labeled set (CReST)

    def initial_statistics(self):
        return {**super().initial_statistics(),
                "imb_epoch": torch.zeros((), dtype=torch.long, device=self.device)}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.imb_epoch.fill_(epoch)

    def labeled_distribution(self) -> torch.Tensor:
        """The labeled set's images per class (float64), as the trainer counted them."""
        if self.labeled_counts is None:
            raise UserError(f"imb {self.imb}: needs the labeled set's class counts "
                            f"(build_algorithm(labeled_counts=...))")
        return self.labeled_counts.to(self.device, torch.float64)

    def method_label(self) -> str:
        label = super().method_label()  # 'fixmatch+bms': the method goes after the name
        return f"{self.name}+{self.imb}{label[len(self.name):]}"


@functools.lru_cache(maxsize=None)
def with_imb(base: type, imb: str) -> type:
    """The class of ``base`` with the imbalanced method ``imb`` on top (one class per
    pair, so the same pair is the same class)."""
    method = IMB_METHODS.get(imb)
    return type(f"{base.__name__}_{method.__name__}", (method, base),
                {"name": base.name, "order": base.order, "imb": method.name})


@cross_check
def _imb_fits(cfg) -> None:
    if cfg.imb is None:
        return
    method, base = IMB_METHODS.get(cfg.imb), ALGORITHMS.get(cfg.algorithm)
    if not issubclass(base, PseudoLabeling):
        raise UserError(f"imb {cfg.imb}: applies on top of a pseudo-labelling algorithm "
                        f"(fixmatch, flexmatch, ...), not algorithm {cfg.algorithm}")
    if method.grows_labeled and base.labeled_state:
        raise UserError(f"imb {cfg.imb}: adds images to the labeled set during the run, and "
                        f"algorithm {cfg.algorithm} keeps state per labeled image of a fixed set")


import_package_modules(__name__, __path__)
