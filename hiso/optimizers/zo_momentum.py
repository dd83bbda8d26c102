"""ZO-SGD with server momentum over the scalar-only protocol.

It shows that the framework generalises beyond H: the momentum buffer is a d-vector, yet every
party rebuilds it from broadcast seeds and averaged scalars alone.

    m <- beta * m + Delta_r (+ weight_decay * x_r),   x_{r+1} = x_r - lr * m

(weight decay as torch's SGD with momentum adds it). Clients take plain ZO-SGD local steps (the
momentum is applied once per round, by every party). With beta = 0 this is DeComFL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import ScalarOptimizer, ZOConfig


@dataclass
class MomentumConfig(ZOConfig):
    beta: float = field(default=0.9, metadata={"ge": 0, "lt": 1})


class ZOMomentum(ScalarOptimizer):
    name = "zo_momentum"
    Config = MomentumConfig

    def init_state(self, params):
        return [torch.zeros_like(p, dtype=torch.float32) for p in params]

    def _apply(self, params, state, seeds, scalars, final: bool) -> None:
        if not final:
            return super()._apply(params, state, seeds, scalars, final)
        with torch.no_grad():
            for i, p in enumerate(params):
                delta = self._raw_direction(seeds[0], scalars[0], i, p)
                for ks, gs in zip(seeds[1:], scalars[1:]):
                    delta.add_(self._raw_direction(ks, gs, i, p))
                if self.cfg.weight_decay:
                    delta.add_(p, alpha=self.cfg.weight_decay)
                m = state[i]
                m.mul_(self.cfg.beta).add_(delta)
                p.add_(m, alpha=-self.cfg.lr)
