"""federation.dropout: sampled clients that fail to answer (stragglers), drawn from the seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hiso import export
from hiso.config import resolve
from hiso.errors import UserError
from hiso.protocol import answering, is_empty
from hiso.runner import Run
from hiso.zo import params_sha256
from helpers import config


def test_answering_is_seeded_and_drops_about_q():
    clients = list(range(50))
    a = answering(7, 3, clients, 0.2)
    assert a == answering(7, 3, clients, 0.2) and a != answering(7, 4, clients, 0.2)
    assert answering(7, 3, clients, 0.0) == clients
    kept = np.mean([len(answering(1, r, clients, 0.2)) / 50 for r in range(200)])
    assert abs(kept - 0.8) < 0.02


def test_dropout_is_a_validated_key():
    with pytest.raises(UserError, match="federation.dropout"):
        resolve(config(**{"federation.dropout": 1.0}))
    with pytest.raises(UserError, match="federation.dropout"):
        resolve(config(**{"federation.dropout": 0.2, "federation.backend": "flower-sim"}))


def _run(tmp_path, name, **over):
    cfg = config(**{"federation.dropout": 0.5, "federation.sampled": 2, "federation.rounds": 30,
                    "eval.every": 10, **over})
    return Run(resolve(cfg), tmp_path / name, progress=False).execute(), tmp_path / name


@pytest.mark.parametrize("method", ["hiso", "decomfl"])
def test_stragglers_reply_less_and_empty_rounds_change_nothing(tmp_path, method):
    s, d = _run(tmp_path, "q", **{"method.name": method})
    full, _ = _run(tmp_path, "q0", **{"method.name": method, "federation.dropout": 0.0})
    assert s["status"] == "ok" and s["params_sha256"] != full["params_sha256"]
    # uploads: one per answering client; downloads still go to every sampled client
    expected_up = sum(len(answering(3, r, sorted_sample(r), 0.5)) for r in range(30))
    ledger = (d / "ledger.csv").read_text().splitlines()[1:]
    ups = [row for row in ledger if ",up," in row]
    downs = [row for row in ledger if ",down," in row]
    assert len(ups) == expected_up < 60 and len(downs) == 60
    # forwards count the clients that computed: replies x tau (2) x (P + 1) (4)
    last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["forwards"] == expected_up * 2 * 4
    hist = [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()]
    empty = [h["round"] for h in hist if is_empty(np.asarray(h["scalars"], dtype=np.float32))]
    assert empty and all(not answering(3, r, sorted_sample(r), 0.5) for r in empty)
    # replay (export) and faithful mode agree with the simulating server, stragglers and all
    _, params = export.rebuild(export.read_source(d))
    assert params_sha256(params) == s["params_sha256"]
    faithful, _ = _run(tmp_path, "f", **{"method.name": method, "federation.mode": "faithful"})
    assert faithful["params_sha256"] == s["params_sha256"]
    assert faithful["bytes_down"] == s["bytes_down"] and faithful["bytes_up"] == s["bytes_up"]


def sorted_sample(r):
    from hiso.protocol import sample_clients

    return sample_clients(3, r, 5, 2)


def test_resume_drops_the_same_clients(tmp_path):
    full, _ = _run(tmp_path, "full")
    _, d = _run(tmp_path, "part")
    lines = (d / "history.jsonl").read_text().splitlines()
    (d / "history.jsonl").write_text("\n".join(lines[:13]) + "\n")
    (d / "summary.json").unlink()
    resumed, _ = _run(tmp_path, "part")
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["bytes_down"] == full["bytes_down"]


def test_first_order_runs_average_the_replies_they_got(tmp_path):
    s, d = _run(tmp_path, "fo", **{"method": {"name": "fedavg", "lr": 0.01}})
    full, _ = _run(tmp_path, "fo0", **{"method": {"name": "fedavg", "lr": 0.01},
                                       "federation.dropout": 0.0})
    assert s["status"] == "ok" and s["bytes_up"] < full["bytes_up"]
    assert s["bytes_down"] == full["bytes_down"] and s["params_sha256"] != full["params_sha256"]
