"""FedAdam (Reddi et al., 2021): local SGD, Adam on the server with the negated mean change as
pseudo-gradient (no bias correction, eps as the paper's adaptivity tau)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import FOConfig, VectorMethod


@dataclass
class FedAdamConfig(FOConfig):
    server_lr: float = field(default=1e-2, metadata={"gt": 0})
    beta1: float = field(default=0.9, metadata={"ge": 0, "lt": 1})
    beta2: float = field(default=0.99, metadata={"ge": 0, "lt": 1})
    adam_eps: float = field(default=1e-3, metadata={"gt": 0})


class FedAdam(VectorMethod):
    name = "fedadam"
    Config = FedAdamConfig

    def init_state(self, params):
        return [torch.zeros_like(p) for p in params] + [torch.zeros_like(p) for p in params]

    def server_update(self, params, state, mean_change):
        n = len(params)
        c = self.cfg
        with torch.no_grad():
            for p, d, m, v in zip(params, mean_change, state[:n], state[n:]):
                m.mul_(c.beta1).add_(d, alpha=-(1 - c.beta1))       # pseudo-gradient is -d
                v.mul_(c.beta2).addcmul_(d, d, value=1 - c.beta2)
                p.addcdiv_(m, v.sqrt().add_(c.adam_eps), value=-c.server_lr)
