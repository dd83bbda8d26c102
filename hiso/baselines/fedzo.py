"""FedZO (Fang et al., 2022): ZO local steps with the client's own seeds, full-vector uploads."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..directions import derive
from ..optimizers.base import ZOConfig
from ..zo import combine, descend, estimate, step_coefficients
from .base import VectorMethod


@dataclass
class FedZOConfig(ZOConfig):
    server_lr: float = field(default=1.0, metadata={"gt": 0})


class FedZO(VectorMethod):
    name = "fedzo"
    Config = FedZOConfig

    def local_step(self, task, params, batch, seed: int) -> float:
        c = self.cfg
        seeds = [derive(seed, p) for p in range(c.perturbations)]
        scalars, f0 = estimate(lambda pert: task.loss(params, batch, pert), seeds, c.mu,
                               self.sampler, None, c.difference)
        coefs = step_coefficients(scalars)
        with torch.no_grad():
            for i, p in enumerate(params):
                descend(p, combine(self.sampler, seeds, coefs, i, p), c.lr, c.weight_decay)
        return f0
