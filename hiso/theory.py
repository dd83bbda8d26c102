"""Quantities from the HiSo theory, for checks on synthetic quadratics.

Everything here is a small pure function of numpy arrays (no torch): curvature summaries of a
Hessian upper bound ``Sigma`` (smoothness ``L``, trace, effective rank ``kappa``, whitening rank
``zeta``), seeded test spectra, the closed-form second moments of a preconditioned ZO step on a
quadratic, the round-count prediction of the dimension sweep and the statistics used to compare
measured round counts with it.

Conventions. A "spectrum" is a 1-D float64 array of eigenvalues. Wherever ``Sigma`` is accepted,
a 1-D array means the diagonal matrix with those entries and a 2-D array is a symmetric matrix.
``H`` (the HiSo preconditioner) is always diagonal and given as a 1-D vector of positive entries.

Why the three curvature numbers matter (design notes, "Theory to check"): the second moment of
the ZO-SGD estimator grows like ``L * d`` (plain smoothness) or ``L * kappa`` with
``kappa = Tr(Sigma) / L``; HiSo's grows like ``zeta = Tr(H^{-1/2} Sigma H^{-1/2})``, which stays
far below ``d``, and independent of it, when ``H`` is close to ``Diag(Sigma) + eps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

FloatArray = NDArray[np.float64]

__all__ = [
    "SlopeFit",
    "contraction_bound",
    "corollary3_terms",
    "dsweep_head",
    "effective_rank",
    "expected_losses_diagonal",
    "expected_losses_noisy",
    "expected_rounds_to",
    "first_round_below",
    "fit_loglog_slope",
    "fixed_trace_head",
    "hiso_step",
    "head_tail_spectrum",
    "lognormal_spectrum",
    "lognormal_with_condition",
    "logspaced",
    "oracle_h",
    "powerlaw_spectrum",
    "predicted_rounds",
    "random_orthogonal",
    "rotate",
    "smoothness",
    "spearman",
    "spectral_illustration",
    "spectral_illustration_draws",
    "trace",
    "whitened_second_moment",
    "whitening_rank",
    "zo_noise_injection",
    "zo_sgd_step",
]


# --------------------------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------------------------


def _as_sigma(sigma: ArrayLike) -> FloatArray:
    """Sigma as float64: a 1-D eigenvalue/diagonal vector or a square symmetric matrix."""
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 1:
        if s.size == 0:
            raise ValueError("Sigma is empty")
        return s
    if s.ndim == 2:
        if s.shape[0] != s.shape[1] or s.size == 0:
            raise ValueError(f"Sigma must be square, got shape {s.shape}")
        scale = max(float(np.max(np.abs(s))), 1.0)
        if not np.allclose(s, s.T, rtol=0.0, atol=1e-10 * scale):
            raise ValueError("Sigma must be symmetric")
        return s
    raise ValueError(f"Sigma must be 1-D (a diagonal) or 2-D (a matrix), got {s.ndim}-D")


def _as_h(h: ArrayLike, d: int) -> FloatArray:
    """A diagonal preconditioner of length d with strictly positive, finite entries."""
    hv = np.asarray(h, dtype=np.float64)
    if hv.ndim != 1 or hv.size != d:
        raise ValueError(f"H must be a 1-D vector of length {d}, got shape {hv.shape}")
    if not np.all(np.isfinite(hv)) or np.any(hv <= 0.0):
        raise ValueError("H must have strictly positive, finite entries")
    return hv


def _diagonal(s: FloatArray) -> FloatArray:
    return s if s.ndim == 1 else np.diag(s).copy()


# --------------------------------------------------------------------------------------------
# Curvature summaries
# --------------------------------------------------------------------------------------------


def smoothness(eigs_or_sigma: ArrayLike) -> float:
    """Smoothness constant ``L``: the largest eigenvalue of Sigma.

    A 1-D input is taken as the eigenvalues themselves (equivalently, a diagonal Sigma); a 2-D
    input must be symmetric and its spectrum is computed with ``eigvalsh``.
    """
    s = _as_sigma(eigs_or_sigma)
    if s.ndim == 1:
        return float(np.max(s))
    return float(np.linalg.eigvalsh(s)[-1])


def trace(sigma: ArrayLike) -> float:
    """``Tr(Sigma)`` (sum of the vector for a diagonal Sigma given as 1-D)."""
    s = _as_sigma(sigma)
    return float(np.sum(s) if s.ndim == 1 else np.trace(s))


def effective_rank(sigma: ArrayLike) -> float:
    """Effective rank ``kappa = Tr(Sigma) / L``; between 1 and d for a PSD, nonzero Sigma.

    ``L * kappa = Tr(Sigma)`` is what replaces ``L * d`` in the ZO-SGD bound, so ``kappa`` says
    how many of the ``d`` directions actually carry curvature.
    """
    big = smoothness(sigma)
    if big <= 0.0:
        raise ValueError("effective rank needs a positive largest eigenvalue")
    return trace(sigma) / big


def whitening_rank(sigma: ArrayLike, h: ArrayLike) -> float:
    """Whitening rank ``zeta = Tr(H^{-1/2} Sigma H^{-1/2})`` for a diagonal, positive ``H``.

    With ``H`` diagonal, ``(H^{-1/2} Sigma H^{-1/2})_ii = Sigma_ii / H_i``, so the trace is
    ``sum_i Sigma_ii / H_i``: O(d), and the off-diagonal part of Sigma does not enter. Raises
    ValueError if any entry of ``H`` is not strictly positive.
    """
    s = _as_sigma(sigma)
    hv = _as_h(h, s.shape[0])
    return float(np.sum(_diagonal(s) / hv))


def oracle_h(sigma: ArrayLike, eps: float) -> FloatArray:
    """The "oracle" preconditioner ``Diag(Sigma) + eps`` that HiSo's estimate aims for.

    For a diagonal Sigma (1-D input) this is ``Sigma + eps``; for a matrix only its diagonal is
    used, because H is diagonal by construction.
    """
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    h = _diagonal(_as_sigma(sigma)) + float(eps)
    if np.any(h <= 0.0):
        raise ValueError("Diag(Sigma) + eps is not strictly positive; increase eps")
    return h


# --------------------------------------------------------------------------------------------
# Spectra
# --------------------------------------------------------------------------------------------


def lognormal_spectrum(d: int, log_mean: float, log_sd: float, seed: int) -> FloatArray:
    """``d`` eigenvalues ``exp(N(log_mean, log_sd^2))``, sorted in decreasing order.

    Sorting makes the result independent of draw order (only the multiset matters for every
    diagonal quantity here); the draws come from ``numpy.random.default_rng(seed)``.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if log_sd < 0:
        raise ValueError(f"log_sd must be >= 0, got {log_sd}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.lognormal(log_mean, log_sd, size=d))[::-1].copy()


def powerlaw_spectrum(d: int, condition: float, exponent: float | None = None) -> FloatArray:
    """Power-law spectrum ``lambda_i = condition * i^{-a}``, i = 1..d (decreasing).

    With ``exponent=None`` the exponent is ``a = ln(condition) / ln(d)``, so that
    ``lambda_1 = condition`` and ``lambda_d = condition * d^{-a} = 1``: max/min equals
    ``condition`` (the last entry is set to 1.0 exactly to remove rounding). With an explicit
    ``exponent`` the top eigenvalue is still ``condition`` but the ratio becomes
    ``d ** exponent``; use that form to sweep ``d`` at a fixed decay rate.
    """
    if d < 2:
        raise ValueError(f"a power law needs d >= 2, got {d}")
    if not condition >= 1.0:
        raise ValueError(f"condition must be >= 1, got {condition}")
    i = np.arange(1, d + 1, dtype=np.float64)
    if exponent is None:
        a = math.log(condition) / math.log(d)
        lam = condition * i ** (-a)
        lam[0], lam[-1] = condition, 1.0
        return lam
    lam = condition * i ** (-float(exponent))
    lam[0] = condition
    return lam


def lognormal_with_condition(d: int, condition: float, seed: int) -> FloatArray:
    """Log-normal-shaped spectrum with max/min equal to ``condition`` (min 1), decreasing.

    Standard normal draws ``g`` are mapped affinely in log space,
    ``ln(lambda) = (g - min g) / (max g - min g) * ln(condition)``, which keeps the log-normal
    shape in the interior while pinning the endpoints to 1 and ``condition`` (set exactly).
    """
    if d < 2:
        raise ValueError(f"a condition number needs d >= 2, got {d}")
    if not condition >= 1.0:
        raise ValueError(f"condition must be >= 1, got {condition}")
    g = np.sort(np.random.default_rng(seed).standard_normal(d))[::-1]
    span = g[0] - g[-1]  # > 0 almost surely for continuous draws
    lam = np.exp((g - g[-1]) / span * math.log(condition))
    lam[0], lam[-1] = float(condition), 1.0
    return lam


def logspaced(k: int, lo: float, hi: float) -> FloatArray:
    """``k`` values geometrically spaced from ``lo`` to ``hi`` (both included exactly)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (lo > 0.0 and hi > 0.0):
        raise ValueError("log spacing needs lo > 0 and hi > 0")
    if k == 1:
        if lo != hi:
            raise ValueError("k == 1 needs lo == hi")
        return np.array([float(lo)])
    out = np.geomspace(lo, hi, k)
    out[0], out[-1] = float(lo), float(hi)
    return out


def block_spectrum(d: int, blocks: int, lo: float, hi: float, within_sd: float, seed: int) -> FloatArray:
    """A diagonal with block structure (issue #15): ``blocks`` contiguous blocks of d // blocks
    coordinates (the last takes the remainder), block b's level log-spaced from ``lo`` to ``hi``,
    each coordinate its level times ``exp(N(0, within_sd^2))``, the factors rescaled per block to
    mean 1 so that the block's mean curvature is exactly its level. Not sorted: the order is the
    block structure.
    """
    if not 1 <= blocks <= d:
        raise ValueError(f"blocks must be in 1..d, got {blocks} for d = {d}")
    if within_sd < 0:
        raise ValueError(f"within_sd must be >= 0, got {within_sd}")
    levels = logspaced(blocks, lo, hi) if blocks > 1 else np.array([float(lo)])
    size = d // blocks
    ids = np.minimum(np.arange(d) // size, blocks - 1)
    factors = np.exp(within_sd * np.random.default_rng(seed).standard_normal(d))
    means = np.bincount(ids, weights=factors) / np.bincount(ids)
    return levels[ids] * factors / means[ids]


def head_tail_spectrum(d: int, head: ArrayLike, tail_total: float) -> FloatArray:
    """``head`` followed by ``d - len(head)`` equal tail eigenvalues summing to ``tail_total``.

    This is the "tiny tail" design of the dimension sweep: with ``H = Diag(Sigma) + eps`` a tail
    eigenvalue ``t = tail_total / (d - k)`` contributes ``t / (t + eps)`` to ``zeta``, so when
    ``t << eps`` the whole tail contributes about ``tail_total / eps``: a fixed share of
    ``zeta`` whatever ``d`` is (e.g. ``tail_total = 1e-3 * eps`` adds about 1e-3).
    """
    hd = np.asarray(head, dtype=np.float64).ravel()
    k = hd.size
    if d < k:
        raise ValueError(f"d = {d} is smaller than the head ({k} eigenvalues)")
    if tail_total < 0:
        raise ValueError(f"tail_total must be >= 0, got {tail_total}")
    if d == k:
        if tail_total != 0:
            raise ValueError("no room for a tail: d == len(head) but tail_total != 0")
        return hd.copy()
    return np.concatenate([hd, np.full(d - k, tail_total / (d - k))])


def dsweep_head(d: int) -> FloatArray:
    """The 10-eigenvalue head of the dimension sweep: five at ``d / 10``, five at 1.

    The top eigenvalue grows with ``d``, so ``L * d`` grows like ``d^2`` and ``L * kappa`` like
    ``d``, while with the oracle H each head eigenvalue adds about 1 to ``zeta`` (about 10 in
    all): the sweep separates the three predictions.
    """
    if d < 10:
        raise ValueError(f"the d-sweep head needs d >= 10, got {d}")
    return np.concatenate([np.full(5, d / 10.0), np.ones(5)])


def fixed_trace_head() -> FloatArray:
    """Ten eigenvalues log-spaced over [1, 100], decreasing (100 first, 1 last).

    A head that does not depend on ``d``: followed by a tiny tail it keeps ``L``, ``Tr(Sigma)``
    and ``zeta`` essentially fixed as ``d`` grows, so only ``L * d`` moves.
    """
    return logspaced(10, 1.0, 100.0)[::-1].copy()


# --------------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------------


def random_orthogonal(d: int, seed: int) -> FloatArray:
    """A Haar-distributed ``d x d`` orthogonal matrix from ``default_rng(seed)``.

    QR of a Gaussian matrix is orthogonal but not Haar unless the sign ambiguity of QR is fixed:
    multiplying column j of Q by ``sign(R_jj)`` makes the factorisation unique, and the result
    Haar (Mezzadri, 2007).
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    g = np.random.default_rng(seed).standard_normal((d, d))
    q, r = np.linalg.qr(g)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def rotate(eigs: ArrayLike, q: ArrayLike) -> FloatArray:
    """``Q diag(eigs) Q^T``, symmetrised so rounding cannot break symmetry."""
    lam = np.asarray(eigs, dtype=np.float64).ravel()
    qm = np.asarray(q, dtype=np.float64)
    if qm.shape != (lam.size, lam.size):
        raise ValueError(f"Q must be {lam.size}x{lam.size}, got {qm.shape}")
    m = (qm * lam) @ qm.T
    return (m + m.T) / 2.0


# --------------------------------------------------------------------------------------------
# One preconditioned ZO step on a quadratic
# --------------------------------------------------------------------------------------------
#
# Setting: f(x) = 1/2 e^T A e with e = x - x*, tau = 1, m = 1, P = 1, direction z = H^{-1/2} u
# with u ~ N(0, I), and the directional derivative taken exactly (mu -> 0; on a quadratic the
# central difference is exact and the forward difference adds mu/2 (z^T A z), an O(mu) bias that
# only sets a noise floor). The step is e+ = e - eta z z^T A e.
#
# Moments. E[z z^T] = H^{-1}. With B = H^{-1/2} A H^{-1/2} and Isserlis' theorem for Gaussian u,
# E[u u^T B u u^T] = 2 B + Tr(B) I, hence
#     E[z z^T A z z^T] = H^{-1/2} (2 B + Tr(B) I) H^{-1/2},      Tr(B) = zeta.
# One step in expectation, with w = H^{-1/2} A e (the whitened gradient):
#     E[f(e+)] = f - eta |w|^2 + eta^2/2 (2 w^T B w + zeta |w|^2)
#              <= f - eta |w|^2 (1 - eta (2 lam_max(B) + zeta) / 2).
# Since |w|^2 = v^T (A^{1/2} H^{-1} A^{1/2}) v with v = A^{1/2} e, |v|^2 = 2 f, and that matrix
# has the same nonzero spectrum as B, |w|^2 >= 2 lam_min(B) f. For a step that keeps the bracket
# positive this gives
#     E[f(e+)] <= (1 - lam_min(B) eta (2 - eta (2 lam_max(B) + zeta))) f.
# For the oracle H = Diag(A) + eps with A diagonal, B = diag(A_i / (A_i + eps)): lam_max < 1 and
# lam_min ~ 1 on every coordinate with A_i >> eps. With lam_min = lam_max = 1 the factor is
# 1 - eta (2 - eta (zeta + 2)), minimised at eta = 1 / (zeta + 2) where it equals
# 1 - 1 / (zeta + 2).


def whitened_second_moment(a: ArrayLike, h: ArrayLike) -> FloatArray:
    """Closed form of ``E[z z^T A z z^T]`` for ``z = H^{-1/2} u``, ``u ~ N(0, I)``.

    Equals ``H^{-1/2} (2 B + Tr(B) I) H^{-1/2}`` with ``B = H^{-1/2} A H^{-1/2}`` (Isserlis'
    theorem); ``Tr(B)`` is the whitening rank. This is the identity behind the ``zeta + 2`` in
    :func:`predicted_rounds`.
    """
    am = np.asarray(a, dtype=np.float64)
    if am.ndim == 1:
        am = np.diag(am)
    am = _as_sigma(am)
    hv = _as_h(h, am.shape[0])
    r = 1.0 / np.sqrt(hv)
    b = am * np.outer(r, r)
    inner = 2.0 * b + np.trace(b) * np.eye(b.shape[0])
    return inner * np.outer(r, r)


def contraction_bound(
    zeta: float, eta: float, lam_min: float = 1.0, lam_max: float = 1.0
) -> float:
    """Upper bound on ``E[f(x+)] / f(x)`` for one whitened ZO step on a quadratic.

    ``1 - lam_min * eta * (2 - eta * (2 * lam_max + zeta))``, where ``lam_min`` and ``lam_max``
    are the extreme eigenvalues of ``B = H^{-1/2} A H^{-1/2}`` (derivation in the comment block
    above). Valid when ``eta * (2 * lam_max + zeta) <= 2``; with the oracle H
    (``lam_min = lam_max = 1``) and ``eta = 1 / (zeta + 2)`` it is ``1 - 1 / (zeta + 2)``.
    """
    if not eta * (2.0 * lam_max + zeta) <= 2.0:
        raise ValueError("step too large: the bound needs eta * (2 lam_max + zeta) <= 2")
    return 1.0 - lam_min * eta * (2.0 - eta * (2.0 * lam_max + zeta))


def predicted_rounds(zeta: float, reduction: float = 1e-3) -> float:
    """Rounds for HiSo (oracle H, tau = m = P = 1, eta = 1/(zeta+2)) to cut f by ``reduction``.

    Returns ``(zeta + 2) * ln(1 / reduction)``, e.g. ``(zeta + 2) ln(10^3)`` for the default.
    The per-round expected contraction at that step is ``q = 1 - 1 / (zeta + 2)``
    (:func:`contraction_bound`), so ``n`` rounds suffice once ``q^n <= reduction``, i.e.
    ``n >= ln(1/reduction) / (-ln q)``. Because ``-ln(1 - c) >= c``, ``n = ln(1/reduction) / c``
    with ``c = 1 / (zeta + 2)`` always suffices, and it exceeds the exact count by only about
    ``ln(1/reduction) / 2`` (about 3.5 rounds at 1e-3): this is the stated prediction, linear
    in ``zeta`` and free of ``d``. It concerns the error components with ``A_i >> eps`` (where
    ``lam_min(B) ~ 1``); a tail with ``A_i << eps`` barely contracts but holds a negligible
    share of f in the sweep designs.
    """
    if not 0.0 < reduction < 1.0:
        raise ValueError(f"reduction must lie in (0, 1), got {reduction}")
    if zeta < 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")
    return (zeta + 2.0) * math.log(1.0 / reduction)


def expected_losses_diagonal(
    a: ArrayLike, h: ArrayLike, eta: float, e0: ArrayLike, rounds: int
) -> FloatArray:
    """Exact ``E[f]`` after 0..``rounds`` whitened ZO steps on a diagonal quadratic.

    For diagonal A and H the expected squared errors ``s_i = E[e_i^2]`` follow a closed linear
    recursion (odd Gaussian moments vanish, so no cross terms survive):
        ``s_i+ = (1 - 2 eta b_i + 2 eta^2 b_i^2) s_i + (eta^2 / h_i) sum_j (a_j^2 / h_j) s_j``
    with ``b_i = a_i / h_i``. Returns ``[1/2 a . s_r for r = 0..rounds]``, which lets a sweep's
    measured curves be compared with the expectation without Monte Carlo.
    """
    av = np.asarray(a, dtype=np.float64).ravel()
    hv = _as_h(h, av.size)
    s = np.asarray(e0, dtype=np.float64).ravel() ** 2
    if s.size != av.size:
        raise ValueError("e0 must have the same length as a")
    b = av / hv
    diag = 1.0 - 2.0 * eta * b + 2.0 * eta**2 * b**2
    col = eta**2 / hv
    row = av**2 / hv
    out = np.empty(rounds + 1)
    out[0] = 0.5 * float(av @ s)
    for r in range(1, rounds + 1):
        s = diag * s + col * float(row @ s)
        out[r] = 0.5 * float(av @ s)
    return out


# --------------------------------------------------------------------------------------------
# Measuring and fitting
# --------------------------------------------------------------------------------------------


def first_round_below(
    values: ArrayLike, rounds: ArrayLike, threshold: float
) -> int | float | None:
    """The first entry of ``rounds`` at which ``values <= threshold``; None if never.

    NaN values never count as below the threshold.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    r = np.asarray(rounds).ravel()
    if v.size != r.size:
        raise ValueError(f"values ({v.size}) and rounds ({r.size}) differ in length")
    hits = np.flatnonzero(v <= threshold)
    if hits.size == 0:
        return None
    return r[hits[0]].item()


@dataclass(frozen=True)
class SlopeFit:
    """Least-squares fit of ``log y = intercept + slope * log x`` with a bootstrap interval."""

    slope: float
    intercept: float
    lo: float
    hi: float
    n_boot: int


def _ols_slopes(lx: FloatArray, ly: FloatArray) -> FloatArray:
    """Least-squares slopes of each row of ``ly`` (shape (n, k)) on ``lx`` (shape (k,))."""
    xc = lx - lx.mean()
    return (ly - ly.mean(axis=-1, keepdims=True)) @ xc / float(xc @ xc)


def fit_loglog_slope(
    x: ArrayLike, y: ArrayLike, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> SlopeFit:
    """Fit ``log y = a + b log x`` on per-x medians over seeds; bootstrap CI over seeds.

    ``y`` is 1-D (one value per x) or 2-D with shape ``(len(x), n_seeds)``. NaN entries (runs
    that hit the round cap and never reached the target) are dropped before anything else, so
    each x keeps its finite seeds; an x with no finite seed is dropped altogether, and at least
    two distinct x must remain. Dropping censored runs biases the medians downwards when many
    runs are censored: report how many were dropped alongside the fit.

    The point estimate is ``scipy.stats.linregress`` on ``(log x, log median y)``. The interval
    resamples, independently for each x, its finite seeds with replacement, recomputes the
    medians and refits, ``n_boot`` times; ``lo``/``hi`` are the ``(1 - ci)/2`` and
    ``(1 + ci)/2`` percentiles. With a single seed per x the bootstrap has nothing to resample
    and ``lo == hi == slope`` (up to rounding).
    """
    xv = np.asarray(x, dtype=np.float64).ravel()
    yv = np.asarray(y, dtype=np.float64)
    if yv.ndim == 1:
        yv = yv[:, None]
    if yv.ndim != 2 or yv.shape[0] != xv.size:
        raise ValueError(f"y must have shape ({xv.size},) or ({xv.size}, n_seeds), got {yv.shape}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if np.any(~np.isfinite(xv)) or np.any(xv <= 0):
        raise ValueError("x must be positive and finite for a log-log fit")
    if np.any(np.isinf(yv)):
        raise ValueError("y contains infinities; use NaN for censored runs")

    kept_x: list[float] = []
    groups: list[FloatArray] = []
    for xi, row in zip(xv, yv):
        finite = row[~np.isnan(row)]
        if finite.size == 0:
            continue
        if np.any(finite <= 0):
            raise ValueError("y must be positive for a log-log fit")
        kept_x.append(float(xi))
        groups.append(finite)
    lx = np.log(np.asarray(kept_x))
    if np.unique(lx).size < 2:
        raise ValueError("need at least two distinct x with a finite y")

    ly = np.log([np.median(g) for g in groups])
    fit = stats.linregress(lx, ly)

    rng = np.random.default_rng(seed)
    boot_ly = np.empty((n_boot, lx.size))
    for j, g in enumerate(groups):
        idx = rng.integers(0, g.size, size=(n_boot, g.size))
        boot_ly[:, j] = np.log(np.median(g[idx], axis=1))
    slopes = _ols_slopes(lx, boot_ly)
    lo, hi = np.quantile(slopes, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    return SlopeFit(
        slope=float(fit.slope),
        intercept=float(fit.intercept),
        lo=float(lo),
        hi=float(hi),
        n_boot=int(n_boot),
    )


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation, e.g. between HiSo's learned diagonal and the true curvature.

    Rank-based because only the ordering matters for whether H whitens the right coordinates,
    and the learned diagonal lives on a different scale (squared updates plus eps).
    """
    av = np.asarray(a, dtype=np.float64).ravel()
    bv = np.asarray(b, dtype=np.float64).ravel()
    if av.size != bv.size or av.size < 2:
        raise ValueError("spearman needs two vectors of equal length >= 2")
    return float(stats.spearmanr(av, bv).statistic)


def spectral_illustration(
    d: int = 200,
    log_mean: float = 0.9,
    log_sd: float = 2.0,
    eps: float = 2.5,
    draws: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Medians over ``draws`` of ``zeta``, ``L * kappa`` and ``L * d`` for a log-normal Sigma.

    Reproduces the paper's illustration (``zeta ~ 100 << L kappa ~ 3400 << L d ~ 120000``):
    Sigma is diagonal with ``d = 200`` eigenvalues ``exp(N(log_mean, log_sd^2))`` and
    ``H = Diag(Sigma) + eps``. The defaults (0.9, 2.0, 2.5) were checked to land at about
    (99.5, 3.3e3, 1.1e5) with seed 0: ``zeta ~ d/2`` because ``eps`` sits near the median
    eigenvalue ``exp(0.9) ~ 2.46``, so about half the coordinates are whitened to ~1 and the
    rest to ~0. The ordering ``L kappa << L d`` (and where both sit relative to ``zeta``)
    depends on the units of A: scaling A by c scales ``L kappa`` and ``L d`` by c, whereas
    ``zeta`` is scale-free once ``eps`` scales with A, since it is a sum of ratios A_i / H_i.
    """
    per_draw = spectral_illustration_draws(d, log_mean, log_sd, eps, draws, seed)
    return {k: float(np.median(v)) for k, v in per_draw.items()}


# --------------------------------------------------------------------------------------------
# Theory steps, noise in the expected-loss recursion, illustration draws, Corollary 3's shape
# --------------------------------------------------------------------------------------------


def hiso_step(zeta: float) -> float:
    """HiSo's step with the oracle H on a quadratic: ``1 / (zeta + 2)``.

    It minimises the contraction bound ``1 - eta (2 - eta (zeta + 2))`` (lam_min = lam_max = 1,
    :func:`contraction_bound`), where the bound equals ``1 - 1 / (zeta + 2)``.
    """
    if zeta < 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")
    return 1.0 / (zeta + 2.0)


def zo_sgd_step(sigma: ArrayLike) -> float:
    """ZO-SGD's (H = I) step on a quadratic: ``1 / (Tr A + 2 L)``.

    With H = I the whitened matrix is A itself: ``E[u u^T A u u^T] = 2A + Tr(A) I``, so
    ``E[f+] <= f - eta |grad|^2 (1 - eta (2L + Tr A) / 2)``; ``eta = 1 / (Tr A + 2L)`` keeps at
    least half of the first-order decrease. ``Tr A = L kappa`` is where ZO-SGD pays for the
    dimension (``<= L d``).
    """
    return 1.0 / (trace(sigma) + 2.0 * smoothness(sigma))


def zo_noise_injection(a: ArrayLike, h: ArrayLike, eta: float, kind: str, sigma: float,
                       mu: float) -> FloatArray:
    """Per-round increase of ``E[e_i^2]`` that noise adds to one whitened ZO step.

    The step is ``e+ = e - eta g z`` with ``z = H^{-1/2} u`` and ``g = z^T A e + n``, where the
    noise ``n`` is zero-mean and independent of the signal (diagonal A and H; the forward
    difference's O(mu) bias ``mu/2 z^T A z`` is neglected). It adds ``eta^2 E[n^2 z_i^2]``:

    * ``function`` (independent N(0, sigma^2) on each of the two evaluations): ``n`` has
      variance ``2 sigma^2 / mu^2`` and is independent of z: ``eta^2 2 sigma^2 / (mu^2 h_i)``;
    * ``gradient_isotropic`` (``n = sigma xi^T z``, xi ~ N(0, I)): ``E[|z|^2 z_i^2] =
      (Tr H^{-1} + 2 / h_i) / h_i``, so ``eta^2 sigma^2 (Tr H^{-1} + 2/h_i) / h_i``; this is the
      ``Tr(H^{-1})`` term, which grows with d when H has a flat tail at eps;
    * ``gradient_aligned`` (``n = sigma xi^T A^{1/2} z``): ``E[z^T A z z_i^2] =
      (zeta + 2 a_i / h_i) / h_i``, so ``eta^2 sigma^2 (zeta + 2 a_i/h_i) / h_i``;
    * ``none``: zeros.
    """
    av = np.asarray(a, dtype=np.float64).ravel()
    hv = _as_h(h, av.size)
    if kind == "none" or sigma == 0.0:
        return np.zeros_like(av)
    if kind == "function":
        if not mu > 0:
            raise ValueError("function-value noise needs mu > 0")
        return eta**2 * 2.0 * sigma**2 / (mu**2 * hv)
    if kind == "gradient_isotropic":
        return eta**2 * sigma**2 * (np.sum(1.0 / hv) + 2.0 / hv) / hv
    if kind == "gradient_aligned":
        zeta = float(np.sum(av / hv))
        return eta**2 * sigma**2 * (zeta + 2.0 * av / hv) / hv
    raise ValueError(f"unknown noise kind {kind!r}")


def expected_losses_noisy(a: ArrayLike, h: ArrayLike, eta: float, s0: ArrayLike, rounds: int,
                          inject: ArrayLike | None = None) -> FloatArray:
    """``E[f]`` after 0..``rounds`` whitened ZO steps on a diagonal quadratic, with noise.

    The recursion of :func:`expected_losses_diagonal` on ``s_i = E[e_i^2]`` (given here
    directly as ``s0``, e.g. ``init_scale^2 / k`` on k head coordinates for an isotropic x0 of
    fixed norm) plus a constant per-round ``inject`` (:func:`zo_noise_injection`). Noise that is
    independent of the signal only adds to the second moments, so the expectation stays exact.
    """
    av = np.asarray(a, dtype=np.float64).ravel()
    hv = _as_h(h, av.size)
    s = np.asarray(s0, dtype=np.float64).ravel().copy()
    if s.size != av.size:
        raise ValueError("s0 must have the same length as a")
    add = np.zeros_like(av) if inject is None else np.asarray(inject, dtype=np.float64).ravel()
    b = av / hv
    diag = 1.0 - 2.0 * eta * b + 2.0 * eta**2 * b**2
    col = eta**2 / hv
    row = av**2 / hv
    out = np.empty(rounds + 1)
    out[0] = 0.5 * float(av @ s)
    for r in range(1, rounds + 1):
        s = diag * s + col * float(row @ s) + add
        out[r] = 0.5 * float(av @ s)
    return out


def spectral_illustration_draws(
    d: int = 200,
    log_mean: float = 0.9,
    log_sd: float = 2.0,
    eps: float = 2.5,
    draws: int = 200,
    seed: int = 0,
    scale: float = 1.0,
) -> dict[str, FloatArray]:
    """Per-draw ``zeta``, ``L * kappa`` and ``L * d`` of :func:`spectral_illustration`.

    :func:`spectral_illustration` gives the medians of these arrays. ``scale`` multiplies Sigma
    *and* eps (a change of the units of A): ``L kappa`` and ``L d`` scale by it, ``zeta`` does
    not (a sum of ratios A_i / (A_i + eps)).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    sig = rng.lognormal(log_mean, log_sd, size=(draws, d)) * scale
    return {
        "zeta": np.sum(sig / (sig + eps * scale), axis=1),
        "L_kappa": np.sum(sig, axis=1),
        "L_d": np.max(sig, axis=1) * d,
    }


def corollary3_terms(zeta: float, kappa: float, tau: ArrayLike, m: ArrayLike,
                     rounds: float) -> tuple[FloatArray, FloatArray]:
    """The two terms of Corollary 3's rate: ``sqrt(zeta / (tau m R))`` and
    ``sqrt(tau kappa / (m R))`` (constants dropped; fit them to measurements)."""
    t = np.asarray(tau, dtype=np.float64)
    mm = np.asarray(m, dtype=np.float64)
    if np.any(t < 1) or np.any(mm < 1) or not rounds > 0:
        raise ValueError("tau, m >= 1 and R > 0 required")
    return np.sqrt(zeta / (t * mm * rounds)), np.sqrt(t * kappa / (mm * rounds))


def expected_rounds_to(a: ArrayLike, h: ArrayLike, eta: float, s0: ArrayLike, target: float,
                       cap: int) -> float:
    """First round at which the exact ``E[f]`` (:func:`expected_losses_noisy`, no noise) is at
    most ``target * E[f_0]``; ``inf`` if not within ``cap`` rounds or if it blows up.

    Used to start the step-size search where the theory expects the best step (diagonal A):
    cheap, deterministic, and only a starting point, the selection itself is measured.
    """
    av = np.asarray(a, dtype=np.float64).ravel()
    hv = _as_h(h, av.size)
    s = np.asarray(s0, dtype=np.float64).ravel().copy()
    b = av / hv
    diag = 1.0 - 2.0 * eta * b + 2.0 * eta**2 * b**2
    col = eta**2 / hv
    row = av**2 / hv
    f0 = 0.5 * float(av @ s)
    for r in range(1, cap + 1):
        s = diag * s + col * float(row @ s)
        f = 0.5 * float(av @ s)
        if f <= target * f0:
            return float(r)
        if not math.isfinite(f) or f > 1e6 * f0:
            return math.inf
    return math.inf
