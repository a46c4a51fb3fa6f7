"""Semi-supervised algorithms, one file each, registered by name (config key ``algorithm``).

To add one, copy ``fixmatch.py`` to ``mymatch.py``, change its ``pseudo_label`` rule
and register it as ``@register("mymatch")``: every module of this package is
imported here, so ``algorithm mymatch`` works with no other edit.
"""
import importlib
import pkgutil

from finessl.algorithms.base import ALGORITHMS, Algorithm, build_algorithm, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ALGORITHMS", "Algorithm", "build_algorithm", "register"]
