"""A real Flower deployment on loopback: a SuperLink and 4 SuperNodes as separate processes.

Heavy (minutes: Flower starts a ClientApp process per message and a SuperNode polls every 3 s);
skipped where the ``flower`` extra is not installed. ``hiso flower local`` runs the same thing
from the command line.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from hiso.config import resolve  # noqa: E402
from hiso.deploy.flower import apps  # noqa: E402
from hiso.deploy.flower.local import LocalDeployment, _free_port, descendants  # noqa: E402
from hiso.io import read_jsonl  # noqa: E402
from hiso.runner import Run  # noqa: E402

from helpers import config  # noqa: E402
from test_flower import _held_state_replays_to  # noqa: E402

pytestmark = pytest.mark.heavy

DIGITS = {"name": "digits", "source": "sklearn_digits", "model": "cnn", "alpha": 1.0,
          "eval_size": 100, "dev_size": 50, "batch_size": 16}


def _cfg(port: int, task: str, method: str, rounds: int, **extra) -> dict:
    over = {"method.name": method, "method.perturbations": 5, "federation.clients": 4,
            "federation.sampled": 2, "federation.local_steps": 1, "federation.rounds": rounds,
            "eval.every": rounds, "runtime.threads": 1,
            "federation.flower.superlink": f"127.0.0.1:{port}", **extra}
    cfg = config(**over)
    if task == "digits":
        cfg["task"] = dict(DIGITS)
        cfg["method"].update({"lr": 0.005, "mu": 0.001})
    return cfg


def _flower(cfg: dict) -> dict:
    return {**cfg, "federation": {**cfg["federation"], "backend": "flower"}}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    port = _free_port()
    with LocalDeployment(4, tmp_path_factory.mktemp("deploy"), port) as dep:
        dep.wait_connected(300)
        yield dep, port


@pytest.mark.parametrize("task,method", [("quadratic", "hiso"), ("quadratic", "decomfl"),
                                         ("digits", "hiso"), ("digits", "decomfl")])
def test_loopback_deployment_ends_with_the_in_process_hash(deployment, tmp_path, task, method):
    dep, port = deployment
    cfg = _cfg(port, task, method, rounds=3)
    ref = Run(resolve(cfg), tmp_path / "inprocess", progress=False).execute()
    got = apps.submit(resolve(_flower(cfg)), tmp_path / "flower", progress=False)
    assert got["status"] == "ok" and got["params_sha256"] == ref["params_sha256"]
    assert (tmp_path / "flower" / "ledger.csv").read_text() == (tmp_path / "inprocess" / "ledger.csv").read_text()


def _wait_round(out: Path, r: int, thread, seconds: float = 1800) -> None:
    """Until history.jsonl has committed round r (fails at once if the run ended)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and thread.is_alive():
        if any(h["round"] >= r for h in read_jsonl(out / "history.jsonl")):
            return
        time.sleep(0.5)
    log = out / "flower.log"
    raise AssertionError(f"round {r} not committed ({'run ended' if not thread.is_alive() else 'timeout'}):\n"
                         + (log.read_text() if log.exists() else ""))


def _submit_in_thread(resolved, out):
    result = {}

    def go():
        try:
            result["summary"] = apps.submit(resolved, out, progress=False)
        except Exception as exc:  # noqa: BLE001 (reported by the test)
            result["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    return t, result


def test_killed_supernode_is_dropped_then_catches_up_after_restart(deployment, tmp_path):
    dep, port = deployment
    from hiso.protocol import sample_clients

    # long enough for a slow client on a busy machine; a killed node's messages fail sooner,
    # once the SuperLink has missed its heartbeats
    cfg = _cfg(port, "quadratic", "hiso", rounds=8, **{"federation.flower.round_timeout": 180.0})
    # the client to kill: sampled in round 2 or 3 (so it is missed) and again after round 5
    victim = next(c for c in range(4)
                  if c in sample_clients(cfg["seed"], 2, 4, 2) + sample_clients(cfg["seed"], 3, 4, 2)
                  and any(c in sample_clients(cfg["seed"], r, 4, 2) for r in (6, 7)))
    out = tmp_path / "flower"
    thread, result = _submit_in_thread(resolve(_flower(cfg)), out)
    _wait_round(out, 1, thread)
    dep.kill_node(victim)
    _wait_round(out, 4, thread)
    dep.start_node(victim)
    thread.join()
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["status"] == "ok" and summary["rounds"] == 8
    hist = read_jsonl(out / "history.jsonl")
    missed = [h["round"] for h in hist[2:5] if victim in sample_clients(cfg["seed"], h["round"], 4, 2)]
    assert missed and all(victim not in hist[r]["clients"] for r in missed)
    assert all(len(h["clients"]) == 2 for h in hist[:2])
    log = (out / "flower.log").read_text()
    assert f"client {victim} dropped" in log
    later = [h["round"] for h in hist[5:] if victim in h["clients"]]
    assert later, f"client {victim} never answered after its restart:\n{log}"
    # it caught up by replay in its own process: its held state (the start of its last round)
    # plus the rest of the history is the server's final model, bit for bit
    assert _held_state_replays_to(dep.work / f"node-{victim}", hist, summary["params_sha256"])


def test_killed_serverapp_rerun_resumes_from_history(deployment, tmp_path):
    dep, port = deployment
    cfg = _cfg(port, "quadratic", "hiso", rounds=6)
    ref = Run(resolve(cfg), tmp_path / "inprocess", progress=False).execute()
    out = tmp_path / "flower"
    thread, result = _submit_in_thread(resolve(_flower(cfg)), out)
    _wait_round(out, 2, thread)
    pids = [p for p, cmd in descendants(dep.procs["superlink"].pid).items() if "flwr-serverapp" in cmd]
    assert len(pids) == 1, descendants(dep.procs["superlink"].pid)
    os.kill(pids[0], signal.SIGKILL)
    thread.join()
    assert "error" in result  # the run ended without a summary
    done = len(read_jsonl(out / "history.jsonl"))
    assert 3 <= done < 6
    again = apps.submit(resolve(_flower(cfg)), out, progress=False)
    assert again["status"] == "ok" and again["params_sha256"] == ref["params_sha256"]
    assert [h["round"] for h in read_jsonl(out / "history.jsonl")] == list(range(6))
    assert json.loads((out / "summary.json").read_text())["rounds"] == 6
