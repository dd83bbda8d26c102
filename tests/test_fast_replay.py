"""The fast round update (rademacher_bits signs folded byte by byte, tensors on threads, the
one-step update slice by slice) gives the numbers of the plain one-direction-at-a-time,
one-tensor-at-a-time update, bit for bit; and a run's replay (export) equals its server
whichever path either took."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hiso.optimizers.base as base
from hiso import export, zo
from hiso.config import resolve
from hiso.directions import DirectionSampler
from hiso.optimizers import SCALAR_METHODS
from hiso.protocol import round_seed, step_seeds
from hiso.runner import Run
from hiso.zo import combine, combine_loop, params_sha256

# odd sizes (scalar tails of the vector kernels), > torch's parallel grain, > the threading floor
SHAPES = [(801, 1001), (300_001,), (17,), (3, 5, 7)]


@pytest.mark.parametrize("P", [1, 2, 5, 8, 12])
def test_combine_signs_equals_the_sequential_float32_sum(P):
    s = DirectionSampler("rademacher_bits")
    rng = np.random.default_rng(P)
    for shape in [(1,), (63,), (65,), (1000, 77), (300_001,), (2_100_001,)]:
        like = torch.empty(shape)
        seeds = [int(x) for x in rng.integers(0, 2**62, P)]
        # coefficients of very different magnitudes: every addition rounds
        coefs = [float(c) for c in rng.standard_normal(P) * 10.0 ** rng.integers(-6, 6, P)]
        want = combine_loop(s, seeds, coefs, 3, like)
        got = combine(s, seeds, coefs, 3, like)
        assert got.shape == want.shape and torch.equal(got, want)


def _rounds(name: str, kind: str, tau: int, threads: int, slow: bool, monkeypatch, **method):
    cfg = resolve({"name": "t", "task": {"name": "quadratic", "dim": 4},
                   "method": {"name": name, "lr": 1e-3, "perturbations": 5, "directions": kind,
                              **method}}).method_cfg
    opt = SCALAR_METHODS[name](cfg, DirectionSampler(kind))
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    state = opt.init_state(params)
    rng = np.random.default_rng(1)
    if slow:
        monkeypatch.setattr(base, "combine", combine_loop)
        monkeypatch.setattr(base, "each_tensor", lambda ps, fn, smp: [fn(i, smp) for i in range(len(ps))])
        monkeypatch.setattr(base, "UPDATE_SLICE", 1 << 62)  # whole tensors after combine
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for r in range(3):
            seeds = step_seeds(round_seed(5, r), tau, 5)
            scalars = (rng.standard_normal((tau, 5)) * 10).astype(np.float32)
            if tau > 1:
                opt.local_step(params, state, seeds[0], scalars[0])
            opt.round_update(params, state, seeds, scalars)
    finally:
        torch.set_num_threads(before)
        monkeypatch.undo()
    return params_sha256(params), params_sha256(state) if state else None


@pytest.mark.parametrize("kind", ["gaussian", "rademacher_bits"])
@pytest.mark.parametrize("name,tau,method", [
    ("decomfl", 1, {}), ("hiso", 1, {}), ("hiso", 2, {"h_source": "round_sum"}),
    ("hiso", 1, {"h_source": "round_sum"}), ("hiso", 1, {"h_source": "every_step", "weight_decay": 5e-4}),
    ("hiso", 2, {"h_source": "every_step", "weight_decay": 5e-4}), ("zo_momentum", 1, {}),
    ("hiso_scalar", 1, {})])  # its H update is a mean over the whole tensor: never sliced
def test_fast_update_equals_the_plain_update(kind, name, tau, method, monkeypatch):
    plain = _rounds(name, kind, tau, 1, True, monkeypatch, **method)
    assert _rounds(name, kind, tau, 2, False, monkeypatch, **method) == plain
    assert _rounds(name, kind, tau, 1, False, monkeypatch, **method) == plain


@pytest.mark.parametrize("kind", ["gaussian", "rademacher_bits"])
@pytest.mark.parametrize("name", ["hiso", "decomfl"])
def test_replay_equals_the_server_on_a_many_tensor_model(kind, name, tmp_path, monkeypatch):
    """A tiny OPT (22 tensors), tensors on 2 threads (the floor lowered to reach them), server
    vs its replay by export; and the same run without threads ends on the same hash."""
    from hiso import models

    model = models.build_tiny(tmp_path / "tiny", "synthetic", hidden=16, layers=1, ffn=32, max_pos=32)
    cfg = {"name": "t", "seed": 0,
           "task": {"name": "lm", "model": str(model), "dataset": "synthetic", "n_train": 60,
                    "n_dev": 0, "n_eval": 20, "batch_size": 8, "max_length": 32},
           "method": {"name": name, "lr": 0.01, "perturbations": 5, "directions": kind},
           "federation": {"clients": 4, "sampled": 2, "rounds": 6},
           "eval": {"every": 6}, "runtime": {"threads": 2}}
    monkeypatch.setattr(zo, "PARALLEL_MIN_NUMEL", 0)
    threaded = Run(resolve(cfg), tmp_path / "a", progress=False).execute()
    _, params = export.rebuild(export.read_source(tmp_path / "a"))
    assert params_sha256(params) == threaded["params_sha256"]
    monkeypatch.setattr(zo, "PARALLEL_MIN_NUMEL", 1 << 62)
    serial = Run(resolve(cfg), tmp_path / "b", progress=False).execute()
    assert serial["params_sha256"] == threaded["params_sha256"]
