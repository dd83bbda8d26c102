"""Full-vector baselines, one module each, behind :class:`VectorMethod`."""

from .base import VectorMethod
from .fedadam import FedAdam
from .fedavg import FedAvg
from .fedzo import FedZO

VECTOR_METHODS = {cls.name: cls for cls in (FedAvg, FedAdam, FedZO)}

__all__ = ["VectorMethod", "VECTOR_METHODS"]
