"""The reproduce-all manifest says which code, packages and machine made its artefacts."""

import hashlib
import subprocess
from importlib import metadata

import pytest

from hiso.cli import main
from hiso.provenance import git_state, installed_packages, provenance


def _manifest(tmp_path, capsys, *files, tier="cpu"):
    out = tmp_path / "manifest"
    assert main(["manifest", *map(str, files), "--tier", tier, "--out", str(out)]) == 0
    return out.read_text()


def test_manifest_records_tier_commit_versions_device_and_hashes(tmp_path, capsys):
    art = tmp_path / "table.md"
    art.write_text("| a |\n")
    text = _manifest(tmp_path, capsys, art, tier="pretrained")
    header = dict(line[2:].split(": ", 1) for line in text.splitlines()
                  if line.startswith("# ") and ": " in line)
    assert header["tier"] == "pretrained"
    assert header["python"].count(".") == 2
    assert header["device"].startswith(("CPU: ", "GPU: "))
    for pkg in ("torch", "transformers", "datasets", "numpy", "snakemake"):
        assert header[pkg] == metadata.version(pkg)
    everything = dict(p.split("==") for p in header["all packages"].split())
    assert everything["pyyaml"] == metadata.version("pyyaml")
    digest = hashlib.sha256(art.read_bytes()).hexdigest()
    assert text.splitlines()[-1].split() == [digest, "6", str(art)]


def test_git_state_commit_and_dirty_flag(tmp_path):
    assert git_state(tmp_path) == "unknown"
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    assert git_state(tmp_path) == head
    (tmp_path / "new.py").write_text("")  # untracked code changes results too
    assert git_state(tmp_path) == f"{head} (dirty)"


def test_provenance_needs_no_tier_and_lists_every_distribution():
    rows = dict(provenance())
    assert "tier" not in rows
    assert len(installed_packages()) == len(rows["all packages"].split())


def test_missing_artefact_is_one_line_exit_2(tmp_path, capsys):
    assert main(["manifest", str(tmp_path / "nope.md"), "--out", str(tmp_path / "m")]) == 2
    assert "nope.md: artefact missing" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
