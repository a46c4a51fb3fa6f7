"""Semi-supervised algorithms, one file each, registered by name (config key ``algorithm``).

To add one, copy ``fixmatch.py`` to ``mymatch.py``, change its ``pseudo_label`` rule
and register it as ``@register("mymatch")``: every module of this package is
imported here, so ``algorithm mymatch`` works with no other edit.
"""
import torch

from finessl.algorithms.base import ALGORITHMS, Algorithm, register
from finessl.distributed import SINGLE, Dist
from finessl.registry import import_package_modules

import_package_modules(__name__, __path__)

from finessl.algorithms.imb import with_imb  # noqa: E402  (built on the modules above)


def algorithm_class(cfg) -> type[Algorithm]:
    """The class ``cfg`` trains with: ``algorithm``'s, with the imbalanced-SSL method
    ``imb`` on top when one is named (finessl/algorithms/imb/)."""
    chosen = ALGORITHMS.get(cfg.algorithm)
    return chosen if cfg.get("imb") is None else with_imb(chosen, cfg.imb)


def build_algorithm(cfg, model, num_classes, num_unlabeled, device, dist: Dist = SINGLE,
                    labeled_counts: torch.Tensor | None = None,
                    num_labeled: int | None = None) -> Algorithm:
    """The config's algorithm. ``dist``, ``labeled_counts`` (the labeled set's images per
    class, which the imbalanced methods read) and ``num_labeled`` (the labeled set's size,
    by default their sum: a bank over the labeled set is sized in ``initial_statistics``)
    are set before its ``__init__`` runs."""
    cls = algorithm_class(cfg)
    algorithm = cls.__new__(cls)
    algorithm.dist, algorithm.labeled_counts = dist, labeled_counts
    algorithm.num_labeled = (int(labeled_counts.sum()) if labeled_counts is not None else 0) \
        if num_labeled is None else num_labeled
    algorithm.__init__(cfg, model, num_classes, num_unlabeled, device)
    return algorithm

__all__ = ["ALGORITHMS", "Algorithm", "algorithm_class", "build_algorithm", "register"]
