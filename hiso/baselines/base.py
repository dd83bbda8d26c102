"""Baselines that exchange full vectors: the same rounds and ledger, different messages.

A sampled client downloads the model, runs tau local steps and uploads its model change
x_local - x_r; the server averages the changes and applies its own update rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..directions import DirectionSampler
from ..zo import Params, descend


@dataclass
class FOConfig:
    lr: float = field(default=1e-2, metadata={"gt": 0})            # client step size
    server_lr: float = field(default=1.0, metadata={"gt": 0})
    #: SGD weight decay on the client's steps, x <- x - lr (grad + weight_decay x), as the
    #: ZO methods' ``weight_decay`` (the authors' torch SGD on classification tasks: 5e-4)
    weight_decay: float = field(default=0.0, metadata={"ge": 0})


class VectorMethod:
    name = "vector"
    Config: type = FOConfig
    centralised = False

    def __init__(self, cfg, sampler: DirectionSampler, task=None):
        self.cfg = cfg
        self.sampler = sampler

    def check_task(self, task) -> None:
        pass

    def init_state(self, params: Params) -> Params:
        return []

    def local_step(self, task, params: Params, batch, seed: int) -> float:
        """One client step in place; returns the training loss at the step's start."""
        loss, grads = task.loss_and_grad(params, batch)
        with torch.no_grad():
            for p, g in zip(params, grads):
                descend(p, g, self.cfg.lr, self.cfg.weight_decay)
        return loss

    def server_update(self, params: Params, state: Params, mean_change: Params) -> None:
        """x <- x + server_lr * mean change (FedAvg)."""
        with torch.no_grad():
            for p, d in zip(params, mean_change):
                p.add_(d, alpha=self.cfg.server_lr)
