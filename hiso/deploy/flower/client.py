"""The client's side on Flower: what a ClientApp does with each message.

A node runs one client, its ``partition-id`` (node config). Its state lives on the node's disk
(node config ``state-dir``; the simulation engine uses a directory of the run), as it would on
a device that restarts: the resolved config and run token from set-up, and for the
scalar-only methods the :class:`hiso.protocol.ClientState` (model, optimiser state, round
held). Flower starts a fresh ClientApp process per message on a SuperNode, so nothing else is
kept between messages; a node that comes back after missing rounds catches up by replaying
the history the server sends, exactly as a client that was simply not sampled.
"""

from __future__ import annotations

import hashlib
import io as _io
from pathlib import Path

import torch
import yaml

from ... import io
from ...config import resolve
from ...protocol import ClientState, ZOClient, round_seed, vector_local_round
from . import records

CONFIG, TOKEN, STATE = "config.yaml", "run.txt", "state.pt"

_built: dict[str, tuple] = {}  # config sha -> (resolved, task, method): reused while the process lives


class Store:
    """A client's directory: set-up (config, run token) and held state, written atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def token(self) -> str | None:
        f = self.path / TOKEN
        return f.read_text().strip() if f.exists() else None

    def reset(self, config_yaml: str, token: str) -> None:
        (self.path / STATE).unlink(missing_ok=True)
        io.atomic_write_text(self.path / CONFIG, config_yaml)
        io.atomic_write_text(self.path / TOKEN, token + "\n")

    def config(self) -> str:
        f = self.path / CONFIG
        if not f.exists():
            raise RuntimeError(f"{self.path}: no set-up received yet")
        return f.read_text()

    def load(self) -> ClientState | None:
        f = self.path / STATE
        if not f.exists():
            return None
        d = torch.load(f, weights_only=True)
        return ClientState(d["params"], d["state"], int(d["synced"]))

    def save(self, cs: ClientState) -> None:
        buf = _io.BytesIO()
        torch.save({"params": cs.params, "state": cs.state, "synced": cs.synced}, buf)
        io.atomic_write_bytes(self.path / STATE, buf.getvalue())


def client_index(context) -> int:
    pid = context.node_config.get("partition-id")
    if pid is None:
        raise RuntimeError("node config has no partition-id (the client this node runs)")
    return int(pid)


def store_for(context, root: Path | None) -> Store:
    """The node's ``state-dir``, else ``root/client-<partition-id>`` (simulation)."""
    where = context.node_config.get("state-dir")
    if where is None:
        if root is None:
            raise RuntimeError("node config has no state-dir (where this client keeps its model)")
        where = Path(root) / f"client-{client_index(context)}"
    return Store(Path(where))


def on_setup(content, context, root: Path | None):
    """Set-up: keep the config; start afresh unless the state is this run's. -> hello."""
    config_yaml, token = records.read_setup(content)
    store = store_for(context, root)
    if store.token() != token:
        store.reset(config_yaml, token)
    held = store.load()
    return records.hello(client_index(context), held.synced if held is not None else 0)


def on_round(content, context, root: Path | None):
    """One round: catch up, local steps, reply with the scalars (or the model change)."""
    store = store_for(context, root)
    resolved, task, method = _build(store.config())
    c = client_index(context)
    fed = resolved.run.federation
    if "zo" in content:
        client = ZOClient(task, method, c, fed.local_steps, method.cfg.perturbations, store.load())
        up, loss = client.respond(records.read_zo_round(content))
        store.save(client.held)
        return records.zo_reply(up, loss)
    r, addressed, arrays = records.read_vector_round(content)
    if addressed != c:
        raise RuntimeError(f"round {r}: message for client {addressed} reached client {c}")
    start = [torch.from_numpy(a.copy()) for a in arrays]
    work = [t.clone() for t in start]
    loss = vector_local_round(task, method, work, c, r, round_seed(resolved.run.seed, r), fed.local_steps)
    with torch.no_grad():
        for w, s in zip(work, start):
            w.sub_(s)
    return records.vector_reply(r, c, work, loss)


def _build(config_yaml: str):
    from ...runner import build_task_and_method

    key = hashlib.sha256(config_yaml.encode()).hexdigest()
    if key not in _built:
        resolved = resolve(yaml.safe_load(config_yaml))
        _built.clear()  # one run at a time per process
        _built[key] = (resolved, *build_task_and_method(resolved))
    return _built[key]
