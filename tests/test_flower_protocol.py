"""The client half of the protocol that the Flower backend runs on each node (no Flower needed):
a ZOClient answering the server's downlinks keeps the server's state bit for bit."""

from __future__ import annotations

import pytest
import torch

from hiso.messages import ScalarUpload, ZODownlink
from hiso.protocol import ClientState, ZOClient, catch_up, round_seed

from helpers import config, federation


def _clone(ts):
    return [t.clone() for t in ts]


@pytest.mark.parametrize("tau", [1, 3])
def test_zo_client_answers_like_the_in_process_client_and_skips_what_it_holds(tau):
    # more clients than rounds: the history is never pruned during the test
    fed = federation(config(**{"federation.clients": 40, "federation.sampled": 1,
                               "federation.local_steps": tau}))
    for r in range(12):
        fed.run_round(r)
    rseed_next = round_seed(fed.seed, 12)
    # a client last synced at round 4 catches up rounds 4..11, then answers round 12
    held = ClientState(*_start_of(fed, 4), 4)
    client = ZOClient(fed.task, fed.opt, 0, fed.tau, fed.P, held)
    down = ZODownlink(12, rseed_next, 4, fed.history.since(4)).encode()
    up, loss = client.respond(down)
    assert client.held.synced == 12
    assert all(torch.equal(a, b) for a, b in zip(client.held.params, fed.params))
    assert all(torch.equal(a, b) for a, b in zip(client.held.state, fed.state))
    # the same downlink once more (its reply was lost): nothing replayed twice, same answer
    up2, loss2 = client.respond(down)
    assert up2 == up and loss2 == loss
    assert ScalarUpload.decode(up).scalars.shape == (tau, fed.P)
    # a downlink that starts before the client's round: the rounds it holds are skipped
    again = ZOClient(fed.task, fed.opt, 0, fed.tau, fed.P, ClientState(*_start_of(fed, 8), 8))
    assert again.respond(ZODownlink(12, rseed_next, 4, fed.history.since(4)).encode())[0] == up


def test_zo_client_refuses_a_downlink_it_cannot_follow():
    fed = federation(config(**{"federation.clients": 40, "federation.sampled": 1}))
    for r in range(6):
        fed.run_round(r)
    lost = ZOClient(fed.task, fed.opt, 0, fed.tau, fed.P)  # fresh: holds round 0
    with pytest.raises(ValueError, match="holds round 0"):
        lost.respond(ZODownlink(6, round_seed(fed.seed, 6), 3, fed.history.since(3)).encode())
    ahead = ZOClient(fed.task, fed.opt, 0, fed.tau, fed.P, ClientState(*_start_of(fed, 0), 9))
    with pytest.raises(ValueError, match="holds round 9"):
        ahead.respond(ZODownlink(6, round_seed(fed.seed, 6), 3, fed.history.since(3)).encode())


def _start_of(fed, r):
    """(params, state) at the start of round r, rebuilt from x_0 by the server's own replay."""
    params = fed.task.init_params()
    state = fed.opt.init_state(params)
    catch_up(fed.opt, params, state, fed.history.since(0)[:r], fed.tau, fed.P)
    return params, state
