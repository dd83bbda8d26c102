"""The scalar-only optimiser interface.

An optimiser fits the scalar-only framework when its update is "scalar times a seeded vector"
and its state is a deterministic function of the broadcast seeds and scalars. It provides:

* ``init_state(params)``: the state at round 0 (e.g. H = 1), identical for every party;
* ``preconditioner(state)``: the H that shapes directions, z = H^{-1/2} u (``None`` for identity);
* ``local_step(params, state, seeds, scalars)``: a client's own step inside a round;
* ``round_update(params, state, seeds, scalars)``: the round's update from the *averaged*
  scalars of all tau steps, then the state's. Server, catch-up replay and resume all call this
  one method, so they compute bit-identical parameters and state.
* ``diagnostics(state)``: a few floats describing the state, logged with every evaluation
  (for a preconditioner H: its mean / min / max and those of the effective step lr / H).

Within a round the state (H) is fixed: every step of the round, a client's own and the server's,
uses the round-start H, as in the authors' code. ``weight_decay`` adds SGD-style decay to every
step (``zo.descend``); it is a function of x alone, so it costs no communication.

Estimating the scalars is shared (``hiso.zo.estimate``): optimisers differ only in how they
shape directions and how they update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from .. import fused
from ..directions import DirectionSampler
from ..zo import Params, combine, descend, each_tensor, estimate, step_coefficients


@dataclass
class ZOConfig:
    """Keys shared by every scalar-only ZO method."""

    lr: float = field(default=1e-3, metadata={"gt": 0})
    mu: float = field(default=1e-3, metadata={"gt": 0})
    perturbations: int = field(default=5, metadata={"ge": 1})
    difference: Literal["forward", "central"] = "forward"
    directions: Literal["gaussian", "rademacher", "rademacher_bits"] = "gaussian"
    #: SGD-style decay on every ZO step, x <- x - lr (g_dir + weight_decay x) (the authors use
    #: 5e-4 on classification tasks); 0 leaves the update exactly as without it
    weight_decay: float = field(default=0.0, metadata={"ge": 0})


def h_statistics(H: Params, lr: float) -> dict[str, float]:
    """``h_mean/min/max`` of a list of positive tensors and ``lr_eff_mean/min/max`` of lr / H."""
    n, h_sum, inv_sum = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    with torch.no_grad():
        for h in H:
            h64 = h.detach().double()
            n += h64.numel()
            h_sum += float(h64.sum())
            inv_sum += float(h64.reciprocal().sum())
            lo, hi = min(lo, float(h64.min())), max(hi, float(h64.max()))
    return {"h_mean": h_sum / n, "h_min": lo, "h_max": hi,
            "lr_eff_mean": lr * inv_sum / n, "lr_eff_min": lr / hi, "lr_eff_max": lr / lo}


#: elements per slice of a one-step update after ``combine`` (temporaries stay in cache)
UPDATE_SLICE = 1 << 17


def state_slice(t: torch.Tensor, span: tuple[int, int] | None) -> torch.Tensor:
    """``t`` itself, or elements a..b-1 of its flattened view (a view: writes reach ``t``)."""
    return t if span is None else t.view(-1)[span[0] : span[1]]


class ScalarOptimizer:
    """Base class: ZO-SGD's update, with hooks for a preconditioner and extra state."""

    name = "zo"
    Config: type = ZOConfig
    #: whether ``_after_step`` reads ``raw`` (else the step is preconditioned in place)
    keeps_raw = False
    #: whether ``_after_step``'s state update is elementwise, so that a one-step update may run
    #: slice by slice (False when it reduces over the tensor, as hiso_scalar's mean does)
    elementwise_state = True
    #: float32 scalars uploaded per perturbation (a step's row holds P of each kind in turn)
    scalars_per_perturbation = 1

    def __init__(self, cfg: ZOConfig, sampler: DirectionSampler, task=None):
        self.cfg = cfg
        self.sampler = sampler

    # -- state -------------------------------------------------------------------------------
    def init_state(self, params: Params) -> Params:
        return []

    def preconditioner(self, state: Params) -> Params | None:
        return None

    def diagnostics(self, state: Params) -> dict[str, float]:
        """H's mean / min / max over every coordinate, and the effective step size's.

        The update is lr H^{-1/2} (g z) with z = H^{-1/2} u, so its expectation is lr H^{-1}
        times the gradient: lr / H is the step each coordinate takes. Empty without an H.
        """
        H = self.preconditioner(state)
        if not H:
            return {}
        return h_statistics(H, self.cfg.lr)

    # -- scalars -----------------------------------------------------------------------------
    def forwards_per_step(self) -> int:
        """Loss evaluations one client makes per local step (what ``estimate`` calls)."""
        P = self.cfg.perturbations
        return P + 1 if self.cfg.difference == "forward" else 2 * P

    def estimate(self, loss, seeds: Sequence[int], H: Params | None) -> tuple[np.ndarray, float]:
        """One local step's uploaded row (float32, P * scalars_per_perturbation) and its loss."""
        return estimate(loss, seeds, self.cfg.mu, self.sampler, H, self.cfg.difference)

    # -- updates -----------------------------------------------------------------------------
    def local_step(self, params: Params, state: Params, seeds: Sequence[int], scalars: np.ndarray) -> None:
        self._apply(params, state, [seeds], [scalars], final=False)

    def round_update(self, params: Params, state: Params, seeds: Sequence[Sequence[int]],
                     scalars: np.ndarray) -> None:
        self._apply(params, state, seeds, scalars, final=True)

    def _apply(self, params: Params, state: Params, seeds, scalars, final: bool) -> None:
        """x -= lr * (H^{-1/2} (1/P) sum_p g_kp u_kp + wd x) for k = 1..tau in turn, tensor by
        tensor, with H the round-start H; on the round's final update, then the state's update.

        Steps are applied one after the other (not summed first), so that any variant whose
        H stays at ones rounds exactly like ZO-SGD, whatever its H schedule. Tensors are
        independent, so large models update several at once (``zo.each_tensor``): each
        tensor's numbers are the same whichever thread computes them.
        """
        H = self.preconditioner(state)
        coefs = [step_coefficients(np.asarray(g)) for g in scalars]
        # decided here, on the caller's thread (fused.disabled() is per thread); the kernel
        # draws the words itself, as DirectionSampler does (not a sampler of another kind)
        fuse = (len(seeds) == 1 and type(self.sampler) is DirectionSampler
                and self.sampler.kind == "rademacher_bits" and self.sampler.device.type == "cpu"
                and fused.enabled())
        h_update = self._fused_h_update(final) if fuse else None
        fuse = fuse and h_update is not None

        def update(i: int, sampler: DirectionSampler) -> None:
            p = params[i]
            h = None if H is None else H[i]
            if (len(seeds) == 1 and self.elementwise_state and p.is_contiguous()
                    and (h is None or h.is_contiguous())):
                if fuse and p.dtype == torch.float32 and p.device.type == "cpu" and (
                        h is None or h.dtype == torch.float32):
                    fused.update(seeds[0], coefs[0], i, p, h, self.cfg.lr,
                                 self.cfg.weight_decay, h_update or None)
                    return
                # one step (tau = 1): the work after ``combine`` goes slice by slice, so that
                # rsqrt(H), the step, its square and the H update stay in cache (elementwise:
                # the same bits as whole tensors; tau > 1 keeps the whole-tensor order below,
                # where every_step's H changes between steps)
                raw = combine(sampler, seeds[0], coefs[0], i, p).view(-1)
                pf, n = p.view(-1), p.numel()
                hf = None if h is None else h.view(-1)
                for a in range(0, n, UPDATE_SLICE):
                    b = min(a + UPDATE_SLICE, n)
                    r = raw[a:b]
                    if hf is None:
                        step = r
                    else:
                        scale = torch.rsqrt(hf[a:b])
                        step = r * scale if self.keeps_raw else r.mul_(scale)
                    descend(pf[a:b], step, self.cfg.lr, self.cfg.weight_decay)
                    if final:
                        self._after_step(state, i, 0, r, step, (a, b))
                return
            scale = None if h is None else torch.rsqrt(h)
            for k, ks in enumerate(seeds):
                raw = combine(sampler, ks, coefs[k], i, p)
                if scale is None:
                    step = raw
                else:
                    step = raw * scale if self.keeps_raw else raw.mul_(scale)
                descend(p, step, self.cfg.lr, self.cfg.weight_decay)
                if final:
                    self._after_step(state, i, k, raw, step)

        with torch.no_grad():
            each_tensor(params, update, self.sampler)

    def _fused_h_update(self, final: bool) -> tuple[float, ...] | None:
        """How ``hiso.fused`` may run a one-step update of this method: ``()`` when the state
        is left alone (H, if any, fixed), ``(w_old, w_new, eps)`` for H <- w_old H + w_new
        (step^2 + eps), None when it cannot (the torch path runs). Only a method whose
        ``_after_step`` is the base's (no state update) is fusable by default."""
        return () if type(self)._after_step is ScalarOptimizer._after_step else None

    def _after_step(self, state: Params, i: int, k: int, raw: torch.Tensor, step: torch.Tensor,
                    span: tuple[int, int] | None = None) -> None:
        """Hook for the state update of tensor i after step k of a round's final update: ``step``
        is the direction the model took, H_r^{-1/2} (1/P) sum_p g_p u_p, ``raw`` the same before
        preconditioning (only if ``keeps_raw``; otherwise ``step`` itself). Both are fresh
        tensors the hook may keep or overwrite. ``span``: None for the whole tensor, or (a, b),
        when ``raw`` and ``step`` are elements a..b-1 of the flattened tensor (the state's
        update must then touch that slice of the state alone; see ``state_slice``). Calls for
        different tensors may run at once on different threads: per-tensor state only."""

    def _raw_direction(self, seeds, scalars, i: int, like: torch.Tensor) -> torch.Tensor:
        """(1/P) sum_p g_p u_p,i for one step (before any preconditioning)."""
        return combine(self.sampler, seeds, step_coefficients(np.asarray(scalars)), i, like)

    def check_task(self, task) -> None:
        """Raise UserError when the method cannot run on ``task``."""

