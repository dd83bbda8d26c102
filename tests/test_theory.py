"""Tests for hiso.theory: hand-computed values, spectra properties, moment identities, fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hiso import theory as t

ROT45 = np.array([[1.0, -1.0], [1.0, 1.0]]) / math.sqrt(2.0)


# ---------------------------------------------------------------- curvature summaries


def test_whitening_rank_diagonal_hand_value():
    # 1/1 + 4/2 + 9/3
    assert t.whitening_rank(np.array([1.0, 4.0, 9.0]), np.array([1.0, 2.0, 3.0])) == 6.0
    assert t.whitening_rank(np.diag([1.0, 4.0, 9.0]), np.array([1.0, 2.0, 3.0])) == 6.0


def test_whitening_rank_rotated_2x2_hand_value():
    sigma = t.rotate([3.0, 1.0], ROT45)  # [[2, 1], [1, 2]]
    np.testing.assert_allclose(sigma, [[2.0, 1.0], [1.0, 2.0]], atol=1e-15)
    # 2/1 + 2/4: only the diagonal counts
    assert t.whitening_rank(sigma, [1.0, 4.0]) == pytest.approx(2.5, abs=1e-14)


def test_whitening_rank_matches_dense_trace():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((6, 6))
    sigma = g @ g.T
    h = rng.uniform(0.2, 5.0, size=6)
    r = np.diag(h**-0.5)
    assert t.whitening_rank(sigma, h) == pytest.approx(np.trace(r @ sigma @ r), rel=1e-12)


@pytest.mark.parametrize("bad", [[1.0, 0.0, 1.0], [1.0, -2.0, 1.0], [1.0, np.nan, 1.0]])
def test_whitening_rank_rejects_non_positive_h(bad):
    with pytest.raises(ValueError):
        t.whitening_rank([1.0, 1.0, 1.0], bad)


def test_whitening_rank_rejects_wrong_length_h():
    with pytest.raises(ValueError):
        t.whitening_rank([1.0, 1.0, 1.0], [1.0, 1.0])


def test_smoothness_trace_effective_rank_hand_values():
    assert t.smoothness([4.0, 2.0, 2.0]) == 4.0
    assert t.trace([4.0, 2.0, 2.0]) == 8.0
    assert t.effective_rank([4.0, 2.0, 2.0]) == 2.0
    m = np.array([[2.0, 1.0], [1.0, 2.0]])  # eigenvalues 3 and 1
    assert t.smoothness(m) == pytest.approx(3.0, abs=1e-14)
    assert t.trace(m) == 4.0
    assert t.effective_rank(m) == pytest.approx(4.0 / 3.0, abs=1e-14)


def test_smoothness_of_rotated_matrix_is_top_eigenvalue():
    q = t.random_orthogonal(8, seed=5)
    eigs = t.powerlaw_spectrum(8, 50.0)
    assert t.smoothness(t.rotate(eigs, q)) == pytest.approx(50.0, rel=1e-12)
    assert t.effective_rank(t.rotate(eigs, q)) == pytest.approx(eigs.sum() / 50.0, rel=1e-12)


def test_asymmetric_sigma_rejected():
    with pytest.raises(ValueError):
        t.smoothness(np.array([[1.0, 2.0], [0.0, 1.0]]))


def test_oracle_h():
    np.testing.assert_array_equal(t.oracle_h([1.0, 4.0], 0.5), [1.5, 4.5])
    np.testing.assert_array_equal(t.oracle_h([[2.0, 1.0], [1.0, 3.0]], 1.0), [3.0, 4.0])
    with pytest.raises(ValueError):
        t.oracle_h([1.0, 4.0], -0.1)
    with pytest.raises(ValueError):
        t.oracle_h([0.0, 4.0], 0.0)


# ---------------------------------------------------------------- spectra


@pytest.mark.parametrize("d,cond", [(2, 10.0), (50, 1e3), (1000, 1e6)])
def test_powerlaw_condition_exact(d, cond):
    lam = t.powerlaw_spectrum(d, cond)
    assert lam.shape == (d,) and lam.dtype == np.float64
    assert lam.max() == cond and lam.min() == 1.0
    assert lam.max() / lam.min() == cond
    assert np.all(np.diff(lam) < 0)
    if d > 2:
        a = math.log(cond) / math.log(d)
        assert lam[1] == pytest.approx(cond * 2.0**-a, rel=1e-12)


def test_powerlaw_explicit_exponent():
    lam = t.powerlaw_spectrum(100, 7.0, exponent=1.0)
    np.testing.assert_allclose(lam, 7.0 / np.arange(1, 101), rtol=1e-14)
    assert lam[0] / lam[-1] == pytest.approx(100.0, rel=1e-12)


@pytest.mark.parametrize("d,cond", [(2, 10.0), (200, 1e4), (3000, 123.0)])
def test_lognormal_with_condition_exact(d, cond):
    lam = t.lognormal_with_condition(d, cond, seed=7)
    assert lam.shape == (d,) and lam.dtype == np.float64
    assert lam.max() / lam.min() == cond
    assert lam.min() == 1.0
    assert np.all(np.diff(lam) <= 0)


def test_lognormal_with_condition_seeded():
    a = t.lognormal_with_condition(100, 1e3, seed=1)
    np.testing.assert_array_equal(a, t.lognormal_with_condition(100, 1e3, seed=1))
    assert not np.array_equal(a, t.lognormal_with_condition(100, 1e3, seed=2))


def test_lognormal_spectrum_seeded_and_distributed():
    a = t.lognormal_spectrum(20000, 0.9, 2.0, seed=11)
    assert a.shape == (20000,) and a.dtype == np.float64
    np.testing.assert_array_equal(a, t.lognormal_spectrum(20000, 0.9, 2.0, seed=11))
    assert not np.array_equal(a, t.lognormal_spectrum(20000, 0.9, 2.0, seed=12))
    assert np.all(np.diff(a) <= 0)
    # mean and sd of log are 0.9 and 2.0; standard errors ~0.014 and ~0.01
    assert np.log(a).mean() == pytest.approx(0.9, abs=0.06)
    assert np.log(a).std() == pytest.approx(2.0, abs=0.05)


def test_logspaced_endpoints_and_ratio():
    v = t.logspaced(7, 0.1, 1000.0)
    assert v.shape == (7,)
    assert v[0] == 0.1 and v[-1] == 1000.0
    np.testing.assert_allclose(v[1:] / v[:-1], 10 ** (4 / 6), rtol=1e-12)
    np.testing.assert_array_equal(t.logspaced(1, 3.0, 3.0), [3.0])


def test_head_tail_spectrum():
    lam = t.head_tail_spectrum(10, [5.0, 4.0], 2.0)
    np.testing.assert_allclose(lam, [5.0, 4.0] + [0.25] * 8)
    assert lam.sum() == pytest.approx(11.0)
    with pytest.raises(ValueError):
        t.head_tail_spectrum(1, [5.0, 4.0], 0.0)


def test_dsweep_and_fixed_heads():
    np.testing.assert_array_equal(t.dsweep_head(300), [30.0] * 5 + [1.0] * 5)
    fh = t.fixed_trace_head()
    assert fh.shape == (10,) and fh[0] == 100.0 and fh[-1] == 1.0
    np.testing.assert_allclose(fh[:-1] / fh[1:], 100 ** (1 / 9), rtol=1e-12)


@pytest.mark.parametrize("d", [100, 1000, 100000])
def test_tiny_tail_keeps_zeta_share_fixed(d):
    eps = 0.01
    lam = t.head_tail_spectrum(d, t.dsweep_head(d), 1e-3 * eps)
    h = t.oracle_h(lam, eps)
    tail_share = t.whitening_rank(lam[10:], h[10:])
    assert tail_share == pytest.approx(1e-3, rel=2e-3)
    head = t.dsweep_head(d)
    expected_head = 5 * (d / 10) / (d / 10 + eps) + 5 / (1 + eps)
    assert t.whitening_rank(lam, h) == pytest.approx(expected_head + tail_share, rel=1e-12)
    assert t.smoothness(lam) == head.max()


# ---------------------------------------------------------------- rotations


def test_random_orthogonal_orthogonal_and_seeded():
    q = t.random_orthogonal(12, seed=4)
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-12)
    np.testing.assert_allclose(q @ q.T, np.eye(12), atol=1e-12)
    np.testing.assert_array_equal(q, t.random_orthogonal(12, seed=4))
    assert not np.allclose(q, t.random_orthogonal(12, seed=5))


def test_random_orthogonal_sign_correction():
    # With the sign fix the first column is the normalised first Gaussian column (Gram-Schmidt);
    # without it LAPACK's Householder QR flips that column for most seeds (R_00 < 0).
    for seed in range(20):
        g = np.random.default_rng(seed).standard_normal((5, 5))
        q = t.random_orthogonal(5, seed)
        np.testing.assert_allclose(q[:, 0], g[:, 0] / np.linalg.norm(g[:, 0]), atol=1e-12)


def test_rotate_preserves_spectrum():
    eigs = np.array([5.0, 2.0, 1.0, 0.5])
    m = t.rotate(eigs, t.random_orthogonal(4, seed=9))
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_allclose(np.linalg.eigvalsh(m), np.sort(eigs), atol=1e-12)


# ---------------------------------------------------------------- whitened ZO step on a quadratic


def test_second_moment_identity_monte_carlo():
    a = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]])
    h = np.array([1.0, 2.0, 0.5])
    n = 400_000
    z = np.random.default_rng(1).standard_normal((n, 3)) / np.sqrt(h)
    np.testing.assert_allclose(np.einsum("ni,nj->ij", z, z) / n, np.diag(1 / h), atol=0.02)
    quad = np.einsum("ni,ij,nj->n", z, a, z)
    mc = np.einsum("n,ni,nj->ij", quad, z, z) / n
    closed = t.whitened_second_moment(a, h)
    # hand value of one entry: (2 B_00 + Tr B) / h_0 with B_00 = 2, Tr B = 2 + 0.5 + 1
    assert closed[0, 0] == pytest.approx(7.5)
    # an error in the "2 B" coefficient would be off by 0.18 * max; MC error here is ~0.006
    np.testing.assert_allclose(mc, closed, atol=0.03 * np.abs(closed).max())


def test_expected_losses_recursion_monte_carlo():
    a = np.array([4.0, 1.0, 0.25, 0.01])
    h = t.oracle_h(a, 0.1)
    zeta = t.whitening_rank(a, h)
    eta = 1.0 / (zeta + 2.0)
    e0 = np.array([1.0, -2.0, 0.5, 3.0])
    steps, n = 4, 200_000
    rng = np.random.default_rng(2)
    e = np.tile(e0, (n, 1))
    for _ in range(steps):
        z = rng.standard_normal((n, 4)) / np.sqrt(h)
        e = e - eta * z * np.sum(z * a * e, axis=1, keepdims=True)
    mc = 0.5 * np.mean(np.sum(a * e**2, axis=1))
    exact = t.expected_losses_diagonal(a, h, eta, e0, steps)
    assert exact[0] == pytest.approx(0.5 * float(a @ e0**2))
    assert mc == pytest.approx(exact[-1], rel=0.03)
    assert exact[-1] < 0.6 * exact[0]


def test_contraction_bound_and_exact_step():
    zeta = 10.0
    assert t.contraction_bound(zeta, 1 / (zeta + 2)) == pytest.approx(1 - 1 / 12)
    # H = A makes B = I: the bound holds with equality, 1 - 2 eta + eta^2 (d + 2)
    a = np.array([3.0, 1.0, 0.2, 7.0])
    e0 = np.array([1.0, 1.0, -1.0, 0.3])
    for eta in (0.05, 1 / 6, 0.3):
        f = t.expected_losses_diagonal(a, a, eta, e0, 1)
        assert f[1] / f[0] == pytest.approx(t.contraction_bound(4.0, eta), rel=1e-12)
        assert f[1] / f[0] == pytest.approx(1 - 2 * eta + eta**2 * 6, rel=1e-12)
    # a generic H: the exact one-step ratio respects the bound with the extremes of B
    h = np.array([1.0, 2.0, 0.5, 4.0])
    b = a / h
    z = float(b.sum())
    eta = 1 / (z + 2 * b.max())
    f = t.expected_losses_diagonal(a, h, eta, e0, 1)
    bound = t.contraction_bound(z, eta, lam_min=b.min(), lam_max=b.max())
    assert f[1] / f[0] <= bound + 1e-12
    assert f[1] / f[0] < 1.0
    with pytest.raises(ValueError):
        t.contraction_bound(10.0, 0.5)


def test_predicted_rounds_value():
    assert t.predicted_rounds(10.0) == pytest.approx(12 * math.log(1000.0), rel=1e-15)
    assert t.predicted_rounds(10.0) == pytest.approx(82.893, abs=1e-3)
    assert t.predicted_rounds(98.0, 1e-2) == pytest.approx(100 * math.log(100.0))
    with pytest.raises(ValueError):
        t.predicted_rounds(10.0, 1.5)


@pytest.mark.parametrize("d", [100, 3000])
def test_predicted_rounds_matches_exact_expectation_in_dsweep(d):
    eps = 0.01
    lam = t.head_tail_spectrum(d, t.dsweep_head(d), 1e-3 * eps)
    h = t.oracle_h(lam, eps)
    zeta = t.whitening_rank(lam, h)
    f = t.expected_losses_diagonal(lam, h, 1 / (zeta + 2), np.ones(d), 200)
    n = t.first_round_below(f / f[0], np.arange(201), 1e-3)
    pred = t.predicted_rounds(zeta)
    # the prediction is an upper bound, loose by about ln(1e3)/2 ~ 3.5 rounds
    assert n is not None and pred - 5 <= n <= pred


# ---------------------------------------------------------------- measuring and fitting


def test_first_round_below():
    vals = [5.0, np.nan, 3.0, 1.0, 0.5]
    rounds = [0, 10, 20, 30, 40]
    assert t.first_round_below(vals, rounds, 1.0) == 30
    assert t.first_round_below(vals, rounds, 4.0) == 20
    assert t.first_round_below(vals, rounds, 0.1) is None
    with pytest.raises(ValueError):
        t.first_round_below(vals, rounds[:3], 1.0)


def test_slope_exact_power_law():
    x = np.array([10.0, 30.0, 100.0, 1000.0])
    fit = t.fit_loglog_slope(x, 3.0 * x**2, n_boot=200)
    assert fit.slope == pytest.approx(2.0, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(3.0), abs=1e-11)
    assert fit.lo == pytest.approx(2.0, abs=1e-12) and fit.hi == pytest.approx(2.0, abs=1e-12)
    assert fit.n_boot == 200


def test_slope_noisy_seeds_ci_covers_truth():
    rng = np.random.default_rng(0)
    x = np.array([100.0, 200.0, 400.0, 800.0, 1600.0])
    y = 3.0 * x[:, None] * np.exp(rng.normal(0.0, 0.2, size=(5, 20)))
    fit = t.fit_loglog_slope(x, y, seed=1)
    assert fit.lo < 1.0 < fit.hi
    assert fit.hi - fit.lo < 0.2
    assert fit.slope == pytest.approx(1.0, abs=0.1)
    steeper = t.fit_loglog_slope(x, y * x[:, None] ** 0.5, seed=1)
    assert steeper.lo > 1.2  # a wrong slope is excluded
    again = t.fit_loglog_slope(x, y, seed=1)
    assert (again.lo, again.hi) == (fit.lo, fit.hi)


def test_slope_drops_nan_runs():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = np.array(
        [
            [1.0, 2.0, 3.0, np.nan],  # median of finite values: 2
            [4.0, 4.0, np.nan, np.nan],  # 4
            [8.0, 7.0, 9.0, 8.0],  # 8
            [np.nan] * 4,  # dropped
        ]
    )
    fit = t.fit_loglog_slope(x, y, n_boot=500)
    assert fit.slope == pytest.approx(1.0, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(2.0), abs=1e-12)
    assert np.isfinite(fit.lo) and np.isfinite(fit.hi) and fit.lo <= 1.0 <= fit.hi
    with pytest.raises(ValueError):
        t.fit_loglog_slope(x, np.full((4, 3), np.nan))
    with pytest.raises(ValueError):
        t.fit_loglog_slope(x, -np.ones(4))


def test_spearman():
    assert t.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    a = np.random.default_rng(0).lognormal(size=50)
    assert t.spearman(a, np.log(a) * 7 + 3) == pytest.approx(1.0)
    assert t.spearman(a, -a) == pytest.approx(-1.0)


# ---------------------------------------------------------------- spectral illustration


def test_spectral_illustration_lands_in_paper_ranges():
    med = t.spectral_illustration()
    assert 90 <= med["zeta"] <= 110
    assert 2.5e3 <= med["L_kappa"] <= 5e3
    assert 7e4 <= med["L_d"] <= 2e5
    assert med["zeta"] < med["L_kappa"] < med["L_d"]


def test_spectral_illustration_units():
    base = t.spectral_illustration(draws=50)
    scaled = t.spectral_illustration(log_mean=0.9 + math.log(10.0), eps=25.0, draws=50)
    # zeta is a sum of ratios A_i / (A_i + eps): unchanged when A and eps scale together
    assert scaled["zeta"] == pytest.approx(base["zeta"], rel=1e-9)
    assert scaled["L_kappa"] == pytest.approx(10 * base["L_kappa"], rel=1e-9)
    assert scaled["L_d"] == pytest.approx(10 * base["L_d"], rel=1e-9)
    # eps -> 0 whitens every coordinate to 1
    assert t.spectral_illustration(eps=1e-12, draws=20)["zeta"] == pytest.approx(200, abs=1e-6)


# ---------------------------------------------------------------- theory steps, noise, draws


def test_theory_steps_hand_values():
    assert t.hiso_step(10.0) == 1.0 / 12.0
    # Tr A = 6, L = 3: 1 / (6 + 6)
    assert t.zo_sgd_step([3.0, 2.0, 1.0]) == 1.0 / 12.0
    with pytest.raises(ValueError):
        t.hiso_step(-1.0)


def test_zo_noise_injection_hand_values():
    a, h, eta = np.array([2.0, 1.0]), np.array([1.0, 2.0]), 0.5
    # function: eta^2 2 sigma^2 / (mu^2 h_i) with sigma/mu = 10
    np.testing.assert_allclose(t.zo_noise_injection(a, h, eta, "function", 1e-5, 1e-6),
                               [0.25 * 200.0 / 1.0, 0.25 * 200.0 / 2.0])
    # isotropic: eta^2 sigma^2 (Tr H^-1 + 2/h_i)/h_i, Tr H^-1 = 1.5
    np.testing.assert_allclose(t.zo_noise_injection(a, h, eta, "gradient_isotropic", 2.0, 1e-6),
                               [0.25 * 4 * 3.5, 0.25 * 4 * 2.5 / 2.0])
    # aligned: eta^2 sigma^2 (zeta + 2 a_i/h_i)/h_i, zeta = 2.5
    np.testing.assert_allclose(t.zo_noise_injection(a, h, eta, "gradient_aligned", 2.0, 1e-6),
                               [0.25 * 4 * 6.5, 0.25 * 4 * 3.5 / 2.0])
    assert not t.zo_noise_injection(a, h, eta, "none", 1.0, 1e-6).any()
    with pytest.raises(ValueError):
        t.zo_noise_injection(a, h, eta, "bogus", 1.0, 1e-6)


def test_expected_losses_noisy_reduces_to_the_noise_free_recursion():
    a = np.array([5.0, 1.0, 0.1])
    h = a + 0.01
    e0 = np.array([0.3, -0.5, 0.2])
    np.testing.assert_allclose(t.expected_losses_noisy(a, h, 0.2, e0**2, 30),
                               t.expected_losses_diagonal(a, h, 0.2, e0, 30), rtol=1e-14)


@pytest.mark.parametrize("kind", ["gradient_isotropic", "gradient_aligned", "function"])
def test_noisy_recursion_matches_monte_carlo_one_step(kind):
    """One whitened ZO step with noise, averaged over many draws, against the recursion."""
    rng = np.random.default_rng(0)
    a, h, eta, sigma, mu = np.array([3.0, 1.0, 0.2]), np.array([3.5, 1.2, 0.4]), 0.1, 0.7, 1e-2
    if kind == "function":
        sigma = 0.7 * mu
    e = np.array([0.5, -1.0, 2.0])
    n = 400_000
    z = rng.standard_normal((n, 3)) / np.sqrt(h)
    g = z @ (a * e)
    if kind == "gradient_isotropic":
        g += sigma * np.sum(rng.standard_normal((n, 3)) * z, axis=1)
    elif kind == "gradient_aligned":
        g += sigma * np.sum(rng.standard_normal((n, 3)) * np.sqrt(a) * z, axis=1)
    else:
        g += sigma * (rng.standard_normal(n) - rng.standard_normal(n)) / mu
    mc = np.mean((e - eta * g[:, None] * z) ** 2, axis=0)
    inject = t.zo_noise_injection(a, h, eta, kind, sigma, mu)
    # the recursion's one-step second moments (exact for a fixed e: E[u_j u_k u_i^2] = 0, j != k)
    b = a / h
    exact = (1 - 2 * eta * b + 2 * eta**2 * b**2) * e**2 + eta**2 / h * np.sum(a**2 * e**2 / h) + inject
    np.testing.assert_allclose(mc, exact, rtol=0.02)


def test_spectral_illustration_draws_medians_and_units():
    d = t.spectral_illustration_draws(draws=100, seed=3)
    m = t.spectral_illustration(draws=100, seed=3)
    for k in ("zeta", "L_kappa", "L_d"):
        assert np.median(d[k]) == pytest.approx(m[k], rel=1e-12)
    s = t.spectral_illustration_draws(draws=100, seed=3, scale=0.01)
    np.testing.assert_allclose(s["zeta"], d["zeta"], rtol=1e-10)  # scale-free
    np.testing.assert_allclose(s["L_kappa"], 0.01 * d["L_kappa"], rtol=1e-12)
    np.testing.assert_allclose(s["L_d"], 0.01 * d["L_d"], rtol=1e-12)
    assert np.median(s["L_kappa"]) < np.median(s["zeta"])  # the ordering depends on the units


def test_corollary3_terms_hand_values():
    t1, t2 = t.corollary3_terms(16.0, 4.0, [1, 4], [1, 1], 4.0)
    np.testing.assert_allclose(t1, [2.0, 1.0])
    np.testing.assert_allclose(t2, [1.0, 2.0])


def test_expected_rounds_to_matches_the_recursion():
    a = np.array([10.0, 1.0, 0.5])
    h = np.ones(3)
    s0 = np.full(3, 1.0 / 3.0)
    eta = t.zo_sgd_step(a)
    f = t.expected_losses_noisy(a, h, eta, s0, 2000)
    first = int(np.flatnonzero(f <= 1e-2 * f[0])[0])
    assert t.expected_rounds_to(a, h, eta, s0, 1e-2, 2000) == first
    assert t.expected_rounds_to(a, h, eta, s0, 1e-2, first - 1) == math.inf  # capped
    assert t.expected_rounds_to(a, h, 10.0, s0, 1e-2, 2000) == math.inf  # unstable step
