"""One fused pass for a one-step ``rademacher_bits`` update on the CPU (optional: numba).

The torch path of a tau = 1 round update (``DirectionSampler.combine_signs``, then the update
slice by slice) reads and writes each element several times: the P sign gathers and adds, the
rsqrt of H, the step, the descent, the H update. Here one compiled loop does all of it per
element, reading the P directions' random words, x and H once and writing x and H once. The
words come from the same seeded torch generators as every other path (``_words``), so the
directions are the same; every arithmetic step is the torch path's, in its order and with its
roundings, so the result is the same bit for bit:

* the combination sum_j c_j u_j is the sequential float32 sum (each c_j u_j = +-c_j exact);
* rsqrt(H) is 1 / sqrt(H), two correctly rounded operations, as torch computes it;
* ``add_(t, alpha=a)`` is a fused multiply-add in torch's vectorised CPU kernels, so the
  descent x - lr * step and the H update H w_old + w_new (step^2 + eps) are single-rounding
  FMAs here too (``llvm.fma``).

The last point is a property of torch's build and of the CPU, not of IEEE arithmetic, so the
first use in a process checks it (``_agrees``): the kernel must give torch's bits on random
data, or the fused path stays off for the process (with a warning). Without numba
(``pip install 'hiso[fast]'``) it is off and the torch path runs, with the same numbers.

Where it runs: in replays (``replaying()``: a client's catch-up, resume, ``hiso export``), where
round updates come back to back and are the whole cost. A live round's one server update sits
between 2 x (P + 1) forwards, so it would save under 2% of the round there, and loading numba's
compiler costs a fixed ~115 MiB of memory: the live server keeps the torch path.
``HISO_FUSED=1`` uses it for every one-step update, ``HISO_FUSED=0`` for none.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np
import torch

from .directions import draw_words, stream_seed
from .errors import UserError

_lock = threading.RLock()  # enabled() compiles the kernel while holding it
_state: dict[str, object] = {"ok": None, "kernel": None}
_disabled = threading.local()
_replay = threading.local()


def _kernel():
    if _state["kernel"] is None:
        with _lock:
            if _state["kernel"] is None:
                from ._fused_kernel import kernel  # numba compiles it (or loads its cache)

                _state["kernel"] = kernel
    return _state["kernel"]


def _words(seeds, index: int, n: int) -> torch.Tensor:
    """[P, ceil(n / 64)] int64: direction j's words for tensor ``index``, as
    ``DirectionSampler`` draws them (one full-range int64 fill from its stream's generator)."""
    W = torch.empty(len(seeds), (n + 63) // 64, dtype=torch.int64)
    g = torch.Generator()
    for j, seed in enumerate(seeds):
        g.manual_seed(stream_seed(seed, index))
        draw_words(W[j], g)
    return W


def update(seeds, coefs, index: int, x: torch.Tensor, h: torch.Tensor | None, lr: float,
           weight_decay: float, h_weights: tuple[float, float, float] | None) -> None:
    """x <- x - lr (H^{-1/2} sum_j coefs[j] u_index(seeds[j]) + weight_decay x) in place, then,
    with ``h_weights`` = (w_old, w_new, eps), H <- w_old H + w_new (step^2 + eps) in place.
    ``x`` and ``h``: contiguous float32 CPU tensors; the caller checks ``enabled()``."""
    _update(seeds, coefs, index, x, h, lr, weight_decay, h_weights)


def _update(seeds, coefs, index, x, h, lr, weight_decay, h_weights) -> None:
    n = x.numel()
    W = _words(seeds, index, n).view(torch.int32).numpy()
    c = np.array([float(v) for v in coefs], dtype=np.float32)  # as the torch path rounds them
    xv = x.detach().view(-1).numpy()
    if h is None:
        mode, hv = 0, np.empty(1, np.float32)
    else:
        mode, hv = (1 if h_weights is None else 2), h.detach().view(-1).numpy()
    w_old, w_new, eps = h_weights if h_weights is not None else (0.0, 0.0, 0.0)
    f32 = np.float32
    _kernel()(W, c, xv, hv, mode, f32(-lr), f32(weight_decay), f32(w_old), f32(w_new), f32(eps))


def enabled() -> bool:
    """Whether a one-step update on this thread takes the fused path now (numba present, its
    check passed; inside ``replaying()`` unless ``HISO_FUSED`` says 1 or 0)."""
    policy = os.environ.get("HISO_FUSED", "replay")
    if policy not in ("0", "1", "replay"):
        raise UserError(f"HISO_FUSED: expected 0, 1 or replay, got {policy!r}")
    if getattr(_disabled, "on", False) or policy == "0":
        return False
    if policy != "1" and not getattr(_replay, "depth", 0):
        return False
    if _state["ok"] is None:
        with _lock:
            if _state["ok"] is None:
                _state["ok"] = _available()
    return bool(_state["ok"])


def _available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    if not _agrees():
        warnings.warn("hiso.fused: the compiled update does not reproduce torch's arithmetic on "
                      "this machine; using the torch path (same numbers, slower)", RuntimeWarning)
        return False
    return True


def _agrees() -> bool:
    """The kernel against torch's own ops (the torch path's arithmetic, op for op) on random
    data: every mode, with and without weight decay, an odd size (the vector tails)."""
    from .directions import DirectionSampler
    from .zo import combine, descend

    g = torch.Generator().manual_seed(12345)
    n = 4099
    sampler = DirectionSampler("rademacher_bits")
    seeds = [11, 12, 13, 14, 15]
    coefs = [float(v) for v in torch.randn(5, generator=g, dtype=torch.float64) * 1e-2]
    for mode in range(3):
        for wd in (0.0, 5e-4):
            x = torch.randn(n, generator=g)
            h = None if mode == 0 else torch.rand(n, generator=g) + 0.25
            weights = (0.95, 0.05, 1e-8) if mode == 2 else None
            xt, ht = x.clone(), None if h is None else h.clone()
            step = combine(sampler, seeds, coefs, 7, xt)
            if ht is not None:
                step = step.mul_(torch.rsqrt(ht))
            descend(xt, step, 1e-3, wd)
            if weights is not None:
                ht.mul_(weights[0]).add_(step.square().add_(weights[2]), alpha=weights[1])
            _update(seeds, coefs, 7, x, h, 1e-3, wd, weights)
            if not torch.equal(x, xt) or (h is not None and not torch.equal(h, ht)):
                return False
    return True


@contextlib.contextmanager
def replaying():
    """Round updates on this thread meanwhile replay a history: the fused path may run."""
    _replay.depth = getattr(_replay, "depth", 0) + 1
    try:
        yield
    finally:
        _replay.depth -= 1


@contextlib.contextmanager
def disabled():
    """The torch path on this thread meanwhile (for A/B timings and tests)."""
    before = getattr(_disabled, "on", False)
    _disabled.on = True
    try:
        yield
    finally:
        _disabled.on = before
