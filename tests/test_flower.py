"""HiSo, DeComFL and FedAvg on Flower: same parameters as in process, faults handled.

Most tests drive the real ServerApp loop and the real ClientApp through a small in-memory
``Grid`` (no Ray, no sockets), so they are fast; one runs Flower's simulation engine. The
loopback deployment with real SuperNodes is in ``test_flower_deploy.py`` (heavy). All skip
where the ``flower`` extra is not installed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("flwr")

from flwr.app import Context, Message, RecordDict  # noqa: E402

from hiso.config import resolve  # noqa: E402
from hiso.deploy.flower import apps, records  # noqa: E402
from hiso.deploy.flower.server import WIRE  # noqa: E402
from hiso.io import read_jsonl  # noqa: E402
from hiso.messages import ScalarUpload  # noqa: E402
from hiso.runner import Run  # noqa: E402

from helpers import config  # noqa: E402


class FakeGrid:
    """Flower's Grid reduced to what the ServerApp uses; nodes answer synchronously through
    the real ClientApp. ``mangle(r, client, reply) -> reply | None`` can corrupt or drop
    replies; ``down`` holds clients whose node is off line."""

    def __init__(self, clients: int, root: Path, mangle=None):
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # a ServerApp's
        self.app = apps.make_client_app()
        self.nodes = {1000 + c: c for c in range(clients)}
        self.root, self.mangle, self.down = root, mangle, set()
        self.replies: dict[str, Message] = {}

    def context(self, node: int) -> Context:
        c = self.nodes[node]
        cfg = {"partition-id": c, "state-dir": str(self.root / f"node-{c}")}
        return Context(run_id=1, node_id=node, node_config=cfg, state=RecordDict(), run_config={})

    def get_node_ids(self):
        return [n for n, c in self.nodes.items() if c not in self.down]

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            ids.append(msg.object_id)
            node = msg.metadata.dst_node_id
            if self.nodes[node] in self.down:
                continue
            reply = self.app(msg, self.context(node))
            if self.mangle is not None and msg.metadata.message_type == records.ROUND:
                reply = self.mangle(int(msg.metadata.group_id), self.nodes[node], reply, msg)
            if reply is not None:
                self.replies[msg.object_id] = reply
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]


def _cfg(tmp_path: Path, **extra) -> dict:
    return config(**{"federation.clients": 4, "federation.sampled": 2, "federation.rounds": 6,
                     "federation.local_steps": 1, "method.perturbations": 5, "eval.every": 2,
                     "runtime.threads": 1, "federation.flower.round_timeout": 0.2,
                     "federation.flower.wait_nodes": 0, **extra})


def _inprocess(tmp_path: Path, cfg: dict) -> dict:
    return Run(resolve(cfg), tmp_path / "inprocess", progress=False).execute()


def _flower(tmp_path: Path, cfg: dict, grid: FakeGrid, name: str = "flower") -> dict:
    resolved = resolve({**cfg, "federation": {**cfg["federation"], "backend": "flower"}})
    return apps.serve(grid, resolved, tmp_path / name)


@pytest.mark.parametrize("method,tau", [("hiso", 1), ("decomfl", 1), ("hiso", 3), ("fedavg", 2)])
def test_flower_rounds_end_with_the_in_process_parameters(tmp_path, method, tau, one_torch_thread):
    cfg = _cfg(tmp_path, **{"method.name": method, "federation.local_steps": tau})
    if method == "fedavg":
        cfg["method"] = {"name": "fedavg", "lr": 0.01}
    ref = _inprocess(tmp_path, cfg)
    got = _flower(tmp_path, cfg, FakeGrid(4, tmp_path / "nodes"))
    assert got["status"] == "ok" and got["rounds"] == 6
    assert got["params_sha256"] == ref["params_sha256"]
    assert (got["bytes_up"], got["bytes_down"]) == (ref["bytes_up"], ref["bytes_down"])
    a, b = tmp_path / "inprocess", tmp_path / "flower"
    assert (a / "ledger.csv").read_text() == (b / "ledger.csv").read_text()
    assert read_jsonl(a / "history.jsonl") == read_jsonl(b / "history.jsonl")
    wire = (b / WIRE).read_text().splitlines()
    assert wire[0] == "round,client,direction,payload_bytes" and len(wire) == 1 + 6 * 2 * 2


def _held_state_replays_to(node_dir: Path, history: list[dict], sha: str) -> bool:
    """Does a node's held state, caught up by replaying the rest of the history, equal ``sha``?"""
    import numpy as np

    from hiso.deploy.flower.client import Store, _build
    from hiso.protocol import catch_up
    from hiso.zo import params_sha256

    store = Store(node_dir)
    held = store.load()
    resolved, _, opt = _build(store.config())
    missed = [(h["seed"], np.asarray(h["scalars"], np.float32)) for h in history[held.synced:]]
    catch_up(opt, held.params, held.state, missed, resolved.run.federation.local_steps,
             opt.cfg.perturbations)
    return params_sha256(held.params) == sha


def test_scalar_messages_carry_no_arrays_and_client_state_matches_server(tmp_path, one_torch_thread):
    cfg = _cfg(tmp_path, **{"federation.rounds": 8})
    seen = []

    def spy(r, c, reply, msg):
        seen.append((msg.content, reply.content))
        return reply

    got = _flower(tmp_path, cfg, FakeGrid(4, tmp_path / "nodes", mangle=spy))
    assert len(seen) == 8 * 2
    for down, up in seen:
        for content in (down, up):
            assert not content.array_records and "zo" in content.config_records
    history = read_jsonl(tmp_path / "flower" / "history.jsonl")
    for c in range(4):
        assert _held_state_replays_to(tmp_path / "nodes" / f"node-{c}", history, got["params_sha256"])


def _sampled(cfg, r):
    from hiso.protocol import sample_clients

    return sample_clients(cfg["seed"], r, cfg["federation"]["clients"], cfg["federation"]["sampled"])


def test_dropped_and_rejected_replies_leave_the_round_to_the_others(tmp_path, caplog, one_torch_thread):
    cfg = _cfg(tmp_path, **{"federation.rounds": 6, "federation.sampled": 3})
    drop = {1: min(_sampled(cfg, 1))}   # never answers
    stale = {2: min(_sampled(cfg, 2))}  # answers with its upload of the round before
    bad = {3: max(_sampled(cfg, 3))}    # answers with a truncated upload

    def mangle(r, c, reply, msg):
        if drop.get(r) == c:
            return None
        if stale.get(r) == c:
            up = ScalarUpload(r - 1, c, np.zeros((1, 5), np.float32)).encode()
            return Message(records.zo_reply(up, 0.0), reply_to=msg)
        if bad.get(r) == c:
            return Message(records.zo_reply(b"\x00" * 7, 0.0), reply_to=msg)
        return reply

    with caplog.at_level(logging.WARNING, logger="hiso.flower"):
        got = _flower(tmp_path, cfg, FakeGrid(4, tmp_path / "nodes", mangle=mangle))
    assert got["status"] == "ok"
    out = tmp_path / "flower"
    hist = read_jsonl(out / "history.jsonl")
    assert [len(h["clients"]) for h in hist] == [3, 2, 2, 2, 3, 3]
    assert drop[1] not in hist[1]["clients"] and stale[2] not in hist[2]["clients"]
    assert bad[3] not in hist[3]["clients"]
    assert f"round 1: client {drop[1]} dropped: no answer" in caplog.text
    assert f"round 2: client {stale[2]}: reply rejected: upload is for round 1" in caplog.text
    assert f"round 3: client {bad[3]}: reply rejected: malformed scalar upload" in caplog.text
    assert "reply rejected" in (out / "flower.log").read_text()
    # the history holds exactly what was aggregated: replaying it from scratch (a resume
    # with nothing left to run) lands on the same parameters
    (out / "summary.json").unlink()
    again = apps.serve(FakeGrid(4, tmp_path / "nodes2"), resolve(yaml.safe_load((out / "config.yaml").read_text())), out)
    assert again["params_sha256"] == got["params_sha256"]
    for c in range(4):  # and every node, dropped or not, catches up to them
        assert _held_state_replays_to(tmp_path / "nodes" / f"node-{c}", hist, got["params_sha256"])


class _Kill(Exception):
    pass


def test_client_back_after_missing_rounds_catches_up_and_killed_server_resumes(tmp_path, monkeypatch,
                                                                              one_torch_thread):
    cfg = _cfg(tmp_path, **{"federation.rounds": 10})
    resolved = resolve({**cfg, "federation": {**cfg["federation"], "backend": "flower"}})
    away = next(c for c in range(4) if c in _sampled(cfg, 0) + _sampled(cfg, 1))
    from hiso.deploy.flower import server as srv

    real = srv.FlowerZOFederation.run_round
    outcomes = {}
    for name, kill_at in (("straight", None), ("killed", 7)):
        grid = FakeGrid(4, tmp_path / f"nodes-{name}")
        killed = []

        def run_round(self, r, grid=grid, kill_at=kill_at, killed=killed):
            grid.down = {away} if r < 5 else set()  # off line for rounds 0..4, then back
            if r == kill_at and not killed:
                killed.append(r)
                raise _Kill  # the ServerApp dies before this round
            return real(self, r)

        monkeypatch.setattr(srv.FlowerZOFederation, "run_round", run_round)
        out = tmp_path / name
        if kill_at is not None:
            with pytest.raises(_Kill):
                apps.serve(grid, resolved, out)
            assert json.loads((out / "summary.json").read_text())["status"] == "failed"
        outcomes[name] = apps.serve(grid, resolved, out)  # the rerun resumes
        hist = read_jsonl(out / "history.jsonl")
        assert [h["round"] for h in hist] == list(range(10))
        assert all(away not in h["clients"] for h in hist[:5])
        assert _held_state_replays_to(tmp_path / f"nodes-{name}" / f"node-{away}", hist,
                                      outcomes[name]["params_sha256"])
    assert outcomes["killed"]["params_sha256"] == outcomes["straight"]["params_sha256"]
    assert (tmp_path / "killed" / "ledger.csv").read_text() == (tmp_path / "straight" / "ledger.csv").read_text()


def test_flower_simulation_engine_matches_in_process(tmp_path, one_torch_thread):
    """``federation.backend: flower-sim`` through ``hiso run``: Flower's own engine (Ray)."""
    pytest.importorskip("ray")
    from hiso.cli import main

    cfg = _cfg(tmp_path, **{"federation.rounds": 3, "eval.every": 3,
                            "federation.flower.round_timeout": 300.0, "federation.flower.wait_nodes": 300.0})
    ref = _inprocess(tmp_path, cfg)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "sim"), "--no-progress",
                 "--set", "federation.backend=flower-sim"]) == 0
    got = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert got["params_sha256"] == ref["params_sha256"] and got["rounds"] == 3
    assert (tmp_path / "sim" / "ledger.csv").read_text() == (tmp_path / "inprocess" / "ledger.csv").read_text()
    assert not (tmp_path / "sim" / apps.CLIENT_DIR).exists()  # clients' state removed once done
