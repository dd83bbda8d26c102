"""HiSo: scalar-only federated ZO with a learned diagonal Hessian (ICLR 2026).

Directions are z = H^{-1/2} u. After the model step, H is updated from the step's aggregated
direction Delta, rebuilt from seeds and averaged scalars, so it costs no communication:

    H <- nu * H + (1 - nu) * (Delta**2 + eps)        (h_convention: "nu_on_old", the default)
    H <- (1 - nu) * H + nu * (Delta**2 + eps)        (h_convention: "nu_on_new", the paper's
                                                     equation as printed)

``h_update: round`` (the authors' code) updates H once per round with Delta the round's whole
direction; ``step`` updates it after every local step (clients use their own scalars inside a
round, the server the averaged ones). H starts at ones; with nu = 1 it stays at ones and HiSo is
DeComFL bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .base import ScalarOptimizer, ZOConfig
from ..errors import UserError


@dataclass
class HiSoConfig(ZOConfig):
    nu: float = field(default=0.95, metadata={"ge": 0, "le": 1})
    h_convention: Literal["nu_on_old", "nu_on_new"] = "nu_on_old"
    eps: float = field(default=1e-8, metadata={"ge": 0})
    h_update: Literal["round", "step"] = "round"
    h_init: float = field(default=1.0, metadata={"gt": 0})

    def check(self, path: str) -> None:
        old_weight = self.nu if self.h_convention == "nu_on_old" else 1.0 - self.nu
        if old_weight == 0.0 and self.eps == 0.0:
            raise UserError(f"{path}.eps: must be > 0 when H keeps no memory (nu={self.nu}, "
                            f"h_convention={self.h_convention}), or H can reach zero")


class HiSo(ScalarOptimizer):
    name = "hiso"
    Config = HiSoConfig

    def init_state(self, params):
        return [torch.full_like(p, self.cfg.h_init, dtype=torch.float32) for p in params]

    def preconditioner(self, state):
        return state

    def _weights(self) -> tuple[float, float]:
        nu = self.cfg.nu
        return (nu, 1.0 - nu) if self.cfg.h_convention == "nu_on_old" else (1.0 - nu, nu)

    def _apply(self, params, state, seeds, scalars, final: bool) -> None:
        self._round_delta: dict[int, torch.Tensor] = {}
        self._tau = len(seeds)
        super()._apply(params, state, seeds, scalars, final)

    def _after_step(self, state, i, k, step, final) -> None:
        tau_done = k == self._tau - 1
        if self.cfg.h_update == "step":
            self._update_h(state[i], step)
        elif final:
            # Delta_r = sum_k of the round's steps; H changes once, after the model step
            acc = self._round_delta.get(i)
            acc = step.clone() if acc is None else acc.add_(step)
            self._round_delta[i] = acc
            if tau_done:
                self._update_h(state[i], self._round_delta.pop(i))

    def _update_h(self, H: torch.Tensor, delta: torch.Tensor) -> None:
        w_old, w_new = self._weights()
        H.mul_(w_old).add_(delta.square().add_(self.cfg.eps), alpha=w_new)
