"""The fast round update (rademacher_bits signs folded byte by byte, tensors on threads, the
one-step update slice by slice) gives the numbers of the plain one-direction-at-a-time,
one-tensor-at-a-time update, bit for bit; and a run's replay (export) equals its server
whichever path either took."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import hiso.optimizers.base as base
from hiso import export, zo
from hiso.config import resolve
from hiso.directions import DirectionSampler
from hiso.errors import UserError
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


def _rounds(name: str, kind: str, tau: int, threads: int, slow: bool, **method):
    """Hashes of params and state after 3 rounds; ``slow``: the plain update (no fused kernel,
    one direction at a time, tensors one after the other, whole tensors)."""
    from hiso import fused

    cfg = resolve({"name": "t", "task": {"name": "quadratic", "dim": 4},
                   "method": {"name": name, "lr": 1e-3, "perturbations": 5, "directions": kind,
                              **method}}).method_cfg
    opt = SCALAR_METHODS[name](cfg, DirectionSampler(kind))
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    state = opt.init_state(params)
    rng = np.random.default_rng(1)
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp, fused.disabled() if slow else contextlib.nullcontext():
        if slow:
            mp.setattr(base, "combine", combine_loop)
            mp.setattr(base, "each_tensor", lambda ps, fn, smp: [fn(i, smp) for i in range(len(ps))])
            mp.setattr(base, "UPDATE_SLICE", 1 << 62)  # whole tensors after combine
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
    return params_sha256(params), params_sha256(state) if state else None


@pytest.mark.parametrize("kind", ["gaussian", "rademacher_bits"])
@pytest.mark.parametrize("name,tau,method", [
    ("decomfl", 1, {}), ("hiso", 1, {}), ("hiso", 2, {"h_source": "round_sum"}),
    ("hiso", 1, {"h_source": "round_sum"}), ("hiso", 1, {"h_source": "every_step", "weight_decay": 5e-4}),
    ("hiso", 2, {"h_source": "every_step", "weight_decay": 5e-4}), ("zo_momentum", 1, {}),
    ("hiso_scalar", 1, {})])  # its H update is a mean over the whole tensor: never sliced
def test_fast_update_equals_the_plain_update(kind, name, tau, method, monkeypatch):
    plain = _rounds(name, kind, tau, 1, True, **method)
    assert _rounds(name, kind, tau, 2, False, **method) == plain
    assert _rounds(name, kind, tau, 1, False, **method) == plain


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


# -- the fused kernel (hiso.fused, optional numba) ------------------------------------------------

@pytest.fixture
def fused_on(monkeypatch):
    pytest.importorskip("numba")
    from hiso import fused

    monkeypatch.setenv("HISO_FUSED", "1")  # every one-step update, not only replays
    return fused, _count_fused_calls(monkeypatch)


def _count_fused_calls(monkeypatch) -> list[int]:
    """The tensor index of every fused update from now on (its first-use check starts afresh)."""
    from hiso import fused

    monkeypatch.setitem(fused._state, "ok", None)
    calls = []
    real = fused.update
    monkeypatch.setattr(fused, "update", lambda *a, **k: (calls.append(a[2]), real(*a, **k)))
    return calls


@pytest.mark.parametrize("name,method", [
    ("decomfl", {}), ("hiso", {}), ("hiso", {"h_source": "every_step", "weight_decay": 5e-4}),
    ("hiso", {"h_convention": "nu_on_new", "nu": 0.3, "eps": 1e-3}), ("mezo", {"weight_decay": 1e-2})])
def test_the_fused_kernel_runs_and_gives_the_plain_updates_bits(name, method, fused_on, monkeypatch):
    fused, calls = fused_on
    plain = _rounds(name, "rademacher_bits", 1, 1, True, **method)
    assert not calls  # the plain path never reaches the fused kernel
    assert fused.enabled()
    got = _rounds(name, "rademacher_bits", 1, 2, False, **method)
    assert len(calls) == 3 * len(SHAPES) and sorted(set(calls)) == list(range(len(SHAPES)))
    assert got == plain
    calls.clear()
    with fused.disabled():
        assert _rounds(name, "rademacher_bits", 1, 2, False, **method) == plain
    assert not calls


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_a_fused_local_step_with_a_fixed_h_gives_the_torch_paths_bits(weight_decay, fused_on):
    fused, calls = fused_on
    cfg = resolve({"name": "t", "task": {"name": "quadratic", "dim": 4},
                   "method": {"name": "hiso", "lr": 1e-2, "directions": "rademacher_bits",
                              "weight_decay": weight_decay}}).method_cfg
    opt = SCALAR_METHODS["hiso"](cfg, DirectionSampler("rademacher_bits"))
    g = torch.Generator().manual_seed(3)
    out = []
    for ctx in (fused.disabled(), contextlib.nullcontext()):
        params = [torch.randn(s, generator=g.manual_seed(3)) for s in SHAPES]
        state = [torch.rand(s, generator=g) + 0.1 for s in SHAPES]
        h0 = [h.clone() for h in state]
        with ctx:
            opt.local_step(params, state, step_seeds(round_seed(1, 0), 1, 5)[0],
                           np.array([3.0, -1.0, 0.5, 2.0, -7.0], np.float32))
        assert all(torch.equal(a, b) for a, b in zip(state, h0))  # a client's step leaves H
        out.append(params_sha256(params))
    assert len(calls) == len(SHAPES) and out[0] == out[1]


def test_the_fused_kernel_is_not_used_where_it_does_not_apply(fused_on, monkeypatch):
    fused, calls = fused_on
    _rounds("hiso", "gaussian", 1, 1, False)               # Gaussian directions
    assert not calls
    # tau > 1: the round update (tau steps) takes the torch path; a client's own local step
    # (one step, H fixed) is fused
    _rounds("hiso", "rademacher_bits", 2, 1, False)
    assert len(calls) == 3 * len(SHAPES)
    calls.clear()
    _rounds("hiso_scalar", "rademacher_bits", 1, 1, False)  # H update over a tensor
    _rounds("zo_momentum", "rademacher_bits", 1, 1, False)  # its own state
    assert not calls
    monkeypatch.setenv("HISO_FUSED", "0")
    _rounds("decomfl", "rademacher_bits", 1, 1, False)
    assert not calls
    monkeypatch.setenv("HISO_FUSED", "yes")
    with pytest.raises(UserError, match="HISO_FUSED: expected 0, 1 or replay, got 'yes'"):
        _rounds("decomfl", "rademacher_bits", 1, 1, False)


def test_the_self_check_catches_a_kernel_that_rounds_differently(fused_on, monkeypatch):
    """A kernel computing x - lr * step with two roundings (no FMA), as torch does on a CPU
    without FMA: the first-use check sees it, and the fused path stays off (warning)."""
    fused, calls = fused_on
    assert fused._agrees()

    def unfused(W, c, x, h, mode, neg_lr, wd, w_old, w_new, eps):
        n = x.shape[0]
        bits = (W.view(np.uint8)[:, : (n + 7) // 8, None] >> np.arange(8, dtype=np.uint8)) & 1
        u = (1 - 2 * bits.reshape(W.shape[0], -1)[:, :n].astype(np.float32))
        acc = u[0] * c[0]
        for j in range(1, len(c)):
            acc = acc + u[j] * c[j]
        step = acc if mode == 0 else acc * (np.float32(1) / np.sqrt(h))
        if wd != 0:
            step = step + wd * x
        x[:] = x + neg_lr * step  # two roundings
        if mode == 2:
            h[:] = h * w_old + w_new * (step * step + eps)

    monkeypatch.setitem(fused._state, "kernel", unfused)
    assert not fused._agrees()
    with pytest.warns(RuntimeWarning, match="does not reproduce torch"):
        assert not fused.enabled()
    plain = _rounds("hiso", "rademacher_bits", 1, 1, True)
    assert _rounds("hiso", "rademacher_bits", 1, 1, False) == plain
    assert not calls


def test_the_fused_kernel_runs_in_replays_and_not_in_the_live_server(tmp_path, monkeypatch):
    """By default only replays (catch-up, resume, export) take the fused path: a live run
    never loads it (its one update per round is not worth numba's memory), its export does,
    and lands on the run's hash."""
    pytest.importorskip("numba")
    monkeypatch.delenv("HISO_FUSED", raising=False)
    calls = _count_fused_calls(monkeypatch)
    cfg = {"name": "t", "seed": 0, "task": {"name": "quadratic", "dim": 300},
           "method": {"name": "hiso", "lr": 1e-3, "perturbations": 5, "directions": "rademacher_bits"},
           "federation": {"clients": 4, "sampled": 2, "rounds": 12}, "eval": {"every": 6}}
    for mode in ("simulation", "faithful"):
        cfg["federation"]["mode"] = mode
        s = Run(resolve(cfg), tmp_path / mode, progress=False).execute()
        # faithful clients catch up on the rounds they missed: replays; the server: live
        assert (len(calls) > 0) == (mode == "faithful"), mode
        calls.clear()
        _, params = export.rebuild(export.read_source(tmp_path / mode))
        assert len(calls) == 12 and params_sha256(params) == s["params_sha256"]
        calls.clear()


def test_without_numba_the_torch_path_runs(monkeypatch):
    import sys
    from hiso import fused

    monkeypatch.setenv("HISO_FUSED", "1")
    monkeypatch.setitem(fused._state, "ok", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    assert not fused.enabled()
    plain = _rounds("hiso", "rademacher_bits", 1, 1, True)
    assert _rounds("hiso", "rademacher_bits", 1, 2, False) == plain
