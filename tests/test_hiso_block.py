"""hiso_block (issue #15): the scalar-only invariants, the bytes, and its curvature estimator."""

import numpy as np
import pytest
import torch

from hiso import theory
from hiso.config import resolve
from hiso.directions import DirectionSampler
from hiso.errors import UserError
from hiso.optimizers.hiso_block import block_layout, block_sq_norms, fit_curvature
from hiso.protocol import catch_up
from hiso.zo import Perturbation, estimate, estimate_with_curvature, params_sha256

from helpers import config, federation

BLOCKS = {"kind": "blocks", "blocks": 8, "lo": 1.0, "hi": 100.0, "log_sd": 0.1}


def _block(**extra):
    cfg = config(**{"method.name": "hiso_block", "method.lr": 1e-3, "method.eps": 1e-2,
                    "task.spectrum": BLOCKS, **extra})
    if cfg["method"]["name"] != "hiso_block":
        del cfg["method"]["eps"]
    return cfg


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("extra", [{}, {"method.block_size": 16, "federation.local_steps": 1},
                                   {"method.block_size": 24, "method.window": 3}])
def test_catch_up_replay_rebuilds_server_state_bit_identical(extra):
    fed = federation(_block(**{"federation.rounds": 40, "federation.clients": 500, **extra}))
    snaps = {0: ([p.clone() for p in fed.params], [s.clone() for s in fed.state])}
    for r in range(40):
        fed.run_round(r)
        snaps[r + 1] = ([p.clone() for p in fed.params], [s.clone() for s in fed.state])
    # H really moved (else the test would not test the estimator's replay)
    assert not _equal(snaps[0][1][:1], snaps[40][1][:1])
    for synced, missed in [(0, 40), (5, 1), (7, 23)]:
        params = [p.clone() for p in snaps[synced][0]]
        state = [s.clone() for s in snaps[synced][1]]
        catch_up(fed.opt, params, state, fed.history.since(synced)[:missed], fed.tau, fed.P)
        assert _equal(params, snaps[synced + missed][0])
        assert _equal(state, snaps[synced + missed][1])


@pytest.mark.parametrize("extra", [{}, {"method.block_size": 16}])
def test_faithful_mode_equals_simulation_mode(extra):
    out = {}
    for mode in ("simulation", "faithful"):
        fed = federation(_block(**{"federation.mode": mode, "federation.clients": 7,
                                   "federation.sampled": 3, **extra}))
        for r in range(20):
            fed.run_round(r)
        out[mode] = (params_sha256(fed.params), params_sha256(fed.state), fed.ledger.bytes_up,
                     fed.ledger.bytes_down)
    assert out["simulation"] == out["faithful"]


@pytest.mark.parametrize("tau", [1, 3])
def test_without_curvature_update_it_is_central_decomfl_bit_for_bit(tau):
    out = {}
    for method, extra in (("decomfl", {"method.difference": "central"}),
                          ("hiso_block", {"method.curvature_update": False})):
        fed = federation(_block(**{"method.name": method, "federation.local_steps": tau, **extra}))
        for r in range(15):
            fed.run_round(r)
        out[method] = params_sha256(fed.params)
    assert out["decomfl"] == out["hiso_block"]
    # and the curvature update does change the trajectory
    fed = federation(_block(**{"federation.local_steps": tau}))
    for r in range(15):
        fed.run_round(r)
    assert params_sha256(fed.params) != out["decomfl"]


def test_uplink_carries_two_float32_scalars_per_perturbation():
    tau, P = 2, 3
    sizes = {}
    for method in ("decomfl", "hiso_block"):
        fed = federation(_block(**{"method.name": method, "method.difference": "central",
                                   "federation.local_steps": tau, "method.perturbations": P}))
        for r in range(3):
            res = fed.run_round(r)
        sizes[method] = set(fed.ledger.per_client_round("up").values())
        assert res.scalars.shape == (tau, P * fed.opt.scalars_per_perturbation)
    (dec,), (blk,) = sizes["decomfl"], sizes["hiso_block"]
    assert blk - dec == 4 * tau * P


def test_resume_replay_of_a_recorded_round_matches():
    a = federation(_block())
    b = federation(_block())
    for r in range(6):
        res = a.run_round(r)
        b.replay(r, res.round_seed, res.clients, res.scalars)
    assert _equal(a.params, b.params) and _equal(a.state, b.state)


def test_the_two_scalars_on_a_quadratic():
    fed = federation(_block(**{"task.heterogeneity": 0.0}))
    task, params = fed.task, fed.params
    H = [torch.rand_like(params[0]) + 0.5]
    batch = task.batch(0, 0, 0)
    seeds = [11, 12, 13]
    loss = lambda pert: task.loss(params, batch, pert)  # noqa: E731
    g, c, f0 = estimate_with_curvature(loss, seeds, 1e-3, fed.opt.sampler, H)
    g_central, _ = estimate(loss, seeds, 1e-3, fed.opt.sampler, H, "central")
    assert np.array_equal(g, g_central)  # the slope is DeComFL's central one, bit for bit
    for s, cv in zip(seeds, c):
        z = Perturbation(s, 1.0, fed.opt.sampler, H).direction(0, params[0]).double()
        zAz = float((task.lam64 * z * z).sum())
        assert cv == pytest.approx(zAz, rel=1e-5)  # the second difference of a quadratic is exact
    assert f0 == pytest.approx(task.loss(params, batch, None))


def test_block_layout_and_norms():
    params = [torch.zeros(10), torch.zeros(3, 4), torch.zeros(2)]
    lay = block_layout(params, 5)
    assert lay.sizes.tolist() == [5, 5, 5, 5, 2, 2] and lay.offsets == [0, 2, 5, 6]
    assert block_layout(params, None).sizes.tolist() == [10, 12, 2]
    seg = block_layout(params, None, [[3, 7], [12], [1, 1]])
    assert seg.sizes.tolist() == [3, 7, 12, 1, 1] and seg.offsets == [0, 2, 3, 5]
    with pytest.raises(ValueError):
        block_layout(params, None, [[3, 6], [12], [2]])
    u = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert block_sq_norms(u, [5, 5, 2]).tolist() == [30.0, 255.0, 221.0]
    assert block_sq_norms(u, [4, 4, 4]).tolist() == [14.0, 126.0, 366.0]
    assert block_sq_norms(u, [3, 9]).tolist() == [5.0, 501.0]
    assert block_sq_norms(u, [12]).tolist() == [506.0]


def test_fit_recovers_block_curvatures_from_exact_statistics():
    rng = np.random.default_rng(0)
    K, n = 6, 50
    sizes = np.full(K, float(n))
    a_true = theory.logspaced(K, 1.0, 1e3)
    a = np.ones(K)
    W = 5
    G, b, h = np.zeros((W, K, K)), np.zeros((W, K)), np.ones((W, K))
    for r in range(12):
        phi = rng.chisquare(n, size=(4, K))   # ||u_b||^2 of 4 Gaussian perturbations
        psi = phi / (a + 0.01)
        c = psi @ a_true                       # a block-constant quadratic: c is exact
        G[r % W], b[r % W], h[r % W] = psi.T @ psi, psi.T @ c, a + 0.01
        a = fit_curvature(a, sizes, G, b, h, min(r + 1, W), 1e-3, 10.0)
    assert np.max(np.abs(np.log(a / a_true))) < 1e-3


def test_fit_keeps_each_change_within_max_factor():
    K = 3
    G = np.eye(K)[None] * 1.0
    b = np.array([[1e6, 1e-6, 1.0]])
    a = fit_curvature(np.ones(K), np.ones(K), G, b, np.ones((1, K)), 1, 1e-9, 4.0)
    assert a.tolist() == pytest.approx([4.0, 0.25, 1.0])


@pytest.mark.parametrize("within_sd,tol,rho", [(0.1, 0.15, 0.99), (1.0, 0.6, 0.9)])
def test_learns_block_curvatures_on_a_block_quadratic(within_sd, tol, rho):
    # 10 blocks of 100 coordinates, levels 1..1e4; the control has a wide within-block spread
    spec = {"kind": "blocks", "blocks": 10, "lo": 1.0, "hi": 1e4, "log_sd": within_sd}
    fed = federation(_block(**{"task.dim": 1000, "task.spectrum": spec, "task.heterogeneity": 0.0,
                               "method.block_size": 100, "method.perturbations": 5,
                               "method.lr": 1e-5, "federation.local_steps": 1}))
    for r in range(60):
        fed.run_round(r)
    a = fed.opt.block_curvature(fed.state)
    true = fed.task.eigs.reshape(10, 100).mean(axis=1)
    assert np.max(np.abs(np.log(a / true))) < tol
    assert theory.spearman(a, true) >= rho
    # H holds a_b + eps on every coordinate of block b
    H = fed.opt.preconditioner(fed.state)[0].double().numpy().reshape(10, 100)
    assert np.allclose(H, (a + 1e-2)[:, None], rtol=1e-6)


@pytest.mark.parametrize("key,value,msg", [
    ("method.difference", "forward", "method.difference"),
    ("method.directions", "rademacher", "method.directions"),
    ("method.block_size", 0, "method.block_size"),
    ("method.max_factor", 1.0, "method.max_factor"),
])
def test_bad_keys_are_one_line_errors_naming_the_key(key, value, msg):
    with pytest.raises(UserError, match=msg.replace(".", r"\.")):
        resolve(_block(**{key: value}))


def test_too_many_blocks_is_refused():
    cfg = _block(**{"method.block_size": 1, "task.dim": 5000, "task.spectrum": {"kind": "constant"}})
    r = resolve(cfg)
    task = r.task_cls(r.task_cfg, 5, 0)
    with pytest.raises(UserError, match="method.block_size"):
        r.method_cls(r.method_cfg, DirectionSampler("gaussian"), task).init_state(task.init_params())


@pytest.mark.parametrize("method,extra,per_step", [
    ("decomfl", {}, 4), ("decomfl", {"method.difference": "central"}, 6),
    ("hiso_block", {}, 7)])
def test_forwards_per_step_counts_the_loss_evaluations(method, extra, per_step):
    fed = federation(_block(**{"method.name": method, "federation.local_steps": 2, **extra}))
    calls = []
    inner = fed.task.loss
    fed.task.loss = lambda *a, **k: calls.append(1) or inner(*a, **k)
    for r in range(3):
        fed.run_round(r)
    assert fed.opt.forwards_per_step() == per_step   # P = 3
    assert len(calls) == 3 * fed.fed.sampled * 2 * per_step


def test_digits_blocks_are_the_cnn_tensors(tmp_path):
    from hiso.runner import Run

    cfg = {"name": "t", "seed": 1, "task": {"name": "digits", "source": "sklearn_digits"},
           "method": {"name": "hiso_block", "lr": 1e-4, "mu": 1e-3, "perturbations": 2},
           "federation": {"clients": 64, "sampled": 4, "local_steps": 1, "rounds": 6},
           "eval": {"every": 3, "save_h": True}}
    s = Run(resolve(cfg), tmp_path / "r", progress=False).execute()
    assert s["status"] == "ok" and s["final_metrics"]["forwards"] == 6 * 4 * 5
    H = np.load(tmp_path / "r/H.npy")
    sizes = [72, 8, 1152, 16, 640, 10]
    parts = np.split(H, np.cumsum(sizes)[:-1])
    assert all(np.all(p == p[0]) for p in parts)      # one h per CNN tensor
    assert len({float(p[0]) for p in parts}) == 6      # six learned values
