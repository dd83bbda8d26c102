"""HiSo: scalar-only federated ZO with a learned diagonal Hessian (ICLR 2026).

Directions are z = H^{-1/2} u. H is fixed within a round (every local step, the client's and the
server's, uses the round-start H_r). After the round's model update, H is updated from aggregated
step directions Delta, rebuilt from seeds and averaged scalars, so it costs no communication:

    H <- nu * H + (1 - nu) * (Delta**2 + eps)        (h_convention: "nu_on_old", the default)
    H <- (1 - nu) * H + nu * (Delta**2 + eps)        (h_convention: "nu_on_new", the paper's
                                                     equation as printed)

Which Delta feeds it (``h_source``; Delta_k = H^{-1/2} (1/P) sum_p gbar_kp u_kp is step k's
aggregated direction, gbar the averaged scalars):

* ``last_step`` (default; the authors' default): one update per round from the round's last
  local step, Delta_tau built with H_r (the direction the model took).
* ``round_sum``: one update per round from the sum of the round's steps, sum_k Delta_k with H_r
  (hiso before it followed the authors' code).
* ``every_step`` (the authors' per-step option): tau updates in turn, k = 1..tau, Delta_k rebuilt
  with the H already updated by steps 1..k-1 (the model's steps still used H_r).

With tau = 1 the three are the same update. ``eps`` is our addition (the paper's, to keep H
positive definite; the authors' code adds none: set ``eps: 0`` for theirs). H starts at ones
(``h_init``); with nu = 1 it stays there and HiSo is DeComFL bit for bit, whatever ``h_source``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .base import ScalarOptimizer, ZOConfig, state_slice
from ..errors import UserError


@dataclass
class HiSoConfig(ZOConfig):
    nu: float = field(default=0.95, metadata={"ge": 0, "le": 1})
    h_convention: Literal["nu_on_old", "nu_on_new"] = "nu_on_old"
    eps: float = field(default=1e-8, metadata={"ge": 0})
    h_source: Literal["last_step", "round_sum", "every_step"] = "last_step"
    h_init: float = field(default=1.0, metadata={"gt": 0})

    def check(self, path: str) -> None:
        old_weight = self.nu if self.h_convention == "nu_on_old" else 1.0 - self.nu
        if old_weight == 0.0 and self.eps == 0.0:
            raise UserError(f"{path}.eps: must be > 0 when H keeps no memory (nu={self.nu}, "
                            f"h_convention={self.h_convention}), or H can reach zero")


class HiSo(ScalarOptimizer):
    name = "hiso"
    Config = HiSoConfig

    def __init__(self, cfg, sampler, task=None):
        super().__init__(cfg, sampler, task)
        self.keeps_raw = cfg.h_source == "every_step"

    def init_state(self, params):
        return [torch.full_like(p, self.cfg.h_init, dtype=torch.float32) for p in params]

    def preconditioner(self, state):
        return state

    def _weights(self) -> tuple[float, float]:
        nu = self.cfg.nu
        return (nu, 1.0 - nu) if self.cfg.h_convention == "nu_on_old" else (1.0 - nu, nu)

    def _apply(self, params, state, seeds, scalars, final: bool) -> None:
        self._tau = len(seeds)
        # per tensor (and slice): tensors update concurrently
        self._round_sums: dict[tuple, torch.Tensor] = {}
        super()._apply(params, state, seeds, scalars, final)

    def _fused_h_update(self, final: bool):
        # one step: last_step, round_sum and every_step all update H from that step's direction
        if type(self)._update_h is not HiSo._update_h:
            return None
        return (*self._weights(), self.cfg.eps) if final else ()

    def _after_step(self, state, i, k, raw, step, span=None) -> None:
        last = k == self._tau - 1
        source = self.cfg.h_source
        H = state_slice(state[i], span)
        if source == "every_step":
            # step k's direction rebuilt with the H that steps 1..k-1 already updated
            self._update_h(H, raw.mul_(torch.rsqrt(H)))
        elif source == "last_step":
            if last:
                self._update_h(H, step)
        else:  # round_sum: each step is a fresh tensor, so the first one holds the sum
            key = (i, None if span is None else span[0])
            acc = self._round_sums.get(key)
            acc = self._round_sums[key] = step if acc is None else acc.add_(step)
            if last:
                self._update_h(H, self._round_sums.pop(key))

    def _update_h(self, H: torch.Tensor, delta: torch.Tensor) -> None:
        w_old, w_new = self._weights()
        H.mul_(w_old).add_(delta.square().add_(self.cfg.eps), alpha=w_new)
