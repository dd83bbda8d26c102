"""Bad input: exit 2, one line naming the key or file, no traceback, nothing written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hiso.cli import main

from helpers import config

ROOT = Path(__file__).resolve().parents[1]

BAD = [
    ({"method.name": "adamw"}, "method.name"),
    ({"task.name": "mnist3d"}, "task.name"),
    ({"method.lrr": 0.1}, "method.lrr"),
    ({"federation.sampeld": 1}, "federation.sampeld"),
    ({"method.lr": "fast"}, "method.lr"),
    ({"federation.clients": 2.5}, "federation.clients"),
    ({"federation.sampled": 9, "federation.clients": 3}, "federation.sampled"),
    ({"method.perturbations": 0}, "method.perturbations"),
    ({"method.lr": 0.0}, "method.lr"),
    ({"method.lr": -1e-3}, "method.lr"),
    ({"method.mu": 0}, "method.mu"),
    ({"method.nu": 1.5}, "method.nu"),
    ({"federation.mode": "fast"}, "federation.mode"),
    ({"task.spectrum.kind": "cauchy"}, "task.spectrum.kind"),
    ({"method.name": "hiso", "method.nu": 0.0, "method.eps": 0.0}, "method.eps"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_exit_2_one_line_no_output(tmp_path, capsys, overrides, key):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config(**overrides)))
    out = tmp_path / "run"
    assert main(["run", str(cfg_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hiso: error: ") and key in lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_set_override_errors_name_the_key(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    assert main(["run", str(cfg_path), "--out", str(tmp_path / "o"), "--set", "method.nope=1"]) == 2
    assert "method.nope" in capsys.readouterr().err
    assert main(["check", str(cfg_path), "--set", "federation.rounds=ten"]) == 2
    assert "federation.rounds" in capsys.readouterr().err


def test_missing_and_broken_config_files(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "none.yaml" in err and "not found" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed\n")
    assert main(["check", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_other_config_in_run_dir_is_refused_with_exit_2(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config(**{"federation.rounds": 3})))
    out = tmp_path / "o"
    assert main(["run", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    assert main(["run", str(cfg_path), "--out", str(out), "--set", "seed=9"]) == 2
    assert "differs at seed" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


def test_real_process_exit_status_and_stderr(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "hiso", "run", str(tmp_path / "x.yaml"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "x.yaml" in p.stderr
    h = subprocess.run([sys.executable, "-m", "hiso", "run", "--help"], capture_output=True, text=True, env=env)
    assert h.returncode == 0 and "--set" in h.stdout and "resumes" in h.stdout
