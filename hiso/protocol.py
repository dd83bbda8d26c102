"""The federated protocol: rounds, client sampling, seeds, aggregation, history, catch-up.

It drives any optimiser through the same rounds and counts every message in the ledger:

* :class:`ZOFederation` for scalar-only methods. Clients receive the round's seed plus the
  (seed, averaged scalars) of every round they missed, catch up by replay, run tau local steps,
  upload tau*P float32 scalars (tau*P*S for a method that sends S scalars per perturbation, e.g.
  ``hiso_block``'s slope and curvature), and reset to the round-start state. Two execution modes give
  identical results: ``simulation`` keeps O(1) model copies whatever the number of clients (a
  sampled client's caught-up state *is* the server's state, so it is copied, not replayed), and
  ``faithful`` gives each client its own state and last-sync round and makes it replay.
* :class:`VectorFederation` for the full-vector baselines (FedAvg, FedAdam, FedZO).

Everything random is a function of (run seed, round, ...): sampling uses a NumPy generator
seeded per round, directions use seeded torch generators; no state is carried between rounds,
so a resumed run sees exactly the same rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import fused
from .directions import DirectionSampler, derive
from .ledger import Ledger
from .messages import ScalarUpload, VectorMessage, ZODownlink
from .zo import Params

ROUND_SALT = 0x5EED


def round_seed(run_seed: int, r: int) -> int:
    return derive(run_seed, ROUND_SALT, r)


def step_seeds(rseed: int, tau: int, P: int) -> list[list[int]]:
    """Seeds s(r, k, p) of a round, derived from the broadcast round seed."""
    return [[derive(rseed, k, p) for p in range(P)] for k in range(tau)]


def sample_clients(run_seed: int, r: int, M: int, m: int) -> list[int]:
    """m distinct clients out of M for round r, sorted (the aggregation order)."""
    if m == M:
        return list(range(M))
    rng = np.random.default_rng([run_seed, 0xC11E, r])
    return sorted(int(c) for c in rng.choice(M, size=m, replace=False))


DROP_SALT = 0xD209


def answering(run_seed: int, r: int, clients: list[int], q: float) -> list[int]:
    """The sampled clients that answer round r when each fails with probability q (stragglers):
    a function of (run seed, round) alone, so a resumed run drops the same clients."""
    if q <= 0:
        return list(clients)
    draws = np.random.default_rng([run_seed, DROP_SALT, r]).random(len(clients))
    return [c for c, u in zip(clients, draws) if u >= q]


def empty_round(tau: int, P: int) -> np.ndarray:
    """The averaged scalars of a round no client answered: all NaN, which every party reads
    as "no update" (``is_empty``); on the wire and in the history it is an ordinary round."""
    return np.full((tau, P), np.nan, dtype=np.float32)


def is_empty(scalars: np.ndarray) -> bool:
    return bool(np.isnan(np.asarray(scalars)).all())


def aggregate(values: list[np.ndarray], weights: list[float] | None) -> np.ndarray:
    """Mean (or weighted mean) over clients in float64, in client order, rounded to float32."""
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    if weights is None:
        avg = stack.mean(axis=0)
    else:
        w = np.asarray(weights, dtype=np.float64)
        avg = np.tensordot(w / w.sum(), stack, axes=1)
    return avg.astype(np.float32)


class History:
    """The server's (round seed, averaged scalars) per round, with fetch-since and pruning."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[int, np.ndarray]] = {}
        self.first = 0  # oldest round still held
        self.next = 0   # next round to be added

    def add(self, r: int, seed: int, scalars: np.ndarray) -> None:
        if r != self.next:
            raise ValueError(f"history: round {r} added out of order (expected {self.next})")
        self._entries[r] = (seed, np.asarray(scalars, dtype=np.float32))
        self.next = r + 1

    def since(self, r: int) -> list[tuple[int, np.ndarray]]:
        """Entries for rounds r, r+1, ..., next-1."""
        if r < self.first:
            raise ValueError(f"history: round {r} was pruned (oldest held: {self.first})")
        return [self._entries[i] for i in range(r, self.next)]

    def prune_before(self, r: int) -> None:
        for i in range(self.first, min(r, self.next)):
            del self._entries[i]
        self.first = max(self.first, min(r, self.next))

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class RoundResult:
    round: int
    clients: list[int]
    train_loss: float | None  # None: no sampled client answered (stragglers)
    round_seed: int
    scalars: np.ndarray | None = None  # averaged float32 [tau, P*S] for scalar-only methods


@dataclass
class ClientState:
    """What a client holds in faithful mode: its own model, optimiser state and sync round."""

    params: Params
    state: Params
    synced: int = 0  # the round whose start state the client holds


def clone(ts: Params) -> Params:
    """Detached copies (a client's own state, a round's reset point)."""
    return [t.detach().clone() for t in ts]


def _copy_into(dst: Params, src: Params) -> None:
    with torch.no_grad():
        for d, s in zip(dst, src):
            d.copy_(s)


class ZOFederation:
    def __init__(self, task, optimizer, fed, run_seed: int, ledger: Ledger | None = None):
        self.task, self.opt, self.fed, self.seed = task, optimizer, fed, run_seed
        self.ledger = ledger if ledger is not None else Ledger()
        self.params: Params = task.init_params()
        self.state: Params = optimizer.init_state(self.params)
        self.history = History()
        self.last_sync: dict[int, int] = {}
        self.clients: dict[int, ClientState] = {}
        self._work: tuple[Params, Params] | None = None
        self.tau, self.P = fed.local_steps, optimizer.cfg.perturbations
        #: scalars per step: P seeds, each with the optimiser's scalars_per_perturbation values
        self.width = scalar_width(optimizer)

    # -- the round ---------------------------------------------------------------------------
    def run_round(self, r: int) -> RoundResult:
        clients = sample_clients(self.seed, r, self.fed.clients, self.fed.sampled)
        rseed = round_seed(self.seed, r)
        seeds = step_seeds(rseed, self.tau, self.P)
        replying = answering(self.seed, r, clients, getattr(self.fed, "dropout", 0.0))
        uploads, losses = [], []
        for c in clients:
            down = self._downlink(c, r, rseed)
            self.ledger.record(r, c, "down", "zo_round", down)
            if c not in replying:
                # a straggler: the message went out, nothing came back; the server cannot know
                # it arrived, so the next downlink starts from the client's last sync again
                continue
            params, state, reset = self._client_start(c, down)
            scalars, loss = self._local_round(params, state, c, r, seeds)
            if reset is not None:
                _copy_into(params, reset[0])
                _copy_into(state, reset[1])
            up = ScalarUpload(r, c, scalars).encode()
            self.ledger.record(r, c, "up", "zo_scalars", up)
            uploads.append(ScalarUpload.decode(up).scalars)
            losses.append(loss)
            self.last_sync[c] = r
        if not uploads:
            avg = empty_round(self.tau, self.width)
            self._server_apply(r, rseed, avg)
            return RoundResult(r, clients, None, rseed, avg)
        weights = ([self.task.client_weight(c) for c in replying]
                   if self.fed.aggregation == "weighted" else None)
        avg = aggregate(uploads, weights)
        self._server_apply(r, rseed, avg)
        return RoundResult(r, clients, float(np.mean(losses)), rseed, avg)

    def _server_apply(self, r: int, rseed: int, avg: np.ndarray) -> None:
        if not is_empty(avg):
            self.opt.round_update(self.params, self.state, step_seeds(rseed, self.tau, self.P), avg)
        self.history.add(r, rseed, avg)
        self._prune()

    def _prune(self) -> None:
        # History older than the least recently synchronised client is never asked for again.
        if len(self.last_sync) < self.fed.clients:
            return
        self.history.prune_before(min(self.last_sync.values()))

    def _downlink(self, c: int, r: int, rseed: int) -> bytes:
        first = self.last_sync.get(c, 0)
        return ZODownlink(r, rseed, first, self.history.since(first)).encode()

    def _client_start(self, c: int, down: bytes):
        """The client's state at the start of round r, and what to reset it to afterwards."""
        if self.fed.mode == "simulation":
            if self.tau == 1:
                # a one-step client only evaluates (its step would be undone by the reset), so
                # it can read the server's state directly: no model copy at all
                return self.params, self.state, None
            if self._work is None:
                self._work = (clone(self.params), clone(self.state))
            params, state = self._work
            _copy_into(params, self.params)
            _copy_into(state, self.state)
            return params, state, None  # the work copy is overwritten by the next client
        msg = ZODownlink.decode(down, self.tau, self.width)
        cs = self.clients.get(c)
        if cs is None:
            fresh = self.task.init_params()
            cs = self.clients[c] = ClientState(fresh, self.opt.init_state(fresh), 0)
        if msg.first_missed != cs.synced:
            raise RuntimeError(f"client {c}: holds round {cs.synced}, catch-up starts at {msg.first_missed}")
        catch_up(self.opt, cs.params, cs.state, msg.missed, self.tau, self.P)
        cs.synced = msg.round
        return cs.params, cs.state, (clone(cs.params), clone(cs.state))

    def _local_round(self, params: Params, state: Params, c: int, r: int, seeds) -> tuple[np.ndarray, float]:
        return local_round(self.task, self.opt, params, state, c, r, seeds)

    # -- resume ------------------------------------------------------------------------------
    def replay(self, r: int, rseed: int, clients: list[int], scalars: np.ndarray) -> None:
        """Re-apply a recorded round (resume, export): same function as the live server."""
        if rseed != round_seed(self.seed, r):
            raise ValueError(f"history round {r}: seed does not match this run's seed")
        for c in answering(self.seed, r, clients, getattr(self.fed, "dropout", 0.0)):
            self.last_sync[c] = r
            if self.fed.mode == "faithful":
                self._rebuild_client(c, r)
        with fused.replaying():
            self._server_apply(r, rseed, np.asarray(scalars, dtype=np.float32).reshape(self.tau, self.width))

    def _rebuild_client(self, c: int, r: int) -> None:
        """A faithful client's state after taking part in round r: the round-start state it
        caught up to. Its catch-up applies the same round updates, in the same order, from the
        same initial state as the server, so the server's state at the start of round r *is*
        that state, bit for bit; copying it rebuilds the client without replaying it."""
        cs = self.clients.get(c)
        if cs is None:
            self.clients[c] = ClientState(clone(self.params), clone(self.state), r)
            return
        _copy_into(cs.params, self.params)
        _copy_into(cs.state, self.state)
        cs.synced = r


def scalar_width(opt) -> int:
    """Float32 scalars a client uploads per local step."""
    return opt.cfg.perturbations * opt.scalars_per_perturbation


def catch_up(opt, params: Params, state: Params, missed, tau: int, P: int) -> None:
    """Replay missed rounds in order with the optimiser's one round update."""
    with fused.replaying():
        for seed, scalars in missed:
            if not is_empty(scalars):
                opt.round_update(params, state, step_seeds(seed, tau, P), scalars)


def local_round(task, opt, params: Params, state: Params, c: int, r: int, seeds) -> tuple[np.ndarray, float]:
    """Client c's tau local steps of round r from (params, state): float32 [tau, P*S] scalars
    and the mean loss. Leaves params/state after tau - 1 steps; the caller resets them."""
    tau = len(seeds)
    out = np.empty((tau, scalar_width(opt)), dtype=np.float32)
    losses = []
    for k in range(tau):
        batch = task.batch(c, r, k)
        g, f0 = opt.estimate(lambda pert: task.loss(params, batch, pert), seeds[k],
                             opt.preconditioner(state))
        out[k] = g
        losses.append(f0)
        if k < tau - 1:  # the last step would be undone by the reset: skip its sweep
            opt.local_step(params, state, seeds[k], g)
    return out, float(np.mean(losses))


class ZOClient:
    """One client's half of the scalar-only protocol, for transports that run it elsewhere
    (e.g. a Flower ClientApp): its own model, optimiser state and last-sync round. It answers a
    ZODownlink with a ScalarUpload and keeps the round-start state, as faithful mode does.

    A downlink may start before the round the client holds (the server did not see the
    client's last reply): the rounds it already applied are skipped, the history being
    append-only. One that starts after it (the client lost its state) is refused.
    """

    def __init__(self, task, opt, client: int, tau: int, P: int, held: ClientState | None = None):
        self.task, self.opt, self.client, self.tau, self.P = task, opt, client, tau, P
        self.width = P * opt.scalars_per_perturbation
        if held is None:
            fresh = task.init_params()
            held = ClientState(fresh, opt.init_state(fresh), 0)
        self.held = held

    def respond(self, down: bytes) -> tuple[bytes, float]:
        msg = ZODownlink.decode(down, self.tau, self.width)
        cs = self.held
        skip = cs.synced - msg.first_missed
        if not 0 <= skip <= len(msg.missed) or msg.first_missed + len(msg.missed) != msg.round:
            raise ValueError(f"client {self.client}: holds round {cs.synced}, downlink catches up "
                             f"rounds {msg.first_missed}..{msg.round - 1}")
        catch_up(self.opt, cs.params, cs.state, msg.missed[skip:], self.tau, self.P)
        cs.synced = msg.round
        reset = (clone(cs.params), clone(cs.state)) if self.tau > 1 else None
        scalars, loss = local_round(self.task, self.opt, cs.params, cs.state, self.client, msg.round,
                                    step_seeds(msg.round_seed, self.tau, self.P))
        if reset is not None:
            _copy_into(cs.params, reset[0])
            _copy_into(cs.state, reset[1])
        return ScalarUpload(msg.round, self.client, scalars).encode(), loss


def vector_local_round(task, method, work: Params, c: int, r: int, rseed: int, steps: int) -> float:
    """A full-vector client's local steps on ``work`` (in place); its mean training loss."""
    return float(np.mean([method.local_step(task, work, task.batch(c, r, k), derive(rseed, c, k))
                          for k in range(steps)]))


class VectorFederation:
    """Full-vector rounds: model down, model change up, server update."""

    def __init__(self, task, method, fed, run_seed: int, ledger: Ledger | None = None):
        self.task, self.method, self.fed, self.seed = task, method, fed, run_seed
        self.ledger = ledger if ledger is not None else Ledger()
        self.params: Params = task.init_params()
        self.state: Params = method.init_state(self.params)
        self._work = clone(self.params)
        self._acc = [torch.zeros_like(p) for p in self.params]

    def run_round(self, r: int) -> RoundResult:
        clients = sample_clients(self.seed, r, self.fed.clients, self.fed.sampled)
        rseed = round_seed(self.seed, r)
        replying = answering(self.seed, r, clients, getattr(self.fed, "dropout", 0.0))
        weighted = self.fed.aggregation == "weighted"
        weights = [self.task.client_weight(c) if weighted else 1.0 for c in replying]
        total = float(sum(weights))
        for a in self._acc:
            a.zero_()
        losses = []
        for c in clients:
            if c not in replying:  # a straggler: the model went out, nothing came back
                self.ledger.record(r, c, "down", "model", VectorMessage(r, c, self.params))
        for c, w in zip(replying, weights):
            down = VectorMessage(r, c, self.params)
            self.ledger.record(r, c, "down", "model", down)
            _copy_into(self._work, down.decode(self._work))
            losses.append(vector_local_round(self.task, self.method, self._work, c, r, rseed,
                                             self.fed.local_steps))
            with torch.no_grad():
                for wk, p in zip(self._work, self.params):
                    wk.sub_(p)
            up = VectorMessage(r, c, self._work)
            self.ledger.record(r, c, "up", "model_change", up)
            with torch.no_grad():
                for a, d in zip(self._acc, up.decode(self._acc)):
                    a.add_(d, alpha=w / total)
        if not replying:  # nobody answered: the round changes nothing
            return RoundResult(r, clients, None, rseed)
        self.method.server_update(self.params, self.state, self._acc)
        return RoundResult(r, clients, float(np.mean(losses)), rseed)
