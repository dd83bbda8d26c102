"""The scalar-only protocol's exactness claims, measured bit for bit."""

import numpy as np
import pytest
import torch

from hiso.directions import DirectionSampler
from hiso.protocol import History, aggregate, catch_up, sample_clients
from hiso.zo import params_sha256

from helpers import config, federation


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method,extra", [
    ("hiso", {}),
    ("hiso", {"method.h_source": "every_step", "method.nu": 0.9}),
    ("hiso", {"method.h_source": "round_sum", "method.weight_decay": 0.05}),
    ("zo_momentum", {"method.beta": 0.9}),
    ("zo_momentum", {"method.beta": 0.9, "method.weight_decay": 0.05}),
])
def test_client_missing_up_to_50_rounds_rebuilds_server_state_bit_identical(method, extra):
    # many clients, so the server's history is never pruned during the test
    fed = federation(config(**{"method.name": method, "federation.rounds": 60,
                               "federation.clients": 500, **extra}))
    snapshots = {0: ([p.clone() for p in fed.params], [s.clone() for s in fed.state])}
    for r in range(60):
        fed.run_round(r)
        snapshots[r + 1] = ([p.clone() for p in fed.params], [s.clone() for s in fed.state])
    assert not _equal(snapshots[0][1], snapshots[60][1]) or method == "hiso_oracle"
    for synced, missed in [(0, 50), (10, 1), (7, 33), (60 - 50, 50)]:
        params = [p.clone() for p in snapshots[synced][0]]
        state = [s.clone() for s in snapshots[synced][1]]
        catch_up(fed.opt, params, state, fed.history.since(synced)[:missed], fed.tau, fed.P)
        assert _equal(params, snapshots[synced + missed][0])
        assert _equal(state, snapshots[synced + missed][1])


@pytest.mark.parametrize("method,extra", [
    ("hiso", {}), ("zo_momentum", {}), ("decomfl", {}), ("hiso_oracle", {}),
    ("hiso", {"method.h_source": "every_step"}), ("hiso", {"method.h_source": "round_sum"}),
    ("hiso", {"method.weight_decay": 0.05}), ("decomfl", {"method.weight_decay": 0.05}),
])
def test_faithful_mode_equals_simulation_mode(method, extra):
    hashes = {}
    for mode in ("simulation", "faithful"):
        fed = federation(config(**{"method.name": method, "federation.mode": mode,
                                   "federation.clients": 7, "federation.sampled": 3, **extra}))
        for r in range(25):
            fed.run_round(r)
        hashes[mode] = (params_sha256(fed.params), fed.ledger.bytes_up, fed.ledger.bytes_down)
        if mode == "faithful":
            # every client that took part holds a genuine, separately replayed state
            assert 0 < len(fed.clients) <= 7
    assert hashes["simulation"] == hashes["faithful"]


def test_faithful_clients_really_catch_up_by_replay():
    fed = federation(config(**{"federation.mode": "faithful", "federation.clients": 6,
                               "federation.sampled": 1, "method.name": "hiso"}))
    for r in range(30):
        fed.run_round(r)
    # a client's held state is the start of the last round it took part in; replaying the
    # rest of the history from there lands on the server's state exactly
    for c, cs in fed.clients.items():
        assert cs.synced == fed.last_sync[c]
        params = [p.clone() for p in cs.params]
        state = [s.clone() for s in cs.state]
        catch_up(fed.opt, params, state, fed.history.since(cs.synced), fed.tau, fed.P)
        assert _equal(params, fed.params) and _equal(state, fed.state)


@pytest.mark.parametrize("tau,h_source", [(1, "last_step"), (3, "last_step"), (3, "round_sum"),
                                          (3, "every_step")])
def test_hiso_with_h_fixed_at_ones_is_decomfl_bit_for_bit(tau, h_source):
    out = {}
    for method, extra in (("decomfl", {}), ("hiso", {"method.nu": 1.0, "method.h_source": h_source})):
        fed = federation(config(**{"method.name": method, "federation.local_steps": tau, **extra}))
        for r in range(15):
            fed.run_round(r)
        out[method] = params_sha256(fed.params)
    assert out["decomfl"] == out["hiso"]


def test_zo_momentum_with_beta_zero_is_decomfl():
    out = {}
    for method, extra in (("decomfl", {}), ("zo_momentum", {"method.beta": 0.0})):
        fed = federation(config(**{"method.name": method, "federation.local_steps": 1, **extra}))
        for r in range(10):
            fed.run_round(r)
        out[method] = params_sha256(fed.params)
    assert out["decomfl"] == out["zo_momentum"]


def test_uplink_bytes_per_client_per_round_are_scalar_sized():
    tau, P = 3, 4
    fed = federation(config(**{"federation.local_steps": tau, "method.perturbations": P}))
    for r in range(5):
        fed.run_round(r)
    ups = fed.ledger.per_client_round("up")
    assert len(ups) == 5 * 2
    assert all(n <= 4 * tau * P + 16 for n in ups.values())
    assert all(n >= 4 * tau * P for n in ups.values())
    # downlink grows with the rounds a client missed: 8 + 4 tau P bytes per missed round
    downs = fed.ledger.per_client_round("down")
    for (r, c), n in downs.items():
        assert n >= 20


def test_history_fetch_since_and_prune():
    h = History()
    for r in range(5):
        h.add(r, 100 + r, np.full((1, 2), r, np.float32))
    assert [s for s, _ in h.since(3)] == [103, 104]
    h.prune_before(3)
    assert len(h) == 2 and h.first == 3
    with pytest.raises(ValueError):
        h.since(2)
    with pytest.raises(ValueError):
        h.add(7, 0, np.zeros((1, 2), np.float32))


def test_history_is_pruned_once_every_client_has_synced():
    fed = federation(config(**{"federation.clients": 3, "federation.sampled": 3}))
    for r in range(6):
        fed.run_round(r)
    assert fed.history.first == 5 and len(fed.history) == 1


def test_sampling_is_deterministic_distinct_and_sorted():
    a = sample_clients(1, 4, 10_000, 5)
    assert a == sample_clients(1, 4, 10_000, 5) and a == sorted(set(a)) and len(a) == 5
    assert a != sample_clients(1, 5, 10_000, 5)


def test_weighted_aggregation():
    v = [np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 6.0]], np.float32)]
    assert aggregate(v, None).tolist() == [[2.0, 4.0]]
    assert aggregate(v, [3.0, 1.0]).tolist() == [[1.5, 3.0]]
