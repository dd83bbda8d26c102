"""Scalar-only ZO optimisers, one module each, behind :class:`ScalarOptimizer`."""

from .base import ScalarOptimizer, ZOConfig
from .hiso import HiSo
from .hiso_block import HiSoBlock
from .hiso_oracle import HiSoOracle
from .hiso_scalar import HiSoScalar
from .mezo import MeZO
from .zo_momentum import ZOMomentum
from .zo_sgd import ZOSGD

SCALAR_METHODS = {cls.name: cls for cls in (ZOSGD, HiSo, HiSoOracle, ZOMomentum, MeZO, HiSoScalar,
                                                HiSoBlock)}

__all__ = ["ScalarOptimizer", "ZOConfig", "SCALAR_METHODS"]
