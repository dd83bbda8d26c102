"""The compiled loop of ``hiso.fused`` (imports numba: import it only through ``hiso.fused``).

A module of its own so that numba's on-disk cache finds the kernel again in the next process
(compiling takes a few seconds; a closure would be compiled anew every time).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: 32-element words per block (the block's temporaries stay in L1)
BLOCK_WORDS = 32
_SHIFTS = np.arange(32, dtype=np.int32)


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c in float32 with one rounding (LLVM's fma), as torch's vectorised add_(alpha)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f, f]),
                                            "llvm.fma.f32")
        return builder.call(fn, args)

    return sig, codegen


def _kernel(W, c, x, h, mode, neg_lr, wd, w_old, w_new, eps):  # pragma: no cover (compiled)
    """W: int32 [P, >= ceil(n / 32)], bit t of W[j, r] gives the sign of element 32 r + t
    (u = 1 - 2 bit); c: float32 [P]; x, h: float32 [n], updated in place; mode 0: no H,
    1: H fixed, 2: H updated."""
    P = W.shape[0]
    n = x.shape[0]
    one = np.float32(1.0)
    B = 32 * BLOCK_WORDS
    acc = np.empty(B, np.float32)
    for a in range(0, n, B):
        m = min(B, n - a)
        r0 = a // 32
        for j in range(P):
            cj = c[j]
            mj = np.float32(-2.0) * cj
            for q in range((m + 31) // 32):
                wj = W[j, r0 + q]
                if j == 0:  # c_0 u_0, then + c_j u_j in turn: the sequential sum
                    for t in range(32):
                        acc[32 * q + t] = cj + mj * np.float32((wj >> _SHIFTS[t]) & np.int32(1))
                else:
                    for t in range(32):
                        acc[32 * q + t] = acc[32 * q + t] + (
                            cj + mj * np.float32((wj >> _SHIFTS[t]) & np.int32(1)))
        # the rest in one loop per case (each loop vectorises; branching inside would not)
        xs = x[a : a + m]
        hs = h[a : a + m] if mode != 0 else h[:0]
        if mode == 0 and wd == 0.0:
            for t in range(m):
                xs[t] = fma32(neg_lr, acc[t], xs[t])
        elif mode == 0:
            for t in range(m):
                xs[t] = fma32(neg_lr, fma32(wd, xs[t], acc[t]), xs[t])
        elif mode == 1 and wd == 0.0:
            for t in range(m):
                xs[t] = fma32(neg_lr, acc[t] * (one / np.sqrt(hs[t])), xs[t])
        elif mode == 1:
            for t in range(m):
                xs[t] = fma32(neg_lr, fma32(wd, xs[t], acc[t] * (one / np.sqrt(hs[t]))), xs[t])
        elif wd == 0.0:
            for t in range(m):
                hk = hs[t]
                step = acc[t] * (one / np.sqrt(hk))
                xs[t] = fma32(neg_lr, step, xs[t])
                hs[t] = fma32(w_new, step * step + eps, hk * w_old)
        else:
            for t in range(m):
                hk = hs[t]
                step = acc[t] * (one / np.sqrt(hk))
                xs[t] = fma32(neg_lr, fma32(wd, xs[t], step), xs[t])
                hs[t] = fma32(w_new, step * step + eps, hk * w_old)


# error_model="numpy": no zero-division check, so that the loops vectorise (H > 0 here)
_options = dict(nogil=True, boundscheck=False, error_model="numpy")
try:  # compiled once per machine: numba's on-disk cache
    kernel = njit(cache=True, **_options)(_kernel)
except RuntimeError:  # no writable cache location: compiled in every process
    kernel = njit(**_options)(_kernel)
