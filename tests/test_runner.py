"""Run directories: determinism, resume after SIGKILL, idempotence, refusal, convergence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hiso.config import resolve
from hiso.errors import UserError
from hiso.runner import Run

from helpers import config

ROOT = Path(__file__).resolve().parents[1]


def run(cfg: dict, out: Path) -> dict:
    return Run(resolve(cfg), out, progress=False).execute()


def metrics_without_wall(path: Path) -> list[dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:
        r.pop("wall_seconds")
    return recs


@pytest.mark.parametrize("method", ["hiso", "decomfl", "zo_momentum", "fedavg", "fedadam", "fedzo", "mezo"])
def test_same_config_and_seed_give_identical_metrics(tmp_path, method):
    cfg = config(**{"method.name": method, "method.lr": 1e-3})
    if method in ("fedavg", "fedadam", "fedzo", "mezo"):
        cfg["method"] = {"name": method, "lr": 1e-3}
    a, b = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
    assert a["params_sha256"] == b["params_sha256"]
    assert metrics_without_wall(tmp_path / "a/metrics.jsonl") == metrics_without_wall(tmp_path / "b/metrics.jsonl")
    # byte-identical once the wall times are blanked
    strip = lambda p: "\n".join(line.split('"wall_seconds"')[0] for line in p.read_text().splitlines())
    assert strip(tmp_path / "a/metrics.jsonl") == strip(tmp_path / "b/metrics.jsonl")
    assert (tmp_path / "a/history.jsonl").read_bytes() == (tmp_path / "b/history.jsonl").read_bytes()
    assert a["status"] == "ok" and a["rounds"] == 20
    c = run({**cfg, "seed": cfg["seed"] + 1}, tmp_path / "c")
    assert c["params_sha256"] != a["params_sha256"]


def test_fedavg_uplink_is_a_full_vector_and_zo_uplink_is_scalars(tmp_path):
    d = 64
    fa = run({**config(), "method": {"name": "fedavg", "lr": 1e-2}}, tmp_path / "fa")
    zo = run(config(), tmp_path / "zo")
    rows = (tmp_path / "fa/ledger.csv").read_text().splitlines()[1:]
    ups = [int(r.split(",")[4]) for r in rows if ",up," in r]
    assert len(ups) == 20 * 2 and min(ups) >= 4 * d
    zrows = (tmp_path / "zo/ledger.csv").read_text().splitlines()[1:]
    zups = [int(r.split(",")[4]) for r in zrows if ",up," in r]
    tau, P = 2, 3
    assert len(zups) == 40 and max(zups) <= 4 * tau * P + 16
    assert zo["bytes_up"] == sum(zups) and fa["bytes_up"] == sum(ups)


def test_mezo_is_centralised(tmp_path):
    s = run({**config(), "method": {"name": "mezo", "lr": 1e-3}}, tmp_path / "m")
    cfg = yaml.safe_load((tmp_path / "m/config.yaml").read_text())
    assert cfg["federation"]["clients"] == 1 and cfg["federation"]["sampled"] == 1
    assert s["status"] == "ok"


@pytest.mark.parametrize("method", ["decomfl", "hiso"])
def test_d1000_quadratic_reduced_100_fold(tmp_path, method):
    cfg = yaml.safe_load((ROOT / "configs/quadratic.yaml").read_text())
    cfg["method"]["name"] = method
    cfg["eval"] = {"every": 10, "stop_below": 0.01}
    s = run(cfg, tmp_path / method)
    first = json.loads((tmp_path / method / "metrics.jsonl").read_text().splitlines()[0])
    assert cfg["task"]["dim"] == 1000
    assert s["status"] == "ok"
    assert s["final_metric"] <= first["f_gap"] / 100, (s["final_metric"], first["f_gap"])


def test_finished_run_is_left_alone_and_other_config_refused(tmp_path):
    cfg = config()
    s1 = run(cfg, tmp_path / "r")
    stamp = (tmp_path / "r/summary.json").stat().st_mtime_ns
    s2 = run(cfg, tmp_path / "r")
    assert s2 == s1 and (tmp_path / "r/summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match=r"another config \(differs at method.lr\)"):
        run(config(**{"method.lr": 5e-3}), tmp_path / "r")


@pytest.mark.parametrize("extra", [{}, {"method.h_source": "every_step", "method.weight_decay": 0.05}])
def test_resume_from_truncated_files_matches_uninterrupted(tmp_path, extra):
    cfg = config(**{"federation.rounds": 30, **extra})
    full = run(cfg, tmp_path / "full")
    part = tmp_path / "part"
    run(cfg, part)
    # simulate a kill after round 17: torn history line, metrics beyond it, no summary
    hist = (part / "history.jsonl").read_text().splitlines(keepends=True)
    (part / "history.jsonl").write_text("".join(hist[:17]) + hist[17][:25])
    (part / "summary.json").unlink()
    resumed = run(cfg, part)
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["bytes_up"] == full["bytes_up"] and resumed["bytes_down"] == full["bytes_down"]
    assert metrics_without_wall(part / "metrics.jsonl") == metrics_without_wall(tmp_path / "full/metrics.jsonl")
    assert (part / "ledger.csv").read_text() == (tmp_path / "full/ledger.csv").read_text()


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "hiso", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("method", ["hiso", "fedavg"])
def test_sigkill_then_rerun_gives_the_uninterrupted_hash(tmp_path, method):
    cfg = config(**{"task.dim": 20000, "task.heterogeneity": 0.0, "federation.rounds": 300,
                    "eval.every": 20, "federation.local_steps": 1})
    if method == "fedavg":
        cfg["method"] = {"name": "fedavg", "lr": 1e-3}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ref = run(cfg, tmp_path / "ref")
    out = tmp_path / "killed"
    proc = _cli(["run", str(path), "--out", str(out), "--no-progress"])
    marker = out / ("history.jsonl" if method == "hiso" else "checkpoint.pt")
    deadline = time.time() + 120
    while time.time() < deadline:
        if marker.exists() and (method != "hiso" or len(marker.read_text().splitlines()) >= 60):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "run finished before it could be killed"
    again = _cli(["run", str(path), "--out", str(out), "--no-progress"])
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert json.loads((out / "summary.json").read_text())["params_sha256"] == ref["params_sha256"]


def test_device_auto_is_recorded_resolved_and_rerun_is_a_no_op(tmp_path):
    cfg = config(**{"runtime.device": "auto", "federation.rounds": 3})
    s1 = run(cfg, tmp_path / "r")
    stored = yaml.safe_load((tmp_path / "r/config.yaml").read_text())
    assert stored["runtime"]["device"] in ("cpu", "cuda")
    assert run(cfg, tmp_path / "r") == s1


def test_runtime_threads_apply_during_the_run_and_are_given_back(tmp_path, monkeypatch):
    import torch

    from hiso.protocol import ZOFederation

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    seen = []
    original = ZOFederation.run_round

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ZOFederation, "run_round", spy)
    run(config(**{"runtime.threads": want, "federation.rounds": 3}), tmp_path / "r")
    assert seen == [want] * 3
    assert torch.get_num_threads() == before
