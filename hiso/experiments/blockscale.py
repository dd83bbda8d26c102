"""Block quadratics at large d without d-sized vectors: an exact reduced simulation (issue #15).

On a quadratic whose curvature A is *exactly* constant on each block (a_b on n_b coordinates)
and a preconditioner H constant on the same blocks (h_b), the methods of the block experiment
(``blocks.py``) are invariant under rotations within a block. The error of block b enters
every scalar only through its norm r_b, so one round can be sampled exactly from a few
block-level random variables instead of P d Gaussians. With v the unit error of block b and
u_pb = alpha_pb v + w_pb (alpha_pb ~ N(0, 1), w_pb orthogonal to v),

    g_p   = sum_b (a_b / sqrt(h_b)) r_b alpha_pb              (central differences are exact)
    c_p   = sum_b (a_b / h_b) ||u_pb||^2,  ||u_pb||^2 = alpha_pb^2 + W_b[p, p]
    r_b' ^2 = (r_b - beta_b s.alpha_b)^2 + beta_b^2 s^T W_b s,  beta_b = lr / (P sqrt(h_b)), s = g

where W_b = [w_pb . w_qb] is Wishart(n_b - 1, I_P), drawn by Bartlett's decomposition. Next
round's directions are fresh, so only r' matters. f = 1/2 sum_b a_b r_b^2. One round costs
O(K P^2) whatever d is, so d = 1e5 (and more) is cheap. Every (step, seed) of a grid runs in
one batch.

Methods (all as in the engine, tau = 1, one client): ``decomfl`` (h = 1), ``hiso_oracle``
(h_b = a_b + eps: with exact blocks the full and the block oracle coincide), ``hiso_scalar``
(one tensor: h <- nu h + (1 - nu)(mean(Delta^2) + eps), mean(Delta^2) = sum_b ||sum_p s_p
u_pb||^2 / (h d P^2)) and ``hiso_block`` (the optimiser's own estimator,
:func:`hiso.optimizers.hiso_block.fit_curvature`, fed the same sufficient statistics). HiSo's
learned diagonal is not block-constant, so it has no reduced form (it runs in the engine only).

The reduction is checked against the engine at small d (tests/test_blockscale.py: the same
expected decrease per round; ``blocks_scale`` table: rounds of both at d = 300).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..optimizers.hiso_block import fit_curvature

METHODS = ("decomfl", "hiso_oracle", "hiso_scalar", "hiso_block")


@dataclass(frozen=True)
class Problem:
    """Block levels a [K] and sizes n [K] (exactly block-constant curvature)."""

    a: np.ndarray
    n: np.ndarray

    @property
    def d(self) -> int:
        return int(self.n.sum())

    def zeta(self, h: np.ndarray) -> float:
        """Whitening rank Tr(H^-1 A) / lambda_max(H^-1 A) of a block-constant H (the theory's)."""
        w = self.a / h
        return float((self.n * w).sum() / w.max())

    def sf_zeta(self, h: np.ndarray) -> float:
        """Scale-free whitening rank Tr(H^-1 A) / lambda_min(H^-1 A) (blocks.py's ratio)."""
        w = self.a / h
        return float((self.n * w).sum() / w.min())


def equal_blocks(d: int, K: int, lo: float, hi: float) -> Problem:
    """K equal blocks (the last takes the remainder), levels log-spaced in [lo, hi]."""
    size = d // K
    n = np.full(K, size, dtype=np.float64)
    n[-1] += d - size * K
    a = np.exp(np.linspace(math.log(lo), math.log(hi), K)) if K > 1 else np.array([float(lo)])
    return Problem(a, n)


def head_tail_blocks(d: int, K: int, lo: float, hi: float, head_size: int, tail_level: float) -> Problem:
    """K - 1 blocks of ``head_size`` with levels log-spaced in [lo, hi] and one tail block of
    the remaining d - (K - 1) head_size coordinates at ``tail_level``: the oracle's whitening
    rank stays about (K - 1) head_size when tail_level << eps, whatever d."""
    head = equal_blocks((K - 1) * head_size, K - 1, lo, hi)
    tail = d - (K - 1) * head_size
    if tail < 1:
        raise ValueError(f"d = {d} leaves no tail after {K - 1} blocks of {head_size}")
    return Problem(np.append(head.a, tail_level), np.append(head.n, float(tail)))


@dataclass(frozen=True)
class Settings:
    P: int
    eps: float                      # oracle / hiso_block: h = a + eps
    nu: float = 0.95                # hiso_scalar
    scalar_eps: float = 1e-8
    h_init: float = 1.0             # hiso_block's a_0 and H_0
    window: int = 20
    max_factor: float = 10.0
    ridge: float = 1e-3
    divergence_factor: float = 1e6


def wishart_factors(rng: np.random.Generator, df: np.ndarray, shape: tuple, P: int) -> np.ndarray:
    """Lower-triangular L with L L^T ~ Wishart(df, I_P) (Bartlett), shape + (K, P, P); df [K]."""
    K = len(df)
    L = np.tril(rng.standard_normal(shape + (K, P, P)), -1)
    dof = df[:, None] - np.arange(P)[None, :]                       # [K, P]
    idx = np.arange(P)
    L[..., idx, idx] = np.sqrt(rng.chisquare(np.broadcast_to(dof, shape + (K, P))))
    return L


#: rounds of random numbers drawn at once per run (a run's draws depend only on its seed)
CHUNK = 256


def simulate(problem: Problem, method: str, lrs: np.ndarray, seeds: list[int], s: Settings,
             cap: int, target: float) -> dict:
    """Rounds to f <= target f0 for every (lr, seed) (``inf``: censored at ``cap`` or diverged),
    and the final block h of each run. Batch B = len(lrs) x len(seeds); seeds are independent
    generators (a run's numbers do not depend on which other runs share its batch)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    a, n = problem.a.astype(np.float64), problem.n.astype(np.float64)
    K, P, d = len(a), int(s.P), problem.d
    if np.any(n < P + 1):
        raise ValueError(f"every block needs more than P = {P} coordinates")
    G, S = len(lrs), len(seeds)
    lr = np.repeat(np.asarray(lrs, dtype=np.float64), S)            # [B]
    rngs = [np.random.default_rng([int(sd), 15]) for sd in seeds] * G
    B = G * S
    # isotropic initial error of norm 1: block shares of a Gaussian's squared norm
    r2 = np.stack([g.chisquare(n) for g in rngs])
    r = np.sqrt(r2 / r2.sum(axis=1, keepdims=True))                  # [B, K]
    f0 = 0.5 * (a * r**2).sum(axis=1)
    if method == "decomfl":
        h = np.ones((B, K))
    elif method == "hiso_oracle":
        h = np.broadcast_to(a + s.eps, (B, K)).copy()
    elif method == "hiso_scalar":
        h = np.ones((B, K))
    else:
        est = np.full((B, K), float(s.h_init))
        h = est.copy()                       # H_0 = h_init, as the optimiser's init_state
        ring_G = np.zeros((B, s.window, K, K))
        ring_b = np.zeros((B, s.window, K))
        ring_h = np.ones((B, s.window, K))
    rounds = np.full(B, math.inf)
    alive = np.ones(B, dtype=bool)
    df = n - 1.0
    alpha_buf = np.zeros((B, CHUNK, K, P))
    L_buf = np.zeros((B, CHUNK, K, P, P))
    for t in range(1, cap + 1):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        j = (t - 1) % CHUNK
        if j == 0:
            for i in idx:
                alpha_buf[i] = rngs[i].standard_normal((CHUNK, K, P))
                L_buf[i] = wishart_factors(rngs[i], df, (CHUNK,), P)
        alpha, L = alpha_buf[idx, j], L_buf[idx, j]                               # [b, K, P(, P)]
        hb, rb = h[idx], r[idx]
        sg = np.einsum("bk,bkp->bp", a / np.sqrt(hb) * rb, alpha)                 # g [b, P]
        beta = lr[idx, None] / (P * np.sqrt(hb))                                  # [b, K]
        sa = np.einsum("bp,bkp->bk", sg, alpha)
        q = np.square(np.einsum("bkpq,bp->bkq", L, sg)).sum(axis=2)               # s^T W s
        r_new = np.sqrt(np.square(rb - beta * sa) + np.square(beta) * q)
        if method == "hiso_block":
            phi = np.square(alpha) + np.square(L).sum(axis=3)                     # ||u_pb||^2
            psi = phi / hb[:, :, None]                                            # [b, K, P]
            c = np.einsum("bk,bkp->bp", a / hb, phi).astype(np.float32).astype(np.float64)
            slot = (t - 1) % s.window
            ring_G[idx, slot] = np.einsum("bkp,blp->bkl", psi, psi)
            ring_b[idx, slot] = np.einsum("bkp,bp->bk", psi, c)
            ring_h[idx, slot] = hb
            for i in idx:
                est[i] = fit_curvature(est[i], n, ring_G[i], ring_b[i], ring_h[i],
                                       min(t, s.window), s.ridge, s.max_factor)
            h[idx] = est[idx] + s.eps
        elif method == "hiso_scalar":
            mean_sq = (np.square(sa) + q).sum(axis=1) / (hb[:, 0] * d * P * P)
            h[idx] = (s.nu * hb[:, 0] + (1 - s.nu) * (mean_sq + s.scalar_eps))[:, None]
        r[idx] = r_new
        f = 0.5 * (a * r_new**2).sum(axis=1)
        hit = f <= target * f0[idx]
        bad = ~np.isfinite(f) | (f > s.divergence_factor * f0[idx])
        rounds[idx[hit]] = t
        alive[idx[hit | bad]] = False
    return {"rounds": rounds.reshape(G, S), "h": h.reshape(G, S, K)}
