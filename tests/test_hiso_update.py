"""HiSo's H update for tau > 1 (``method.h_source``) and weight decay, against hand-computed
two-round examples: d = 2, P = 1, tau = 2, lr = 1, nu = 0.5, eps = 0, fixed directions and
scalars (a fake sampler), so every number below can be checked with pencil and paper."""

import numpy as np
import pytest
import torch

from hiso.config import resolve
from hiso.directions import DirectionSampler
from hiso.optimizers.hiso import HiSo, HiSoConfig
from hiso.protocol import VectorFederation
from hiso.optimizers.zo_sgd import ZOSGD
from hiso.optimizers.base import ZOConfig
from hiso.zo import params_sha256

from helpers import config, federation


class FixedDirections:
    """u(seed) from a table: the directions of the hand-computed examples."""

    U = {10: [1.0, 2.0], 11: [2.0, 0.0], 20: [1.0, 1.0], 21: [0.0, 2.0]}

    def sample(self, seed, index, like, out=None):
        u = torch.tensor(self.U[seed], dtype=torch.float32)
        return u if out is None else out.copy_(u)


# round 0: steps (seed 10, g = 1) and (seed 11, g = 1); round 1: (20, g = 2) and (21, g = 1)
ROUNDS = [([[10], [11]], np.array([[1.0], [1.0]], np.float32)),
          ([[20], [21]], np.array([[2.0], [1.0]], np.float32))]
S = np.sqrt

# Round 0 (H_0 = 1): Delta_1 = [1, 2], Delta_2 = [2, 0]; x = 0 - [1, 2] - [2, 0] = [-3, -2] for all.
EXPECTED = {
    # H_1 = .5 [1, 1] + .5 [2, 0]^2 = [2.5, .5]
    # round 1: Delta_1 = 2 [1, 1] / sqrt(H_1), Delta_2 = [0, 2] / sqrt(H_1); H_2 = .5 H_1 + .5 Delta_2^2
    "last_step": {"H1": [2.5, 0.5],
                  "x2": [-3 - 2 / S(2.5), -2 - 2 / S(0.5) - 2 / S(0.5)],
                  "H2": [1.25, 0.25 + 0.5 * 4 / 0.5]},
    # H_1 = .5 + .5 ([1, 2] + [2, 0])^2 = [5, 2.5]
    # round 1: Delta_1 = 2 [1, 1] / sqrt(H_1), Delta_2 = [0, 2] / sqrt(H_1)
    "round_sum": {"H1": [5.0, 2.5],
                  "x2": [-3 - 2 / S(5), -2 - 2 / S(2.5) - 2 / S(2.5)],
                  "H2": [2.5 + 0.5 * 4 / 5, 1.25 + 0.5 * (2 / S(2.5) + 2 / S(2.5)) ** 2]},
    # round 0: H' = .5 + .5 [1, 2]^2 = [1, 2.5]; Delta_2 rebuilt with H' = [2, 0] / sqrt(H') = [2, 0];
    # H_1 = .5 H' + .5 [4, 0] = [2.5, 1.25]. Round 1: the model steps use H_1:
    # x_2 = [-3, -2] - 2 [1, 1] / sqrt(H_1) - [0, 2] / sqrt(H_1); H'' = .5 H_1 + .5 (2 / sqrt(H_1))^2
    # = [2.05, 2.225]; Delta_2 rebuilt with H'': [0, 2 / sqrt(2.225)]; H_2 = .5 H'' + .5 [0, 4 / 2.225]
    "every_step": {"H1": [2.5, 1.25],
                   "x2": [-3 - 2 / S(2.5), -2 - 2 / S(1.25) - 2 / S(1.25)],
                   "H2": [1.025, 1.1125 + 0.5 * 4 / 2.225]},
}


def hiso(h_source, lr=1.0, **kw):
    cfg = HiSoConfig(lr=lr, perturbations=1, nu=0.5, eps=0.0, h_source=h_source, **kw)
    return HiSo(cfg, FixedDirections())


@pytest.mark.parametrize("h_source", sorted(EXPECTED))
def test_two_rounds_of_tau_2_match_the_hand_computed_example(h_source):
    opt, want = hiso(h_source), EXPECTED[h_source]
    x = [torch.zeros(2)]
    H = opt.init_state(x)
    opt.round_update(x, H, *ROUNDS[0])
    assert x[0].tolist() == [-3.0, -2.0]  # exact: H_0 = 1
    assert H[0].tolist() == pytest.approx(want["H1"], rel=1e-6)
    opt.round_update(x, H, *ROUNDS[1])
    assert x[0].tolist() == pytest.approx(want["x2"], rel=1e-6)
    assert H[0].tolist() == pytest.approx(want["H2"], rel=1e-6)


def test_the_three_sources_coincide_at_tau_1():
    finals = {}
    for source in EXPECTED:
        opt = hiso(source)
        x = [torch.zeros(2)]
        H = opt.init_state(x)
        for seeds, g in ROUNDS:
            for k in range(2):  # the same four steps, one per round
                opt.round_update(x, H, [seeds[k]], g[k : k + 1])
        finals[source] = (x[0].tolist(), H[0].tolist())
    assert finals["last_step"] == finals["round_sum"] == finals["every_step"]


@pytest.mark.parametrize("h_source", sorted(EXPECTED))
def test_a_client_local_step_keeps_h_fixed(h_source):
    # the authors' clients hold H fixed during their local steps; only the round update moves it
    opt = hiso(h_source)
    x = [torch.zeros(2)]
    H = [torch.tensor([4.0, 0.25])]
    opt.local_step(x, H, [10], np.array([1.0], np.float32))
    assert H[0].tolist() == [4.0, 0.25]
    assert x[0].tolist() == [-0.5, -4.0]  # -[1, 2] / sqrt([4, .25])


def test_weight_decay_is_sgd_style_and_stays_out_of_h():
    # x <- x - lr (Delta + wd x), lr = .5, wd = .1, x_0 = [1, -2]:
    # step 1: [1, -2] - .5 ([1, 2] + .1 [1, -2]) = [.45, -2.9]
    # step 2: [.45, -2.9] - .5 ([2, 0] + .1 [.45, -2.9]) = [-.5725, -2.755]
    sgd = ZOSGD(ZOConfig(lr=0.5, perturbations=1, weight_decay=0.1), FixedDirections())
    x = [torch.tensor([1.0, -2.0])]
    sgd.round_update(x, [], *ROUNDS[0])
    assert x[0].tolist() == pytest.approx([-0.5725, -2.755], rel=1e-6)
    # HiSo at H_0 = 1 takes the same steps; H sees the ZO direction only: [2.5, .5] as without decay
    opt = hiso("last_step", lr=0.5, weight_decay=0.1)
    x = [torch.tensor([1.0, -2.0])]
    H = opt.init_state(x)
    opt.round_update(x, H, *ROUNDS[0])
    assert x[0].tolist() == pytest.approx([-0.5725, -2.755], rel=1e-6)
    assert H[0].tolist() == [2.5, 0.5]


def test_first_order_baselines_decay_their_local_sgd_steps():
    from hiso.baselines import VECTOR_METHODS

    class Linear:  # loss = g . x with a fixed gradient g = [1, 2]
        def loss_and_grad(self, params, batch):
            return 0.0, [torch.tensor([1.0, 2.0])]

    for name in ("fedavg", "fedadam"):
        cls = VECTOR_METHODS[name]
        x = [torch.tensor([1.0, -2.0])]
        cls(cls.Config(lr=0.5, weight_decay=0.1), None).local_step(Linear(), x, None, seed=0)
        assert x[0].tolist() == pytest.approx([0.45, -2.9], rel=1e-6)  # as the ZO example's step 1


# Parameter hashes recorded at commit dff7110, before h_source and weight_decay existed (quadratic
# of tests/helpers, 8 rounds; HiSo at tau = 3 with that commit's tau > 1 default, now round_sum):
# weight_decay = 0 (the default) must leave every number as it was.
BEFORE = {
    ("decomfl", 3, ()): "863bae04cdb04bca1a24fc34213a7ff70f24a82f9ef3f7fbb783fe59cfb8a300",
    ("hiso", 3, (("method.nu", 0.9), ("method.h_source", "round_sum"))):
        "c401494084335456a224be8a2311e6c25a0cdee021ef949392eb65ea9fc28df9",
    ("hiso", 1, (("method.nu", 0.9),)): "ba4a367e7dc0753ee04befc37ac39a37339dee3b1d09a6c6407a5e9aa2f1d2d0",
    ("zo_momentum", 2, ()): "dd50687b0387a05375e7d071555771a39460b12c0358ddf5c498ae452fc80e69",
    ("fedzo", 2, ()): "e89539983198869eea6de7a8d3fe7502247505db950bcd407659ff77ecaa1d70",
}


@pytest.mark.parametrize("key", list(BEFORE), ids=lambda k: f"{k[0]}-tau{k[1]}")
def test_weight_decay_zero_leaves_the_earlier_numbers_unchanged(key):
    name, tau, extra = key
    cfg = config(**{"method.name": name, "federation.local_steps": tau, **dict(extra)})
    if name == "fedzo":  # a full-vector method: the other federation
        r = resolve(cfg)
        task = r.task_cls(r.task_cfg, r.run.federation.clients, r.run.seed)
        fed = VectorFederation(task, r.method_cls(r.method_cfg, DirectionSampler("gaussian")),
                               r.run.federation, r.run.seed)
    else:
        fed = federation(cfg)
    for r in range(8):
        fed.run_round(r)
    assert params_sha256(fed.params) == BEFORE[key]
