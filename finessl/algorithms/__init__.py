"""Semi-supervised algorithms, one file each, registered by name (config key ``algorithm``).

To add one, copy ``fixmatch.py`` to ``mymatch.py``, change its ``pseudo_label`` rule
and register it as ``@register("mymatch")``: every module of this package is
imported here, so ``algorithm mymatch`` works with no other edit.
"""
from finessl.algorithms.base import ALGORITHMS, Algorithm, build_algorithm, register
from finessl.registry import import_package_modules

import_package_modules(__name__, __path__)

__all__ = ["ALGORITHMS", "Algorithm", "build_algorithm", "register"]
