"""ZO-SGD over the scalar-only protocol: DeComFL (Li et al., ICLR 2025).

Directions are plain Gaussian (H = I); the update is the base class's.
"""

from .base import ScalarOptimizer, ZOConfig


class ZOSGD(ScalarOptimizer):
    name = "decomfl"
    Config = ZOConfig
