"""The zeroth-order primitive: perturbations, finite differences and seeded updates.

Everything that touches the parameters with a seeded direction goes through here, so that the
server, the clients and replay run literally the same code (bit-identical state needs the same
function on the same inputs in the same order).

Directions are z = H^{-1/2} u with u drawn by :class:`DirectionSampler`; ``H`` is ``None`` for
plain ZO-SGD. Master weights stay float32 and are never perturbed in low precision: a
perturbation is applied either functionally (the task builds x + mu z itself) or in place with
an exact restore from a saved copy (``perturb_inplace``); adding and subtracting mu z would drift
by rounding.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .directions import DirectionSampler

Params = list[torch.Tensor]


@dataclass(frozen=True)
class Perturbation:
    """x -> x + scale * H^{-1/2} u(seed)."""

    seed: int
    scale: float
    sampler: DirectionSampler
    H: Params | None = None

    def direction(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """z_index = H_index^{-1/2} u_index (float32)."""
        return direction(self.sampler, self.seed, index, like, self.H)

    def delta(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """scale * z_index, the amount added to parameter ``index``."""
        return self.direction(index, like).mul_(self.scale)


def direction(sampler: DirectionSampler, seed: int, index: int, like: torch.Tensor,
              H: Params | None) -> torch.Tensor:
    u = sampler.sample(seed, index, like)
    if H is not None:
        u.mul_(torch.rsqrt(H[index]))
    return u


class PerturbBuffer:
    """Reusable backup of the master weights for exact in-place perturb / restore."""

    def __init__(self) -> None:
        self._backup: Params | None = None

    @contextlib.contextmanager
    def perturbed(self, params: Params, pert: Perturbation) -> Iterator[Params]:
        if self._backup is None or len(self._backup) != len(params) or any(
            b.shape != p.shape for b, p in zip(self._backup, params)
        ):
            self._backup = [torch.empty_like(p) for p in params]
        with torch.no_grad():
            for i, (p, b) in enumerate(zip(params, self._backup)):
                b.copy_(p)
                p.add_(pert.delta(i, p))
            try:
                yield params
            finally:
                for p, b in zip(params, self._backup):
                    p.copy_(b)


def perturb_inplace(params: Params, pert: Perturbation, buffer: PerturbBuffer | None = None):
    """Context manager: params hold x + delta inside, exactly x again after (copy restore)."""
    return (buffer or PerturbBuffer()).perturbed(params, pert)


LossFn = Callable[[Perturbation | None], float]


def estimate(loss: LossFn, seeds: Sequence[int], mu: float, sampler: DirectionSampler,
             H: Params | None, difference: str = "forward") -> tuple[np.ndarray, float]:
    """Directional-derivative scalars for each seed, and the unperturbed loss.

    ``loss(None)`` evaluates at x, ``loss(pert)`` at x + pert. Forward differences cost P + 1
    evaluations, central ones 2P (the base loss is then the mean of f(x+) and f(x-)).
    Scalars are returned as float32: that is what is uploaded and what every update consumes.
    """
    out = np.empty(len(seeds), dtype=np.float32)
    if difference == "forward":
        f0 = float(loss(None))
        for j, s in enumerate(seeds):
            fp = float(loss(Perturbation(s, mu, sampler, H)))
            out[j] = (fp - f0) / mu
        return out, f0
    if difference == "central":
        base = 0.0
        for j, s in enumerate(seeds):
            fp = float(loss(Perturbation(s, mu, sampler, H)))
            fm = float(loss(Perturbation(s, -mu, sampler, H)))
            out[j] = (fp - fm) / (2.0 * mu)
            base += 0.5 * (fp + fm)
        return out, base / len(seeds)
    raise ValueError(f"unknown difference scheme {difference!r}")


def estimate_with_curvature(loss: LossFn, seeds: Sequence[int], mu: float, sampler: DirectionSampler,
                            H: Params | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Central slopes g_p = [f(x+mu z) - f(x-mu z)] / (2 mu) (computed as in ``estimate``'s
    central scheme, so the two agree bit for bit), second differences
    c_p = [f(x+mu z) + f(x-mu z) - 2 f(x)] / mu^2 (an estimate of z^T A z for a Hessian A,
    exact on a quadratic), and f(x): 2P + 1 evaluations. Scalars are float32 as uploaded."""
    g = np.empty(len(seeds), dtype=np.float32)
    c = np.empty(len(seeds), dtype=np.float32)
    f0 = float(loss(None))
    for j, s in enumerate(seeds):
        fp = float(loss(Perturbation(s, mu, sampler, H)))
        fm = float(loss(Perturbation(s, -mu, sampler, H)))
        g[j] = (fp - fm) / (2.0 * mu)
        c[j] = ((fp - f0) + (fm - f0)) / (mu * mu)
    return g, c, f0


def combine(sampler: DirectionSampler, seeds: Sequence[int], coefs: Sequence[float], index: int,
            like: torch.Tensor) -> torch.Tensor:
    """sum_j coefs[j] * u_index(seeds[j]) in float32, summed in the given order.

    ``rademacher_bits`` directions go through ``DirectionSampler.combine_signs``: the same
    numbers, bit for bit, for a fraction of the work (tested against the loop below)."""
    if getattr(sampler, "kind", None) == "rademacher_bits" and len(seeds) >= 1:
        return sampler.combine_signs(seeds, coefs, index, like)
    return combine_loop(sampler, seeds, coefs, index, like)


def combine_loop(sampler: DirectionSampler, seeds: Sequence[int], coefs: Sequence[float],
                 index: int, like: torch.Tensor) -> torch.Tensor:
    """:func:`combine` one direction at a time (every kind of direction)."""
    acc = None
    for s, c in zip(seeds, coefs):
        u = sampler.sample(s, index, like)
        if acc is None:
            acc = u.mul_(float(c))  # saves a zero-filled buffer and a pass over it
        else:
            acc.add_(u, alpha=float(c))
    if acc is None:
        return torch.zeros_like(like, dtype=torch.float32)
    return acc


#: below this many elements in all, tensors are updated one after the other on the caller's
#: thread: handing them to threads costs more than it saves
PARALLEL_MIN_NUMEL = 1 << 20
_pools: dict[int, "ThreadPoolExecutor"] = {}
_local = threading.local()


def _thread_sampler(like: DirectionSampler) -> DirectionSampler:
    # directions are a function of (seed, index, kind, device): a per-thread sampler draws
    # exactly what the shared one would, without sharing its generator
    s = getattr(_local, "sampler", None)
    if s is None or s.kind != like.kind or s.device != like.device:
        s = _local.sampler = DirectionSampler(like.kind, like.device)
    return s


def each_tensor(params: Params, fn: Callable[[int, DirectionSampler], None],
                sampler: DirectionSampler, workers: int | None = None) -> None:
    """``fn(i, sampler)`` for every tensor index i, on up to ``workers`` threads (default:
    torch's thread count), largest tensors first.

    Why: drawing a tensor's directions is single-threaded in torch (one generator per stream),
    so a round's update (the server's, a catch-up's, an export's) ran on one core whatever the
    thread count. Tensors are independent, so they go to threads instead, each computing
    alone (torch's own threads set to one meanwhile) with its own sampler: every tensor gets
    the numbers it would get serially. Small models stay on the calling thread.
    """
    n = len(params)
    workers = torch.get_num_threads() if workers is None else workers
    total = sum(p.numel() for p in params)
    if workers <= 1 or n < 2 or total < PARALLEL_MIN_NUMEL or params[0].device.type != "cpu":
        for i in range(n):
            fn(i, sampler)
        return
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(range(n), key=lambda i: -params[i].numel())
    pool = _pools.get(workers)
    if pool is None:
        pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="zo-update")

    def run(i: int) -> None:
        with torch.no_grad():
            fn(i, _thread_sampler(sampler))

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for f in [pool.submit(run, i) for i in order]:
            f.result()
    finally:
        torch.set_num_threads(before)


def descend(p: torch.Tensor, step: torch.Tensor, lr: float, weight_decay: float = 0.0) -> None:
    """x <- x - lr (step + weight_decay x) in place, as torch's SGD applies weight decay.
    With weight_decay = 0 it is exactly x <- x - lr step (no extra rounding)."""
    if weight_decay:
        p.add_(torch.add(step, p, alpha=weight_decay), alpha=-lr)
    else:
        p.add_(step, alpha=-lr)


def step_coefficients(scalars: np.ndarray) -> list[float]:
    """(1/P) g_p as Python floats from float32 scalars: one fixed rounding for every party."""
    P = len(scalars)
    return [float(np.float32(g)) / P for g in scalars]


def params_sha256(params: Params) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
