"""The server's side on Flower: the protocol's rounds, sent through a Flower ``Grid``.

:class:`FlowerZOFederation` and :class:`FlowerVectorFederation` are the in-process federations
(:mod:`hiso.protocol`) with one change: a round's messages go to the SuperNodes that run the
sampled clients instead of to functions in this process. Sampling, seeds, aggregation, the
history, pruning, replay on resume and the ledger are the protocol's own, so with every
client answering a run ends with the parameters of ``hiso run`` in process, bit for bit.

A client that does not answer within ``federation.flower.round_timeout`` (killed, cut off, never
started) is dropped from that round's average, and so is one whose reply is malformed or
for another round: each is logged on one line, and the history holds only what was
aggregated. A round that nobody answered fails the run; rerunning resumes it.
"""

from __future__ import annotations

import csv
import io as _io
import logging
import secrets
import time
from pathlib import Path

import numpy as np
import torch

from ... import io
from ...config import dump_yaml
from ...messages import VectorMessage
from ...protocol import RoundResult, VectorFederation, ZOFederation, aggregate, round_seed, sample_clients
from . import records

log = logging.getLogger("hiso.flower")

WIRE, RUN_TOKEN = "wire.csv", "flower_run.txt"
POLL_SECONDS = 0.25  # a SuperNode itself polls every 3 s


class Link:
    """The server's view of the SuperNodes: which node runs which client, and one exchange of
    messages per round.

    A node is asked once, by a set-up message carrying the resolved config and the run's token,
    which client it runs (its ``partition-id``) and which round it holds. Nodes that appear
    later (a restarted SuperNode) are set up when they appear.
    """

    def __init__(self, grid, resolved, out: Path):
        self.grid, self.out = grid, Path(out)
        self.cfg = resolved.run.federation
        self.flower = self.cfg.flower
        self.config_yaml = dump_yaml(resolved.to_dict())
        self.node_of: dict[int, int] = {}     # client -> node id
        self.client_of: dict[int, int] = {}   # node id -> client
        self.held: dict[int, int] = {}        # client -> round it reported holding at set-up
        self._token: str | None = None
        self._wire_rows: list[list] = []
        self._started = False

    # -- set-up ------------------------------------------------------------------------------
    def token(self) -> str:
        """A random id of this run, kept in the run directory: a client holding state from
        another run (even of the same config) starts afresh."""
        if self._token is None:
            path = self.out / RUN_TOKEN
            if path.exists():
                self._token = path.read_text().strip()
            else:
                self._token = secrets.token_hex(16)
                io.atomic_write_text(path, self._token + "\n")
        return self._token

    def start(self, first_round: int) -> bool:
        """Before the first round this process runs: wait for the clients, drop wire rows of
        rounds a resumed run will redo. False when already started."""
        if self._started:
            return False
        self._started = True
        kept = [row for row in _read_wire(self.out / WIRE) if int(row[0]) < first_round]
        io.atomic_write_text(self.out / WIRE, _csv([WIRE_FIELDS] + kept))
        deadline = time.monotonic() + self.flower.wait_nodes
        while True:
            self.refresh()
            if len(self.node_of) >= self.cfg.clients or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        missing = sorted(set(range(self.cfg.clients)) - set(self.node_of))
        if missing:
            log.warning("starting without clients %s (not connected after %.0f s)", missing,
                        self.flower.wait_nodes)
        return True

    def refresh(self) -> None:
        """Set up nodes not seen before; forget nodes that left."""
        online = set(int(n) for n in self.grid.get_node_ids())
        for node in set(self.client_of) - online:
            c = self.client_of.pop(node)
            if self.node_of.get(c) == node:
                del self.node_of[c]
        new = sorted(online - set(self.client_of))
        if not new:
            return
        content = records.setup(self.config_yaml, self.token())
        replies = self._exchange({n: (n, content) for n in new}, records.SETUP, "setup",
                                 self.flower.round_timeout)
        for node in new:
            msg = replies.get(node)
            if msg is None:
                continue
            try:
                c, synced = records.read_hello(msg)
            except ValueError as exc:
                log.warning("node %d: set-up reply rejected: %s", node, exc)
                continue
            if not 0 <= c < self.cfg.clients:
                log.warning("node %d: runs client %d, outside 0..%d; ignored", node, c, self.cfg.clients - 1)
                continue
            if c in self.node_of:
                log.warning("client %d: now on node %d (was node %d)", c, node, self.node_of[c])
                self.client_of.pop(self.node_of[c], None)
            self.node_of[c], self.client_of[node] = node, c
            self.held[c] = synced
            log.info("client %d on node %d, holds round %d", c, node, synced)

    # -- one round ---------------------------------------------------------------------------
    def send(self, r: int, contents: dict[int, object]) -> dict[int, object]:
        """Send client c's content for round r to its node; the replies that came back in time."""
        self.refresh()
        routed = {}
        for c, content in contents.items():
            if c in self.node_of:
                routed[c] = (self.node_of[c], content)
            else:
                log.warning("round %d: client %d dropped: no node runs it", r, c)
        replies = self._exchange(routed, records.ROUND, str(r), self.flower.round_timeout)
        for c, (_, content) in routed.items():
            self._wire(r, c, "down", records.payload_bytes(content))
        for c in routed:
            if c not in replies:
                log.warning("round %d: client %d dropped: no answer within %.0f s", r, c,
                            self.flower.round_timeout)
            elif replies[c].has_error():  # Flower's word: node gone, ClientApp crashed, ...
                log.warning("round %d: client %d dropped: %s", r, c, replies.pop(c).error.reason)
        return replies

    def accepted(self, r: int, c: int, msg) -> None:
        self._wire(r, c, "up", records.payload_bytes(msg.content))

    def rejected(self, r: int, c: int, reason: Exception) -> None:
        log.warning("round %d: client %d: reply rejected: %s", r, c, reason)

    def flush(self) -> None:
        if self._wire_rows:
            with (self.out / WIRE).open("a") as fh:
                fh.write(_csv(self._wire_rows))
            self._wire_rows = []

    def _wire(self, r: int, c: int, direction: str, nbytes: int) -> None:
        self._wire_rows.append([r, c, direction, nbytes])

    def _exchange(self, routed: dict, mtype: str, group: str, timeout: float) -> dict:
        """Push one message per key, then pull replies until all came or ``timeout`` passed."""
        from flwr.app import Message

        keys = list(routed)
        msgs = [Message(content, dst_node_id=node, message_type=mtype, group_id=group, ttl=timeout)
                for node, content in routed.values()]
        ids = list(self.grid.push_messages(msgs)) if msgs else []
        pending = {mid: k for mid, k in zip(ids, keys) if mid}
        replies = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in self.grid.pull_messages(list(pending)):
                k = pending.pop(msg.metadata.reply_to_message_id, None)
                if k is None:
                    log.warning("reply to an unknown message (%s) ignored", msg.metadata.reply_to_message_id)
                    continue
                replies[k] = msg
            if pending:
                time.sleep(POLL_SECONDS)
        return replies


WIRE_FIELDS = ["round", "client", "direction", "payload_bytes"]


def _csv(rows) -> str:
    buf = _io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _read_wire(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    rows = list(csv.reader(path.open()))[1:]
    return [row for row in rows if len(row) == 4 and row[0].isdigit()]


class FlowerZOFederation(ZOFederation):
    """Scalar-only rounds whose clients are Flower nodes (see the module docstring)."""

    def __init__(self, task, optimizer, fed, run_seed: int, ledger, link: Link):
        super().__init__(task, optimizer, fed, run_seed, ledger)
        self.link = link

    def run_round(self, r: int) -> RoundResult:
        self._join(r)
        clients = sample_clients(self.seed, r, self.fed.clients, self.fed.sampled)
        rseed = round_seed(self.seed, r)
        downs = {c: self._downlink(c, r, rseed) for c in clients}
        replies = self.link.send(r, {c: records.zo_round(down) for c, down in downs.items()})
        uploads, losses, answered = [], [], []
        for c in clients:  # the in-process order: down then up, client by client
            self.ledger.record(r, c, "down", "zo_round", downs[c])
            if c not in replies:
                continue
            try:
                up, scalars, loss = records.read_zo_reply(replies[c], r, c, self.tau, self.width)
            except ValueError as exc:
                self.link.rejected(r, c, exc)
                continue
            self.link.accepted(r, c, replies[c])
            self.ledger.record(r, c, "up", "zo_scalars", up)
            uploads.append(scalars)
            losses.append(loss)
            answered.append(c)
            self.last_sync[c] = r
        self.link.flush()
        if not answered:
            raise RuntimeError(f"round {r}: none of the sampled clients {clients} answered")
        weights = ([self.task.client_weight(c) for c in answered]
                   if self.fed.aggregation == "weighted" else None)
        avg = aggregate(uploads, weights)
        self._server_apply(r, rseed, avg)
        return RoundResult(r, answered, float(np.mean(losses)), rseed, avg)

    def _join(self, r: int) -> None:
        """Set-up before the first round: a client's reported round is where its catch-up
        starts, when the history still holds it."""
        if not self.link.start(r):
            return
        for c, held in self.link.held.items():
            if self.history.first <= held <= r:
                self.last_sync[c] = held
            else:
                log.warning("client %d holds round %d, which the history (rounds %d..%d) cannot "
                            "bring up to date", c, held, self.history.first, r)


class FlowerVectorFederation(VectorFederation):
    """Full-vector rounds (FedAvg, FedAdam, FedZO) whose clients are Flower nodes."""

    def __init__(self, task, method, fed, run_seed: int, ledger, link: Link):
        super().__init__(task, method, fed, run_seed, ledger)
        self.link = link

    def run_round(self, r: int) -> RoundResult:
        self.link.start(r)
        clients = sample_clients(self.seed, r, self.fed.clients, self.fed.sampled)
        rseed = round_seed(self.seed, r)
        replies = self.link.send(r, {c: records.vector_round(r, c, self.params) for c in clients})
        changes, losses, answered = [], [], []
        for c in clients:
            self.ledger.record(r, c, "down", "model", VectorMessage(r, c, self.params))
            if c not in replies:
                continue
            try:
                change, loss = records.read_vector_reply(replies[c], r, c, self.params)
            except ValueError as exc:
                self.link.rejected(r, c, exc)
                continue
            self.link.accepted(r, c, replies[c])
            self.ledger.record(r, c, "up", "model_change", VectorMessage(r, c, change))
            changes.append(change)
            losses.append(loss)
            answered.append(c)
        self.link.flush()
        if not answered:
            raise RuntimeError(f"round {r}: none of the sampled clients {clients} answered")
        weighted = self.fed.aggregation == "weighted"
        weights = [self.task.client_weight(c) if weighted else 1.0 for c in answered]
        total = float(sum(weights))
        for a in self._acc:
            a.zero_()
        with torch.no_grad():
            for change, w in zip(changes, weights):
                for a, d in zip(self._acc, change):
                    a.add_(d, alpha=w / total)
        self.method.server_update(self.params, self.state, self._acc)
        return RoundResult(r, answered, float(np.mean(losses)), rseed)


def federation_factory(grid, resolved, out: Path):
    """``make_federation`` for :class:`hiso.runner.Run`: the Flower federation of the method."""
    from ...optimizers.base import ScalarOptimizer

    def make(task, method, ledger):
        link = Link(grid, resolved, out)
        cls = FlowerZOFederation if isinstance(method, ScalarOptimizer) else FlowerVectorFederation
        return cls(task, method, resolved.run.federation, resolved.run.seed, ledger, link)

    return make
