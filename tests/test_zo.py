import numpy as np
import torch

from hiso.directions import DirectionSampler
from hiso.zo import PerturbBuffer, Perturbation, estimate, perturb_inplace


def test_inplace_perturb_restores_exactly_after_many_cycles():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(300, generator=g) * 10, torch.randn(7, 5, generator=g)]
    start = [p.clone() for p in params]
    sampler, buf = DirectionSampler(), PerturbBuffer()
    H = [torch.rand(300, generator=g) + 0.1, torch.rand(7, 5, generator=g) + 0.1]
    for s in range(1000):
        with perturb_inplace(params, Perturbation(s, 1e-3 * (-1) ** s, sampler, H), buf):
            assert not torch.equal(params[0], start[0])
    assert all(torch.equal(p, q) for p, q in zip(params, start))


def test_naive_add_subtract_would_drift():
    # the reason for the copy restore: x + mu z - mu z != x in float32
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    sampler = DirectionSampler()
    for s in range(100):
        z = sampler.sample(s, 0, y)
        y.add_(z, alpha=1e-3).sub_(z, alpha=1e-3)
    assert not torch.equal(x, y)


def test_estimate_matches_directional_derivative():
    A = torch.linspace(1, 5, 50)
    x = torch.ones(50)
    sampler = DirectionSampler()

    def loss(pert):
        y = x.double() if pert is None else x.double() + pert.delta(0, x).double()
        return float(0.5 * (A.double() * y * y).sum())

    for diff in ("forward", "central"):
        g, f0 = estimate(loss, [11, 12, 13], 1e-5, sampler, None, diff)
        assert g.dtype == np.float32
        for s, gs in zip([11, 12, 13], g):
            exact = float((A * x * sampler.sample(s, 0, x)).sum())
            assert abs(gs - exact) < 1e-3 * max(1.0, abs(exact))
    assert abs(f0 - float(0.5 * A.sum())) < 1e-3
