"""HiSo with a fixed H supplied by the task (the oracle of the theory checks).

H = Diag(A) + eps for a quadratic; it never changes, so catch-up needs no state replay. With
``block_size`` the diagonal is first averaged over chunks of that many coordinates of each
tensor (the block oracle that ``hiso_block``'s learned H is compared with, issue #15).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import ScalarOptimizer, ZOConfig
from ..errors import UserError


@dataclass
class OracleConfig(ZOConfig):
    eps: float = field(default=1e-2, metadata={"ge": 0})
    #: average Diag(A) over chunks of this many coordinates per tensor; null: the diagonal itself
    block_size: int | None = field(default=None, metadata={"ge": 1})


def _block_mean_(flat: torch.Tensor, size: int) -> None:
    """Replace every chunk of ``size`` coordinates (the last one shorter) by its mean, in place."""
    for start in range(0, flat.numel(), size):
        chunk = flat[start:start + size]
        chunk.fill_(float(chunk.double().mean()))


class HiSoOracle(ScalarOptimizer):
    name = "hiso_oracle"
    Config = OracleConfig

    def __init__(self, cfg, sampler, task=None):
        super().__init__(cfg, sampler, task)
        self._task = task

    def check_task(self, task) -> None:
        if getattr(task, "oracle_h", None) is None or task.oracle_h() is None:
            raise UserError(f"method.name: hiso_oracle needs a task that supplies its Hessian "
                            f"diagonal; task {task.name!r} does not")

    def init_state(self, params):
        H = self._task.oracle_h()
        state = [h.detach().to(p.device, torch.float32).clone().reshape(p.shape) for h, p in zip(H, params)]
        for h in state:
            if self.cfg.block_size is not None:
                _block_mean_(h.view(-1), self.cfg.block_size)
            h.add_(self.cfg.eps)
            if not bool((h > 0).all()):
                raise UserError("method.eps: oracle H + eps must be positive everywhere")
        return state

    def preconditioner(self, state):
        return state
