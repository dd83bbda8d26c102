"""Model loading (hiso.models): local directories, hub-cache names, fast and clear offline failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hiso import models
from hiso.errors import UserError
from hiso.text import fixtures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny OPT + tokenizer written with save_pretrained (what the CPU tier builds)."""
    path = tmp_path_factory.mktemp("tiny_lm")
    models.build_tiny(path, task="synthetic", seed=0, hidden=16, layers=1, ffn=32, max_pos=32)
    return path


def _hub_cache(root: Path, repo: str, src: Path) -> Path:
    """Lay ``src``'s files out as the hub cache does (models--org--name/snapshots/<rev>)."""
    commit = "0" * 40
    base = root / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    for f in src.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    return root


def test_local_directory_round_trip_gives_the_same_model(tiny_dir):
    model, tok, src = models.load_causal_lm(str(tiny_dir))
    assert src.local_only and src.path == str(tiny_dir)
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    again = fixtures.build_tiny_opt(tok, None, seed=0, hidden=16, layers=1, ffn=32, max_pos=32)
    for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), n
    ids = torch.tensor([tok("the movie was good It was")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_hub_name_loads_from_the_cache_through_the_same_path(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _hub_cache(tmp_path / "hub", "hiso-test/tiny-opt", tiny_dir)
    model, tok, src = models.load_causal_lm("hiso-test/tiny-opt", cache_dir=str(cache))
    assert src.path == "hiso-test/tiny-opt" and src.local_only
    ref, _, _ = models.load_causal_lm(str(tiny_dir))
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_offline_without_cache_fails_fast_naming_model_and_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))
    t0 = time.perf_counter()
    with pytest.raises(UserError) as info:
        models.load_causal_lm("facebook/opt-125m", cache_dir=str(tmp_path / "empty_cache"))
    assert time.perf_counter() - t0 < 5.0
    msg = str(info.value)
    assert "facebook/opt-125m" in msg and "HF_HOME" in msg and "local directory" in msg
    assert "\n" not in msg


def test_unreachable_hub_fails_fast_too(tmp_path, monkeypatch):
    """Not declared offline, but nothing answers: no minute of retries."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="cannot be reached"):
        models.resolve_source("facebook/opt-350m", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 5.0


def test_bad_local_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        models.resolve_source(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        models.resolve_source(str(tmp_path / "empty"))


def test_cli_run_offline_fails_in_one_line_with_status_2(tmp_path):
    """The whole command fails with one line naming the model (its speed is measured in-process
    above: a cold interpreter's torch import on a loaded machine is not what is under test)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: {name: lm, model: facebook/opt-125m, dataset: synthetic, n_train: 12,"
                   " n_dev: 2, n_eval: 4}\nmethod: {name: decomfl}\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-m", "hiso", "run", str(cfg), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 2
    assert "facebook/opt-125m" in out.stderr and out.stderr.strip().count("\n") == 0
    assert not (tmp_path / "r").exists()
