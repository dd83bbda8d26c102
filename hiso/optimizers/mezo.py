"""Centralised MeZO (Malladi et al., 2023): ZO-SGD with one client holding all the data.

Same update as DeComFL; the run resolver forces ``federation.clients = sampled = 1``, so the
ledger counts what a single worker would exchange with a parameter server.
"""

from .base import ZOConfig
from .zo_sgd import ZOSGD


class MeZO(ZOSGD):
    name = "mezo"
    Config = ZOConfig
    centralised = True
