"""Semi-supervised algorithms, one file each, registered by name (config key ``algorithm``).

To add one: copy ``fixmatch.py``, change its ``pseudo_label`` rule, register it
under a new name, and add the name to ``algorithm``'s choices in ``finessl/config.py``.
"""
from finessl.algorithms import (finessl, fixmatch, pseudolabel,  # noqa: F401  (register)
                                supervised, zeroshot)
from finessl.algorithms.base import ALGORITHMS, Algorithm, build_algorithm, register

__all__ = ["ALGORITHMS", "Algorithm", "build_algorithm", "register"]
