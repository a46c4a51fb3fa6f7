"""Semi-supervised algorithms, one file each, registered by name (config key ``algorithm``)."""
from finessl.algorithms import finessl  # noqa: F401  (registers 'finessl')
from finessl.algorithms.base import ALGORITHMS, Algorithm, build_algorithm, register

__all__ = ["ALGORITHMS", "Algorithm", "build_algorithm", "register"]
