"""Nothing lost, nothing silent: the run directory under concurrent writers, kills, full disks
and damaged files; every bad input a one-line error with exit status 2 and an untouched --out."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hiso.config import resolve
from hiso.runner import Run

from helpers import config

ROOT = Path(__file__).resolve().parents[1]


def run(cfg: dict, out: Path) -> dict:
    return Run(resolve(cfg), out, progress=False).execute()


def cli(args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "hiso", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def tree(path: Path) -> list[tuple]:
    """A directory's state: every path with its bytes and mtime (or [] when absent)."""
    if not path.exists():
        return []
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns,
                   p.read_bytes() if p.is_file() else b"") for p in [path, *path.rglob("*")])


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path.name} had {n} lines: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


SLOW = {"task.dim": 20000, "task.heterogeneity": 0.0, "federation.rounds": 300, "eval.every": 20,
        "federation.local_steps": 1}


# -- 1. one writer per run directory ------------------------------------------------------------
def test_second_process_on_a_running_directory_is_refused_naming_the_holder(tmp_path):
    cfg = config(**SLOW)
    path = write_cfg(tmp_path / "c.yaml", cfg)
    out = tmp_path / "run"
    first = cli(["run", str(path), "--out", str(out), "--no-progress"])
    wait_for_lines(out / "history.jsonl", 10, first)
    # Stopped, the first run holds its lock for as long as the others take to start, however
    # fast its rounds are on this machine.
    first.send_signal(signal.SIGSTOP)
    second = cli(["run", str(path), "--out", str(out), "--no-progress"])
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and str(out) in lines[0], err
    # a second process with another config is refused too, whichever check it meets first
    other = cli(["run", str(path), "--out", str(out), "--no-progress", "--set", "seed=4"])
    _, err2 = other.communicate(timeout=120)
    assert other.returncode == 2 and len(err2.strip().splitlines()) == 1, err2
    first.send_signal(signal.SIGCONT)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    ref = run(cfg, tmp_path / "ref")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params_sha256"] == ref["params_sha256"]
    assert (out / "history.jsonl").read_bytes() == (tmp_path / "ref/history.jsonl").read_bytes()
    assert (out / "ledger.csv").read_bytes() == (tmp_path / "ref/ledger.csv").read_bytes()


def test_two_runs_started_together_with_different_configs_one_wins_intact(tmp_path):
    cfgs = [config(**{**SLOW, "federation.rounds": 60}), config(**{**SLOW, "federation.rounds": 60, "seed": 8})]
    paths = [write_cfg(tmp_path / f"c{i}.yaml", c) for i, c in enumerate(cfgs)]
    out = tmp_path / "run"
    procs = [cli(["run", str(p), "--out", str(out), "--no-progress"]) for p in paths]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    winner = [i for i, (rc, _) in enumerate(results) if rc == 0][0]
    ref = run(cfgs[winner], tmp_path / "ref")
    assert json.loads((out / "summary.json").read_text())["params_sha256"] == ref["params_sha256"]
    assert yaml.safe_load((out / "config.yaml").read_text()) == yaml.safe_load((tmp_path / "ref/config.yaml").read_text())
    assert (out / "history.jsonl").read_bytes() == (tmp_path / "ref/history.jsonl").read_bytes()


# -- 2. kill -9 at random points, both federation modes -------------------------------------------
def _kill_and_resume(tmp_path: Path, cfg: dict, rng: random.Random, repeats: int) -> None:
    path = write_cfg(tmp_path / "c.yaml", cfg)
    ref = run(cfg, tmp_path / "ref")
    vector = cfg["method"]["name"] in ("fedavg", "fedadam", "fedzo")
    rounds = cfg["federation"]["rounds"]
    for i in range(repeats):
        out = tmp_path / f"k{i}"
        # a random number of kills, each at a random point of the remaining rounds
        for _ in range(rng.randint(1, 2)):
            proc = cli(["run", str(path), "--out", str(out), "--no-progress"])
            if vector:
                # vector methods resume from their evaluation checkpoint: kill after the metrics
                # line of a random evaluation (and wherever the next one has got to)
                wait_for_lines(out / "metrics.jsonl", rng.randint(1, rounds // cfg["eval"]["every"] - 1), proc)
                time.sleep(rng.random() * 0.3)
            else:
                wait_for_lines(out / "history.jsonl", rng.randint(1, rounds - 10), proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if (out / "summary.json").exists():
                break
        again = cli(["run", str(path), "--out", str(out), "--no-progress"])
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
        got = json.loads((out / "summary.json").read_text())
        assert got["params_sha256"] == ref["params_sha256"], (i, err)
        assert got["bytes_up"] == ref["bytes_up"] and got["bytes_down"] == ref["bytes_down"]
        assert (out / "ledger.csv").read_bytes() == (tmp_path / "ref/ledger.csv").read_bytes()


def _kill_cfg(method: str, mode: str) -> dict:
    cfg = config(**{**SLOW, "task.dim": 4000, "federation.rounds": 120, "federation.mode": mode,
                    "federation.local_steps": 2, "method.name": method})
    if method in ("fedavg", "fedadam", "fedzo", "mezo"):
        cfg["method"] = {"name": method, "lr": 1e-3}
    return cfg


@pytest.mark.parametrize("method,mode", [("hiso", "faithful"), ("decomfl", "faithful"), ("hiso", "simulation")])
def test_kill9_at_a_random_point_then_resume_gives_the_uninterrupted_hash(tmp_path, method, mode):
    _kill_and_resume(tmp_path, _kill_cfg(method, mode), random.Random(hash((method, mode)) % 1000), 1)


ALL = [(m, mode) for m in ("hiso", "decomfl", "zo_momentum", "mezo") for mode in ("simulation", "faithful")] + \
      [(m, "simulation") for m in ("fedavg", "fedadam", "fedzo")]


@pytest.mark.heavy
@pytest.mark.parametrize("method,mode", ALL)
def test_kill9_ten_times_bit_identical(tmp_path, method, mode):
    _kill_and_resume(tmp_path, _kill_cfg(method, mode), random.Random(11), 10)
