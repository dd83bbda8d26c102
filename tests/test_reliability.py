"""Nothing lost, nothing silent: the run directory under concurrent writers, kills, full disks
and damaged files; every bad input a one-line error with exit status 2 and an untouched --out."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hiso.config import resolve
from hiso.jsoncheck import check_tree, loads_strict
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
    """A directory's state: every path with its bytes and mtime (or [] when absent). The lock
    file is left out: a process that gets as far as taking the lock rewrites its pid."""
    if not path.exists():
        return []
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns,
                   p.read_bytes() if p.is_file() else b"") for p in [path, *path.rglob("*")]
                  if p.name != ".hiso.lock")


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
    # steps at which all 120 rounds run (status ok): at the shared 2e-3 these two diverge
    cfg["method"]["lr"] = {"decomfl": 2e-4, "zo_momentum": 5e-5}.get(method, cfg["method"]["lr"])
    return cfg


@pytest.mark.parametrize("method,mode", [("hiso", "faithful"), ("decomfl", "faithful"), ("hiso", "simulation")])
def test_kill9_at_a_random_point_then_resume_gives_the_uninterrupted_hash(tmp_path, method, mode):
    _kill_and_resume(tmp_path, _kill_cfg(method, mode), random.Random(hash((method, mode)) % 1000), 1)


ALL = [(m, mode) for m in ("hiso", "decomfl", "zo_momentum", "mezo") for mode in ("simulation", "faithful")] + \
      [(m, "simulation") for m in ("fedavg", "fedadam", "fedzo")]


@pytest.mark.heavy
@pytest.mark.parametrize("method,mode", ALL)
def test_kill9_ten_times_bit_identical(tmp_path, method, mode):
    """Ten runs, each SIGKILLed one to three times at random CPU-time points (tests/forkrun.py)
    and rerun until it finishes: every one ends with the uninterrupted run's parameter hash,
    byte counts, ledger and history."""
    import forkrun

    rng = random.Random(f"{method}/{mode}")
    cfg = _kill_cfg(method, mode)
    path = write_cfg(tmp_path / "c.yaml", cfg)
    log = tmp_path / "log"
    args = ["run", str(path), "--no-progress", "--out"]
    assert forkrun.hiso([*args, tmp_path / "ref"], log, cpu_file=tmp_path / "cpu") == 0, log.read_text()
    cpu = float((tmp_path / "cpu").read_text())
    ref = json.loads((tmp_path / "ref/summary.json").read_text())
    points = []  # (rounds in history, evaluations in metrics) at each kill
    for i in range(10):
        out = tmp_path / f"k{i}"
        target, kills, limit = rng.randint(1, 3), 0, cpu
        while kills < target:
            code = forkrun.hiso([*args, out], log, kill_after_cpu=rng.uniform(0.001, 1.0) * limit)
            assert code in (0, -signal.SIGKILL), log.read_text()
            if not kills and (out / "summary.json").exists():
                shutil.rmtree(out)  # the first try outlived its kill point: again, earlier
                limit /= 2
                continue
            if code == 0:
                break  # a later try outlived its kill point: the run is done
            kills += 1
            points.append(tuple(len((out / f).read_text().splitlines()) if (out / f).exists() else -1
                                for f in ("history.jsonl", "metrics.jsonl")))
        assert forkrun.hiso([*args, out], log) == 0, log.read_text()
        got = json.loads((out / "summary.json").read_text())
        assert got["status"] == "ok" and got["params_sha256"] == ref["params_sha256"], (i, points)
        assert got["bytes_up"] == ref["bytes_up"] and got["bytes_down"] == ref["bytes_down"]
        for name in ("ledger.csv", "history.jsonl"):
            assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), (i, name)
        m_ref = [{k: v for k, v in json.loads(x).items() if k != "wall_seconds"}
                 for x in (tmp_path / "ref/metrics.jsonl").read_text().splitlines()]
        m_got = [{k: v for k, v in json.loads(x).items() if k != "wall_seconds"}
                 for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert m_got == m_ref, i
    # the points fell in the run, not only in its start: most after its first record
    first_record = 1 if method in ("fedavg", "fedadam", "fedzo") else 0  # metrics or history
    mid = [pt for pt in points if pt[first_record] > 0]
    assert len(mid) >= len(points) // 3, points
    print(f"\n{method}/{mode}: 10/10 bit-identical after {len(points)} kills at (history lines, "
          f"metrics lines) {sorted(points)}; an uninterrupted run took {cpu:.2f} CPU s")


# -- 3. strict JSON -------------------------------------------------------------------------------
def test_every_json_written_parses_strictly_even_with_non_finite_values(tmp_path, monkeypatch):
    from hiso.tasks.quadratic import QuadraticTask

    root = tmp_path / "runs"
    for m in ("hiso", "decomfl", "zo_momentum", "fedavg", "fedadam", "fedzo", "mezo"):
        cfg = config(**{"method.name": m, "federation.rounds": 6, "eval.every": 2})
        if m in ("fedavg", "fedadam", "fedzo", "mezo"):
            cfg["method"] = {"name": m, "lr": 1e-3}
        run(cfg, root / m)
    # a model that blows up: the loss goes to nan, the metric to inf (HiSo's H diagnostics too)
    real_loss, real_eval = QuadraticTask.loss, QuadraticTask.evaluate
    monkeypatch.setattr(QuadraticTask, "loss", lambda self, *a, **k: real_loss(self, *a, **k) * float("nan"))
    monkeypatch.setattr(QuadraticTask, "evaluate",
                        lambda self, *a, **k: {k_: v * float("inf") for k_, v in real_eval(self, *a, **k).items()})
    blown = run(config(**{"eval.every": 1}), root / "blown")
    assert blown["status"] == "diverged" and "written as null" in blown["reason"]
    lines = (root / "blown/metrics.jsonl").read_text().splitlines()
    assert "NaN" not in (root / "blown/summary.json").read_text()
    last = loads_strict(lines[-1])
    assert last["non_finite"] and all(last[k] is None for k in last["non_finite"])
    n_files, n_docs, failures = check_tree(root)
    assert failures == [] and n_files == 8 * 3 and n_docs > 40
    # the script the pipeline's tree is checked with: counts, and every failure named
    (root / "bad").mkdir()
    (root / "bad/summary.json").write_text('{"final_metric": NaN}')
    (root / "bad/metrics.jsonl").write_text('{"round": 0}\n{"round": 1, "f": -Infinity}\n{"round": 2}\n')
    p = subprocess.run([sys.executable, "-m", "hiso.jsoncheck", str(root)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 1, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[:2] == [f"{root}/bad/metrics.jsonl:2: non-standard JSON constant -Infinity",
                         f"{root}/bad/summary.json: non-standard JSON constant NaN"], lines
    assert lines[2] == f"{n_files + 2} JSON files ({n_docs + 2} documents) under {root}: 2 failures"


def test_non_finite_history_scalars_round_trip_exactly():
    from hiso import io

    rec = {"round": 3, "scalars": [[1.5, float("inf")], [float("nan"), -float("inf")]], "train_loss": 2.0}
    line = io.dumps_line(rec)
    loads_strict(line)
    back = io.restore_non_finite(json.loads(line))
    assert back["scalars"][0] == [1.5, float("inf")] and back["scalars"][1][1] == -float("inf")
    assert back["scalars"][1][0] != back["scalars"][1][0]
    assert io.dumps_line({"a": 1.0}) == '{"a": 1.0}\n'  # finite records are unchanged


# -- 4. every bad input: exit 2, one line naming the key or file, no traceback, --out untouched ---
BIG = 10**14
BAD_CONFIG = [  # (dotted overrides of the test config, what the one line must name)
    ({"seed": -1}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": "abc"}, "seed"),
    ({"name": [1, 2]}, "name"),
    ({"sed": 3}, "sed"),
    ({"federation.clients": 0}, "federation.clients"),
    ({"federation.rounds": 0}, "federation.rounds"),
    ({"federation.local_steps": 0}, "federation.local_steps"),
    ({"federation.aggregation": "median"}, "federation.aggregation"),
    ({"federation.backend": "grpc"}, "federation.backend"),
    ({"federation.clients": BIG}, "federation.clients"),
    ({"federation.mode": "faithful", "federation.clients": 10**7, "task.dim": 10**5}, "federation.clients"),
    ({"federation.flower.round_timeout": 0}, "federation.flower.round_timeout"),
    ({"federation.flower.wait_nodes": float("-inf")}, "federation.flower.wait_nodes"),
    ({"eval.every": 0}, "eval.every"),
    ({"eval.divergence_factor": 1.0}, "eval.divergence_factor"),
    ({"eval.divergence_factor": float("inf")}, "eval.divergence_factor"),
    ({"eval.stop_below": 1.5}, "eval.stop_below"),
    ({"eval.save_h": "yes"}, "eval.save_h"),
    ({"runtime.device": "tpu"}, "runtime.device"),
    ({"runtime.forward_dtype": "float8"}, "runtime.forward_dtype"),
    ({"runtime.threads": 0}, "runtime.threads"),
    ({"method.lr": float("inf")}, "method.lr"),
    ({"method.lr": float("nan")}, "method.lr"),
    ({"method.mu": float("-inf")}, "method.mu"),
    ({"method.lr": "1e999"}, "method.lr"),
    ({"method.perturbations": 10**11}, "method.perturbations"),
    ({"method.directions": "uniform"}, "method.directions"),
    ({"method.weight_decay": float("nan")}, "method.weight_decay"),
    ({"task.dim": 0}, "task.dim"),
    ({"task.dim": 10**12}, "task.dim"),
    ({"task.heterogeneity": -0.1}, "task.heterogeneity"),
    ({"task.init_scale": float("inf")}, "task.init_scale"),
    ({"task.structure_seed": 2**64}, "task.structure_seed"),
    ({"task.spectrum.lo": "low"}, "task.spectrum.lo"),
    ({"task.spectrum": 5}, "task.spectrum"),
    ({"task.rotate": True, "task.dim": 10000}, "task.rotate"),
    ({"task.init_dims": 100}, "task.init_dims"),
    ({"task.noise.sigma": float("nan")}, "task.noise.sigma"),
    ({"method": "hiso"}, "method"),
]


def _assert_refused(rc: int, err: str, names: str, out: Path, before: list) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("hiso: error: ") and names in lines[0], err
    assert "Traceback" not in err
    assert tree(out) == before


@pytest.mark.parametrize("overrides,key", BAD_CONFIG, ids=[f"{k}-{i}" for i, (_, k) in enumerate(BAD_CONFIG)])
def test_bad_config_value(tmp_path, capsys, overrides, key):
    from hiso.cli import main

    cfg = config(**overrides)
    if overrides == {"method": "hiso"}:
        cfg["method"] = "hiso"
    path = write_cfg(tmp_path / "c.yaml", cfg)
    out = tmp_path / "run"
    rc = main(["run", str(path), "--out", str(out), "--no-progress"])
    _assert_refused(rc, capsys.readouterr().err, key, out, [])


def _file_cases(tmp_path: Path) -> dict:
    good = yaml.safe_dump(config())
    return {
        "latin1": "# r\xe9sum\xe9\n".encode("latin-1") + good.encode(),
        "binary": b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)),
        "dup-top": (good + "seed: 4\n").encode(),
        "dup-nested": good.replace("lr: 0.002", "lr: 0.002\n  lr: 0.003").encode(),
        "list": b"- 1\n- 2\n",
        "empty": b"",
        "invalid": b"method: [unclosed\n",
        "utf16": good.encode("utf-16"),
    }


FILE_CASES = ["latin1", "binary", "dup-top", "dup-nested", "list", "empty", "invalid", "utf16"]


@pytest.mark.parametrize("case", FILE_CASES)
def test_bad_config_file(tmp_path, capsys, case):
    from hiso.cli import main

    path = tmp_path / f"{case}.yaml"
    path.write_bytes(_file_cases(tmp_path)[case])
    out = tmp_path / "run"
    rc = main(["run", str(path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    _assert_refused(rc, err, path.name, out, [])
    if case.startswith("dup"):
        assert "duplicate key" in err


def _prepared_out(tmp_path: Path, case: str) -> tuple[list[str], Path]:
    """(extra command-line arguments, --out) of a bad command line or run directory."""
    out = tmp_path / "run"
    if case == "out-empty":
        return ["--out", ""], out
    if case == "out-is-file":
        out.write_text("x")
        return ["--out", str(out)], out
    if case == "out-under-file":
        (tmp_path / "f").write_text("x")
        return ["--out", str(tmp_path / "f/run")], out
    if case in ("other-config", "damaged-summary", "damaged-config", "empty-config", "damaged-history"):
        run(config(**{"federation.rounds": 5}), out)
        if case == "other-config":
            return ["--out", str(out), "--set", "method.lr=0.004"], out
        if case == "damaged-summary":
            (out / "summary.json").write_bytes(b"{\"status\": \"ok\", \"ro")
        elif case == "damaged-config":
            (out / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
        elif case == "empty-config":
            (out / "config.yaml").write_text("")
        else:
            (out / "summary.json").unlink()
            lines = (out / "history.jsonl").read_text().splitlines(keepends=True)
            (out / "history.jsonl").write_text(lines[0] + "#damaged\n" + "".join(lines[1:]))
        return ["--out", str(out), "--set", "federation.rounds=5"], out
    if case == "damaged-checkpoint":
        cfg = config(**{"federation.rounds": 5})
        cfg["method"] = {"name": "fedavg", "lr": config()["method"]["lr"]}
        run(cfg, out)
        (out / "summary.json").unlink()
        (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
        return ["--out", str(out), "--set", "federation.rounds=5", "--set", "method.name=fedavg"], out
    if case == "not-a-run":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        return ["--out", str(out)], out
    if case == "lr-from-missing":
        return ["--out", str(out), "--lr-from", str(tmp_path / "sel.json")], out
    if case == "lr-from-damaged":
        (tmp_path / "sel.json").write_text("{not json")
        return ["--out", str(out), "--lr-from", str(tmp_path / "sel.json")], out
    sets = {"set-no-equals": "seed", "set-empty-key": "=3", "set-dup": "method={lr: 1, lr: 2}",
            "set-bad-value": "federation.rounds=ten", "set-through-scalar": "seed.x=1",
            "set-inf": "method.mu=.inf", "set-switch-bad-key": "method.name=fedavg"}
    extra = ["--set", sets[case]]
    if case == "set-switch-bad-key":
        extra += ["--set", "method.perturbations=3"]  # explicit: kept, and fedavg has none
    return ["--out", str(out), *extra], out


CLI_CASES = {  # case: what the one line names
    "out-empty": "--out", "out-is-file": "run", "out-under-file": "f/run", "other-config": "method.lr",
    "damaged-summary": "summary.json", "damaged-config": "config.yaml", "empty-config": "config.yaml",
    "damaged-history": "history.jsonl", "damaged-checkpoint": "checkpoint.pt", "not-a-run": "run", "lr-from-missing": "sel.json",
    "lr-from-damaged": "sel.json", "set-no-equals": "--set seed", "set-empty-key": "empty key",
    "set-dup": "duplicate key", "set-bad-value": "federation.rounds", "set-through-scalar": "seed",
    "set-inf": "method.mu", "set-switch-bad-key": "method.perturbations",
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_command_line_or_run_directory(tmp_path, capsys, case):
    from hiso.cli import main

    path = write_cfg(tmp_path / "c.yaml", config(**{"federation.rounds": 5}))
    extra, out = _prepared_out(tmp_path, case)
    before = tree(out)
    rc = main(["run", str(path), "--no-progress", *extra])
    err = capsys.readouterr().err
    if case in ("set-switch-bad-key", "damaged-checkpoint"):  # the switch's note, then the error
        assert err.startswith("hiso: note: method.name=fedavg"), err
        err = err.split("\n", 1)[1]
    _assert_refused(rc, err, CLI_CASES[case], out, before)


def test_bad_inputs_are_at_least_forty_distinct():
    assert len(BAD_CONFIG) + len(FILE_CASES) + len(CLI_CASES) >= 40


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_is_one_line(tmp_path, capsys):
    from hiso.cli import main

    path = write_cfg(tmp_path / "c.yaml", config(**{"federation.rounds": 3}))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc = main(["run", str(path), "--out", str(ro / "run"), "--no-progress"])
    finally:
        ro.chmod(0o700)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "ro/run" in err and "Traceback" not in err


def test_real_process_bad_inputs_one_line_exit_2(tmp_path):
    """A few of the above through a real process: no traceback reaches the terminal."""
    for name, data in (("b.yaml", b"\x00\x01"), ("d.yaml", b"seed: 1\nseed: 2\n")):
        (tmp_path / name).write_bytes(data)
        p = subprocess.run([sys.executable, "-m", "hiso", "run", str(tmp_path / name), "--out",
                            str(tmp_path / "o")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and name in p.stderr
        assert not (tmp_path / "o").exists()


def test_switching_method_on_the_command_line_drops_the_other_methods_keys(tmp_path, capsys):
    from hiso.cli import main

    path = write_cfg(tmp_path / "c.yaml", config(**{"federation.rounds": 4}))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress",
                 "--set", "method.name=fedavg"]) == 0
    err = capsys.readouterr().err
    assert "hiso: note: method.name=fedavg" in err and "mu, perturbations" in err
    stored = yaml.safe_load((tmp_path / "o/config.yaml").read_text())
    assert stored["method"]["name"] == "fedavg" and "mu" not in stored["method"]


# -- 5. leftovers, permissions, torn appends, a full disk -----------------------------------------
def test_stale_tmp_files_are_removed_and_the_run_resumes(tmp_path):
    cfg = config(**{"federation.rounds": 12})
    ref = run(cfg, tmp_path / "ref")
    out = tmp_path / "run"
    run(cfg, out)
    (out / "summary.json").unlink()
    (out / ".summary.json.1a2b3c4d.tmp").write_text('{"half')
    (out / ".history.jsonl.deadbeef.tmp").write_text("")
    got = run(cfg, out)
    assert got["params_sha256"] == ref["params_sha256"]
    assert not list(out.glob(".*.tmp"))
    # a directory holding only a leftover of its first write is still a fresh one
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".config.yaml.0badf00d.tmp").write_text("name: t\n")
    assert run(cfg, fresh)["params_sha256"] == ref["params_sha256"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        run(config(**{"federation.rounds": 3}), tmp_path / "run")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for p in (tmp_path / "run").iterdir():
        assert p.stat().st_mode & 0o777 == want, (p.name, oct(p.stat().st_mode))


class _FullDisk:
    """A file handle that takes ``budget`` more bytes, then writes part of a line and fails as a
    full disk does (ENOSPC)."""

    def __init__(self, fh, budget: list[int]):
        self.fh, self.budget = fh, budget

    def write(self, s: str) -> int:
        import errno

        if len(s) > self.budget[0]:
            self.fh.write(s[: max(self.budget[0], 0) or len(s) // 2])  # a torn line
            self.fh.flush()
            self.budget[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.fh.name)
        self.budget[0] -= len(s)
        return self.fh.write(s)

    def __getattr__(self, name):
        return getattr(self.fh, name)


@pytest.mark.parametrize("victim,method", [("history.jsonl", "hiso"), ("ledger.csv", "decomfl"),
                                           ("metrics.jsonl", "hiso"), ("ledger.csv", "fedavg")])
def test_full_disk_one_line_then_resume_gives_the_uninterrupted_hash(tmp_path, capsys, monkeypatch, victim, method):
    from hiso.cli import main

    cfg = config(**{"federation.rounds": 30, "method.name": method})
    if method == "fedavg":
        cfg["method"] = {"name": "fedavg", "lr": 1e-3}
    path = write_cfg(tmp_path / "c.yaml", cfg)
    ref = run(cfg, tmp_path / "ref")
    size = (tmp_path / "ref" / victim).stat().st_size
    budget = [size // 2 - (tmp_path / "ref" / victim).read_text().index("\n") - 1]
    real_open = Path.open

    def open_(self, mode="r", *a, **k):
        fh = real_open(self, mode, *a, **k)
        return _FullDisk(fh, budget) if self.name == victim and "a" in mode else fh

    monkeypatch.setattr(Path, "open", open_)
    out = tmp_path / "run"
    rc = main(["run", str(path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err
    assert "Traceback" not in err and victim in err
    assert not (out / victim).read_text().endswith("\n")  # torn
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    monkeypatch.setattr(Path, "open", real_open)
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    got = json.loads((out / "summary.json").read_text())
    assert got["params_sha256"] == ref["params_sha256"] and got["status"] == "ok"
    assert (out / "ledger.csv").read_bytes() == (tmp_path / "ref/ledger.csv").read_bytes()
    assert (out / "history.jsonl").read_bytes() == (tmp_path / "ref/history.jsonl").read_bytes()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (root only; skipped where mounting is refused)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _pages(path: Path) -> int:
    """Bytes a directory's files take on a tmpfs (whole 4 KiB pages)."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


@pytest.mark.heavy
def test_a_real_full_filesystem_mid_run_then_space_freed_resumes_to_the_uninterrupted_hash(tmp_path, small_tmpfs):
    """A real ENOSPC (a 1 MiB tmpfs, a filler file leaving the run half the space its outputs
    take): one line, exit 1, no traceback; delete the filler and the same command finishes with
    the uninterrupted run's hash, ledger, history and metrics."""
    cfg = config(**{"federation.rounds": 400, "eval.every": 20, "method.perturbations": 8})
    path = write_cfg(tmp_path / "c.yaml", cfg)
    ref = run(cfg, tmp_path / "ref")
    need = _pages(tmp_path / "ref") + 4096  # + the lock file
    assert need > 6 * 4096, need  # room for "half" to fall mid-run
    st = os.statvfs(small_tmpfs)
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - need // 2))
    out = small_tmpfs / "run"
    args = ["run", str(path), "--out", str(out), "--no-progress"]
    first = cli(args)
    _, err = first.communicate(timeout=600)
    lines = err.strip().splitlines()
    assert first.returncode == 1, err
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(out) in lines[0], err
    assert "Traceback" not in err
    done = len((out / "history.jsonl").read_text().splitlines())
    assert 0 < done < cfg["federation"]["rounds"], done  # it stopped mid-run
    filler.unlink()
    again = cli(args)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    got = json.loads((out / "summary.json").read_text())
    assert got["status"] == "ok" and got["params_sha256"] == ref["params_sha256"]
    for name in ("ledger.csv", "history.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    strip = lambda d: [{k: v for k, v in json.loads(x).items() if k != "wall_seconds"}  # noqa: E731
                       for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(out) == strip(tmp_path / "ref")
    print(f"\nfull tmpfs: stopped after {done}/{cfg['federation']['rounds']} rounds with: {lines[0]}")


def test_a_crash_is_recorded_as_failed_one_line_exit_1_and_a_rerun_retries(tmp_path, capsys, monkeypatch):
    from hiso.cli import main
    from hiso.protocol import ZOFederation

    cfg = config(**{"federation.rounds": 10})
    path = write_cfg(tmp_path / "c.yaml", cfg)
    real = ZOFederation.run_round

    def boom(self, r):
        if r == 6:
            raise RuntimeError("simulated crash\nsecond line")
        return real(self, r)

    monkeypatch.setattr(ZOFederation, "run_round", boom)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "simulated crash second line" in err, err
    s = loads_strict((out / "summary.json").read_text())
    assert s["status"] == "failed" and "RuntimeError: simulated crash" in s["error"]
    assert "Traceback" in s["traceback"] and s["rounds"] == 5
    monkeypatch.setattr(ZOFederation, "run_round", real)
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["params_sha256"] == run(cfg, tmp_path / "ref")["params_sha256"]


# -- 6. a failed run in a pipeline ----------------------------------------------------------------
@pytest.mark.parametrize("where", ["first evaluation", "round 7"])
def test_failed_ok_lets_a_pipeline_go_on_and_readers_take_the_failed_run(tmp_path, capsys, monkeypatch, where):
    from hiso.cli import main
    from hiso.protocol import ZOFederation
    from hiso.tasks.quadratic import QuadraticTask

    path = write_cfg(tmp_path / "c.yaml", config(**{"federation.rounds": 10}))
    assert main(["run", str(path), "--out", str(tmp_path / "ok"), "--no-progress"]) == 0
    real_round, real_eval = ZOFederation.run_round, QuadraticTask.evaluate

    def boom_round(self, r):
        if r == 7:
            raise FloatingPointError("simulated")
        return real_round(self, r)

    def boom_eval(self, *a, **k):
        raise FloatingPointError("simulated")

    if where == "round 7":
        monkeypatch.setattr(ZOFederation, "run_round", boom_round)
    else:
        monkeypatch.setattr(QuadraticTask, "evaluate", boom_eval)
    bad = tmp_path / "bad"
    assert main(["run", str(path), "--out", str(bad), "--no-progress", "--set", "seed=5", "--failed-ok"]) == 0
    monkeypatch.undo()
    assert json.loads((bad / "summary.json").read_text())["status"] == "failed"
    # the pipeline's next step reads it: evaluations before the crash are kept and marked
    # failed; a run with none is left out with a note
    capsys.readouterr()
    csv = tmp_path / "metrics.csv"
    assert main(["aggregate", str(tmp_path / "ok/summary.json"), str(bad / "summary.json"), "--out", str(csv)]) == 0
    text, err = csv.read_text(), capsys.readouterr().err
    assert (",failed," in text) == (where == "round 7") and ",ok," in text
    assert ("failed before its first evaluation" in err) == (where != "round 7")
    # rerunning it by hand retries it
    assert main(["run", str(path), "--out", str(bad), "--no-progress", "--set", "seed=5"]) == 0
    assert json.loads((bad / "summary.json").read_text())["status"] == "ok"


QUAD = {"name": "quadratic", "seed": 0,
        "task": {"name": "quadratic", "dim": 2000, "spectrum": {"kind": "lognormal_condition", "condition": 10.0}},
        "method": {"name": "decomfl", "lr": 0.0007, "mu": 0.00001, "perturbations": 5},
        "federation": {"clients": 6, "sampled": 2, "local_steps": 1, "rounds": 600},
        "eval": {"every": 50}}


def _pipeline(wd: Path, *extra: str) -> list[str]:
    """The engine demo's table (configs/pipeline.yaml's quadratic_demo, 2 methods x 2 seeds of a
    smaller quadratic) in the work directory ``wd``, which holds a link to configs/."""
    if not (wd / "configs").exists():
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "configs").symlink_to(ROOT / "configs")
        write_cfg(wd / "quad.yaml", QUAD)
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(wd),
            "--cores", "2", "paper_tables/quadratic_demo.csv", *extra, "--config",
            "quadratic_demo={config: quad.yaml, seeds: [0, 1], methods: {decomfl: [], hiso: [method.nu=0.95]}}"]


PIPE_RUNS = [f"results/quadratic_demo/{m}/seed{s}" for m in ("decomfl", "hiso") for s in (0, 1)]


@pytest.mark.heavy
def test_snakemake_pipeline_killed_mid_way_and_rerun_gives_the_uninterrupted_outputs(tmp_path):
    """SIGKILL to the whole process group of a running pipeline (snakemake and its `hiso run`
    jobs) at a random round of a random run; `snakemake --unlock`, then the same target with
    --rerun-incomplete: every run's hash, ledger and history, the aggregated metrics (less wall
    seconds) and the table equal an uninterrupted pipeline's."""
    pytest.importorskip("snakemake")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref, wd = tmp_path / "ref", tmp_path / "killed"
    p = subprocess.run(_pipeline(ref), env=env, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-3000:]
    rng = random.Random(12)
    victim, at = wd / rng.choice(PIPE_RUNS) / "history.jsonl", rng.randint(1, QUAD["federation"]["rounds"] // 2)
    proc = subprocess.Popen(_pipeline(wd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 3600
    while not (victim.exists() and len(victim.read_text().splitlines()) >= at):
        assert proc.poll() is None, f"pipeline ended before the kill: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [r for r in PIPE_RUNS if (wd / r / "summary.json").exists()]
    started = [r for r in PIPE_RUNS if (wd / r / "history.jsonl").exists()]
    assert len(done) < len(PIPE_RUNS) and not (wd / "paper_tables/quadratic_demo.csv").exists()
    unlock = subprocess.run(_pipeline(wd, "--unlock"), env=env, capture_output=True, text=True, timeout=600)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    again = subprocess.run(_pipeline(wd, "--rerun-incomplete"), env=env, capture_output=True, text=True,
                           timeout=3600)
    assert again.returncode == 0, again.stderr[-3000:]
    for r in PIPE_RUNS:
        got, want = (json.loads((d / r / "summary.json").read_text()) for d in (wd, ref))
        assert got["params_sha256"] == want["params_sha256"] and got["status"] == "ok", r
        for name in ("ledger.csv", "history.jsonl"):
            assert (wd / r / name).read_bytes() == (ref / r / name).read_bytes(), (r, name)
    import pandas as pd

    metrics = [pd.read_csv(d / "results/quadratic_demo/metrics.csv").drop(columns="wall_seconds")
               for d in (wd, ref)]
    pd.testing.assert_frame_equal(*metrics)
    for table in ("paper_tables/quadratic_demo.csv", "paper_tables/quadratic_demo.md"):
        assert (wd / table).read_bytes() == (ref / table).read_bytes(), table
    n_files, _, failures = check_tree(wd / "results")  # and every JSON file parses strictly
    assert failures == [] and n_files == 3 * len(PIPE_RUNS), (n_files, failures)
    print(f"\nsnakemake killed at round {at} of {victim.parent.relative_to(wd)}: {len(done)} runs done, "
          f"{len(started) - len(done)} killed mid-run, {len(PIPE_RUNS) - len(started)} not started; "
          f"rerun gave the uninterrupted hashes and tables")


# -- 7. offline text data without the offline variables ---------------------------------------
def test_text_data_without_offline_variables_loads_or_fails_within_seconds(tmp_path):
    """A fresh interpreter with no HF_*_OFFLINE set: local files load, a missing hub data set is a
    one-line error saying what to set, each within seconds (not the hub client's minute of
    retries). Where the hub is reachable only the local-file half is meaningful."""
    import textwrap

    from hiso.text.fixtures import write_task_files

    write_task_files("sst2", tmp_path / "data", 8, 0)
    code = textwrap.dedent(f"""
        import time
        from hiso.errors import UserError
        from hiso.text.data import load_examples, hub_reachable
        from hiso.text.templates import get_task
        import datasets  # import cost is not part of the budget
        t = time.perf_counter()
        n = len(load_examples(get_task("sst2"), "train", data_dir={str(tmp_path / 'data')!r}))
        print(n, f"{{time.perf_counter() - t:.3f}}")
        t = time.perf_counter()
        try:
            load_examples(get_task("sst2"), "train")
            print("loaded")
        except UserError as e:
            print(f"{{time.perf_counter() - t:.3f}}", hub_reachable())
            print(e)
    """)
    env = {k: v for k, v in os.environ.items() if "OFFLINE" not in k}
    env.update({"HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)})
    env.pop("HF_DATASETS_CACHE", None)
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) >= 2, out.stdout + out.stderr
    n, seconds = lines[0].split()
    assert int(n) == 8 and float(seconds) < 10.0, lines
    if lines[1] != "loaded" and lines[1].split()[1] == "False":
        assert float(lines[1].split()[0]) < 15.0, lines
        assert "HF_HUB_OFFLINE=1" in lines[2] and "nyu-mll/glue" in lines[2]


def test_tokenizer_that_encodes_to_nothing_is_one_line_naming_folder_and_class(tmp_path, monkeypatch):
    import transformers

    from hiso.errors import UserError
    from hiso.models import ModelSource, load_tokenizer

    class Qwen2TokenizerFast:  # stands in for the substituted class: every text -> no ids
        pad_token_id, eos_token_id = 0, 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": []}

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Qwen2TokenizerFast())
    folder = tmp_path / "qwen2-local"
    with pytest.raises(UserError) as info:
        load_tokenizer(ModelSource("qwen2-local", str(folder), True))
    msg = str(info.value)
    assert "\n" not in msg and str(folder) in msg and "Qwen2TokenizerFast" in msg and "no tokens" in msg
