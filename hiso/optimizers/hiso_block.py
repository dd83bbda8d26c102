"""HiSo with a block-wise curvature H learned from a second scalar per perturbation (issue #15).

HiSo's learned diagonal is an EMA of squared update directions: its per-coordinate signal is
about 1/d of its common part, so it adapts the step size but does not track curvature. Here each
perturbation uploads two float32 scalars (8 bytes instead of 4), both from central differences
at z = H^{-1/2} u, at the price of one more forward (2P + 1 per step instead of P + 1):

    g = [f(x + mu z) - f(x - mu z)] / (2 mu)              (the slope, as DeComFL's central one)
    c = [f(x + mu z) + f(x - mu z) - 2 f(x)] / mu^2       (~ u^T H^{-1/2} A H^{-1/2} u)

H has one positive value per block (``block_size: null``: a block is a model tensor: a
parameter tensor, or one of the tensors a task packs into a flat vector, e.g. the digits CNN's
six; an integer: each parameter tensor, flattened, is cut into chunks of that many coordinates,
the last one shorter). With phi_b = ||u_b||^2 and psi_b = phi_b / h_b, a quadratic with block-constant
diagonal gives c = sum_b a_b psi_b exactly; within-block spread and off-diagonal terms add noise
uncorrelated with psi. So a_b (the mean of diag(A) over block b) is estimated by regressing the
round-averaged c on psi:

* every round adds the sufficient statistics (sum psi psi^T, sum psi c over its tau * P
  perturbations, and the h it used) to a ring of the last ``window`` rounds: that is the
  smoothing over rounds;
* the rounds are weighted by 1 / sum_b n_b (a_b / h_b)^2 with the current estimate a, the
  predicted variance of c at that round's h: rounds taken before the stiff blocks were whitened
  carry large noise from them and are weighted down (a plain running regression keeps that
  noise for small blocks much longer);
* the weighted normal equations are solved after Jacobi scaling, with a ``ridge`` pull towards
  the previous estimate (a round holds fewer rows than blocks when tau * P < K);
* each a_b may change by at most a factor ``max_factor`` per round, which keeps it positive
  (it starts at ``h_init``) and bounds the effect of one bad round;
* h_b = a_b + eps, written into every coordinate of the block.

The Stein form with a control variate and a normalised LMS step (design notes) was tried first,
in numpy on 10 blocks with curvatures 1..1e4: its small blocks drifted by factors of e^9 over 300
rounds, because before the stiff blocks are learned their residual swamps the small ones' signal.
The joint regression does not have that problem; the Stein identity E[(phi_b - n_b) c] =
2 n_b a_b / h_b is what makes it unbiased.

The step is HiSo's: x <- x - lr H^{-1/2} (1/P) sum_p g_p u_p = x - lr (1/P) sum_p g_p z_p, whose
expectation is lr H^{-1} grad f. H is fixed within a round. The estimator runs on the round's
averaged (g, c) and its seeds after the model step, so server, catch-up replay and resume
rebuild the same H. With ``curvature_update: false`` H stays at ``h_init``; at h_init = 1 the
method is DeComFL with central differences bit for bit (only the logged train loss differs: f(x)
here, the mean of f(x +- mu z) there).

State (every party holds it): the H tensors, then a [K], the ring of K x K and K statistics and
the h of each round, and a round counter: 8 (window (K^2 + 2K) + K + 1) bytes besides H.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..errors import UserError
from ..zo import estimate_with_curvature
from .base import ScalarOptimizer, ZOConfig

#: the ring holds window x K^2 float64 per party: refuse layouts that would take gigabytes
MAX_BLOCKS = 4096


@dataclass
class HiSoBlockConfig(ZOConfig):
    difference: Literal["forward", "central"] = "central"
    #: coordinates per block within a tensor; null: one block per model tensor
    block_size: int | None = field(default=None, metadata={"ge": 1})
    #: false keeps H at h_init (DeComFL with central differences at h_init = 1)
    curvature_update: bool = True
    #: rounds of regression statistics kept (the smoothing over rounds)
    window: int = field(default=20, metadata={"ge": 1})
    #: largest factor by which a block's curvature may change in one round
    max_factor: float = field(default=10.0, metadata={"gt": 1})
    #: pull towards the previous estimate, relative to the scaled normal equations' unit diagonal
    ridge: float = field(default=1e-3, metadata={"gt": 0})
    #: h_b = a_b + eps: bounds the effective step lr / h by lr / eps where curvature is tiny
    eps: float = field(default=1e-3, metadata={"gt": 0})
    h_init: float = field(default=1.0, metadata={"gt": 0})

    def check(self, path: str) -> None:
        if self.difference != "central":
            raise UserError(f"{path}.difference: hiso_block needs central differences (its "
                            f"curvature scalar is a second difference), got {self.difference!r}")
        if self.directions != "gaussian":
            raise UserError(f"{path}.directions: hiso_block needs gaussian directions (with "
                            f"{self.directions!r} ones ||u_b||^2 is constant and the blocks "
                            f"cannot be told apart), got {self.directions!r}")


@dataclass(frozen=True)
class BlockLayout:
    """Blocks of every tensor: tensor i holds blocks offsets[i] .. offsets[i+1]-1, of
    ``per_tensor[i]`` coordinates each (flat order)."""

    sizes: np.ndarray               # float64 [K], coordinates per block
    offsets: list[int]              # len T + 1
    per_tensor: list[list[int]]

    @property
    def K(self) -> int:
        return len(self.sizes)


def block_layout(params, block_size: int | None, segments: list[list[int]] | None = None) -> BlockLayout:
    """Chunks of ``block_size`` per tensor; or, without it, the task's ``segments`` (the model's
    tensors packed in one parameter vector), else one block per parameter tensor."""
    per_tensor = []
    for i, p in enumerate(params):
        n = p.numel()
        if block_size is not None:
            full, rest = divmod(n, block_size)
            sizes = [block_size] * full + ([rest] if rest else [])
        elif segments is not None:
            sizes = [int(k) for k in segments[i]]
            if sum(sizes) != n:
                raise ValueError(f"task segments of tensor {i} sum to {sum(sizes)}, not {n}")
        else:
            sizes = [n]
        per_tensor.append(sizes)
    offsets = np.cumsum([0] + [len(s) for s in per_tensor]).tolist()
    flat = [k for s in per_tensor for k in s]
    return BlockLayout(np.asarray(flat, dtype=np.float64), offsets, per_tensor)


def block_sq_norms(u: torch.Tensor, sizes: list[int]) -> np.ndarray:
    """||u_b||^2 of the consecutive blocks of ``sizes`` coordinates of one tensor, in float64."""
    sq = u.reshape(-1).double().square()
    if len(sizes) == 1:
        return np.asarray([float(sq.sum())])
    B = sizes[0]
    if all(k == B for k in sizes[:-1]) and sizes[-1] <= B:
        full = (len(sizes) - (sizes[-1] < B)) * B  # equal chunks: one reshape
        head = sq[:full].view(-1, B).sum(dim=1)
        if full < sq.numel():
            head = torch.cat([head, sq[full:].sum().reshape(1)])
        return head.cpu().numpy()
    return torch.stack([c.sum() for c in torch.split(sq, sizes)]).cpu().numpy()


def fit_curvature(a: np.ndarray, sizes: np.ndarray, G: np.ndarray, b: np.ndarray, h: np.ndarray,
                  filled: int, ridge: float, max_factor: float) -> np.ndarray:
    """The new block curvatures from the ring of per-round statistics (pure function).

    ``G[r] = sum psi psi^T``, ``b[r] = sum psi c`` and ``h[r]`` of the ``filled`` rounds held;
    ``a`` the current estimate. Rounds are weighted by the inverse predicted variance of c at
    their h, the system is Jacobi-scaled and pulled towards ``a`` by ``ridge``, and the result
    is kept within a factor ``max_factor`` of ``a``.
    """
    w = 1.0 / np.einsum("b,rb->r", sizes, np.square(a[None, :] / h[:filled]))
    Gw = np.einsum("r,rij->ij", w, G[:filled])
    bw = np.einsum("r,ri->i", w, b[:filled])
    s = np.sqrt(np.diag(Gw))
    if not np.all(s > 0) or not np.all(np.isfinite(Gw)) or not np.all(np.isfinite(bw)):
        return a.copy()  # no usable statistics (e.g. a non-finite loss): keep the estimate
    K = len(a)
    lhs = Gw / np.outer(s, s) + ridge * np.eye(K)
    rhs = bw / s + ridge * s * a
    try:
        y = np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        return a.copy()
    est = y / s
    est = np.where(np.isfinite(est), est, a)
    return np.clip(est, a / max_factor, a * max_factor)


class HiSoBlock(ScalarOptimizer):
    name = "hiso_block"
    Config = HiSoBlockConfig
    scalars_per_perturbation = 2

    # -- state -------------------------------------------------------------------------------
    def __init__(self, cfg, sampler, task=None):
        super().__init__(cfg, sampler, task)
        self._segments = task.segments() if task is not None and hasattr(task, "segments") else None

    def _layout(self, params) -> BlockLayout:
        shapes = tuple(tuple(p.shape) for p in params)
        cached = getattr(self, "_layout_cache", None)
        if cached is None or cached[0] != shapes:
            self._layout_cache = (shapes, block_layout(params, self.cfg.block_size, self._segments))
        return self._layout_cache[1]

    def init_state(self, params):
        lay = self._layout(params)
        if lay.K > MAX_BLOCKS:
            raise UserError(f"method.block_size: {lay.K} blocks > {MAX_BLOCKS} (the regression "
                            f"keeps window x blocks^2 float64); use larger blocks")
        W, K = self.cfg.window, lay.K
        H = [torch.full_like(p, self.cfg.h_init, dtype=torch.float32) for p in params]
        f64 = dict(dtype=torch.float64)
        return H + [torch.full((K,), self.cfg.h_init, **f64), torch.zeros((W, K, K), **f64),
                    torch.zeros((W, K), **f64), torch.ones((W, K), **f64), torch.zeros(1, **f64)]

    def preconditioner(self, state):
        return state[:-5]

    def block_curvature(self, state) -> np.ndarray:
        """The current estimate a_b (float64, block order)."""
        return state[-5].numpy().copy()

    # -- scalars -----------------------------------------------------------------------------
    def forwards_per_step(self) -> int:
        return 2 * self.cfg.perturbations + 1

    def estimate(self, loss, seeds, H):
        g, c, f0 = estimate_with_curvature(loss, seeds, self.cfg.mu, self.sampler, H)
        return np.concatenate([g, c]), f0

    # -- updates -----------------------------------------------------------------------------
    def local_step(self, params, state, seeds, scalars) -> None:
        super().local_step(params, state, seeds, np.asarray(scalars)[: len(seeds)])

    def round_update(self, params, state, seeds, scalars) -> None:
        scalars = np.asarray(scalars, dtype=np.float32)
        P = len(seeds[0])
        H = self.preconditioner(state)
        # the round-start h that every perturbation of the round used (_learn rewrites H)
        lay = self._layout(params)
        h_used = self._block_values(H, lay)
        self._apply(params, state, seeds, scalars[:, :P], final=True)
        if self.cfg.curvature_update:
            self._learn(params, state, seeds, scalars[:, P:], h_used, lay)

    @staticmethod
    def _block_values(H, lay: BlockLayout) -> np.ndarray:
        """Each block's h, read off its first coordinate (H is constant on a block)."""
        out = np.empty(lay.K, dtype=np.float64)
        for i, h in enumerate(H):
            starts = np.cumsum([0] + lay.per_tensor[i][:-1])
            vals = h.reshape(-1)[torch.as_tensor(starts, device=h.device)]
            out[lay.offsets[i]:lay.offsets[i + 1]] = vals.double().cpu().numpy()
        return out

    def _learn(self, params, state, seeds, c: np.ndarray, h_used: np.ndarray, lay: BlockLayout) -> None:
        tau, P, K = len(seeds), len(seeds[0]), lay.K
        phi = np.empty((tau, P, K), dtype=np.float64)
        for i, p in enumerate(params):
            lo, hi = lay.offsets[i], lay.offsets[i + 1]
            for k in range(tau):
                for j, s in enumerate(seeds[k]):
                    phi[k, j, lo:hi] = block_sq_norms(self.sampler.sample(s, i, p), lay.per_tensor[i])
        psi = phi.reshape(tau * P, K) / h_used
        cc = c.reshape(tau * P).astype(np.float64)
        a_t, G_t, b_t, hr_t, n_t = state[-5:]
        a, G, b, hr = a_t.numpy(), G_t.numpy(), b_t.numpy(), hr_t.numpy()
        count = int(n_t.item())
        slot = count % self.cfg.window
        G[slot] = np.einsum("ri,rj->ij", psi, psi)
        b[slot] = np.einsum("ri,r->i", psi, cc)
        hr[slot] = h_used
        n_t.fill_(count + 1)
        filled = min(count + 1, self.cfg.window)
        a[:] = fit_curvature(a, lay.sizes, G, b, hr, filled, self.cfg.ridge, self.cfg.max_factor)
        with torch.no_grad():
            for i, h in enumerate(self.preconditioner(state)):
                lo, hi = lay.offsets[i], lay.offsets[i + 1]
                vals = torch.tensor(a[lo:hi] + self.cfg.eps, dtype=torch.float32)
                flat = h.view(-1)
                if hi - lo == 1:
                    flat.fill_(float(vals[0]))
                else:
                    reps = torch.as_tensor(lay.per_tensor[i], dtype=torch.long)
                    flat.copy_(torch.repeat_interleave(vals, reps).to(flat.device))

    def diagnostics(self, state):
        out = super().diagnostics(state)
        a = state[-5]
        out.update({"a_min": float(a.min()), "a_max": float(a.max())})
        return out

    def check_task(self, task) -> None:
        pass
