"""HiSo with a scalar H per parameter tensor: a diagnostic control, not a method of the paper.

Same rounds, scalars, nu convention, eps and update timing as :class:`~hiso.optimizers.hiso.HiSo`,
but the new-information term of the H update is the *mean* over the tensor of Delta**2 instead of
Delta**2 itself, so every coordinate of a tensor keeps the same H (H starts at ones):

    H <- nu * H + (1 - nu) * (mean(Delta**2) + eps)        (nu_on_old; nu_on_new swaps weights)

Directions stay isotropic within a tensor; what is left of HiSo is its implicit, broadcast-free
step-size adaptation (the scale of H). Comparing the two separates the effect of the learned
diagonal's *shape* from that of its *scale*. With nu = 1 it is DeComFL bit for bit.
"""

from __future__ import annotations

import torch

from .hiso import HiSo, HiSoConfig


class HiSoScalar(HiSo):
    name = "hiso_scalar"
    Config = HiSoConfig
    elementwise_state = False  # the mean below is over the whole tensor

    def _update_h(self, H: torch.Tensor, delta: torch.Tensor) -> None:
        w_old, w_new = self._weights()
        H.mul_(w_old).add_(delta.square().mean().add_(self.cfg.eps), alpha=w_new)
