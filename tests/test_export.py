"""hiso export / hiso pack: a run's final model rebuilt from base + history, hash-checked."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

from hiso import export, io, models
from hiso.cli import main
from hiso.config import resolve
from hiso.runner import Run
from hiso.zo import params_sha256

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(cfg: dict, out: Path) -> dict:
    return Run(resolve(cfg), out, progress=False).execute()


def digits(method: dict, rounds: int = 6) -> dict:
    return {"name": "t", "seed": 1, "task": {"name": "digits", "source": "sklearn_digits"},
            "method": method,
            "federation": {"clients": 64, "sampled": 4, "local_steps": 1, "rounds": rounds},
            "eval": {"every": 3}}


ZO = {"lr": 0.005, "mu": 1e-3, "perturbations": 2}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny OPT trained 30 HiSo rounds on the synthetic task (the smoke tier's shape)."""
    root = tmp_path_factory.mktemp("export_lm")
    model = models.build_tiny(root / "tiny", "synthetic", hidden=16, layers=1, ffn=32, max_pos=32)
    cfg = {"name": "t", "seed": 0,
           "task": {"name": "lm", "model": str(model), "dataset": "synthetic", "n_train": 120,
                    "n_dev": 20, "n_eval": 60, "batch_size": 16, "max_length": 32,
                    "eval_batch_size": 60},
           "method": {"name": "hiso", "lr": 0.01, "mu": 1e-3, "perturbations": 5},
           "federation": {"clients": 6, "sampled": 2, "local_steps": 1, "rounds": 30},
           "eval": {"every": 30}}
    summary = run(cfg, root / "run")
    return root / "run", cfg, summary


def test_digits_export_reproduces_the_recorded_hash(tmp_path):
    s = run(digits({"name": "hiso", **ZO}), tmp_path / "r")
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "m")]) == 0
    tensors = io.read_tensors(tmp_path / "m" / "model.safetensors")
    assert len(tensors) == 1 and tensors[0].numel() == s["num_params"] == 1898
    assert params_sha256(tensors) == s["params_sha256"]
    rec = json.loads((tmp_path / "m" / "export.json").read_text())
    assert rec["rounds"] == 6 and rec["params_sha256"] == s["params_sha256"]
    # the model moved: the export is not the initial model
    r = resolve(digits({"name": "hiso", **ZO}))
    x0 = r.task_cls(r.task_cfg, 64, 1).init_params()
    assert params_sha256(x0) != s["params_sha256"]


def test_mismatching_hash_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    run(digits({"name": "decomfl", **ZO}), tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    summary["params_sha256"] = "0" * 64
    (tmp_path / "r" / "summary.json").write_text(json.dumps(summary))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hash" in err and "nothing written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no m, no temp dir


def test_refuses_unfinished_runs_and_non_empty_outputs(tmp_path, capsys):
    run(digits({"name": "decomfl", **ZO}), tmp_path / "r")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "x").read_text() == "keep"
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    (tmp_path / "r" / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "m")]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_first_order_runs_keep_their_final_parameters_and_export(tmp_path, name):
    s = run(digits({"name": name, "lr": 0.1}), tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    assert params_sha256(io.read_tensors(tmp_path / "r" / "final.safetensors")) == s["params_sha256"]
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "m")]) == 0
    assert params_sha256(io.read_tensors(tmp_path / "m" / "model.safetensors")) == s["params_sha256"]
    assert main(["pack", str(tmp_path / "r"), "--out", str(tmp_path / "p.xz")]) == 2


def test_pack_rebuilds_the_same_model_and_checks_its_base(tmp_path, capsys):
    s = run(digits({"name": "hiso", **ZO}, rounds=9), tmp_path / "r")
    assert main(["pack", str(tmp_path / "r"), "--out", str(tmp_path / "r.pack")]) == 0
    doc = json.loads(lzma.decompress((tmp_path / "r.pack").read_bytes()))
    assert doc["history"]["rounds"] == 9 and doc["final"]["params_sha256"] == s["params_sha256"]
    assert doc["config"]["method"]["name"] == "hiso" and doc["code"]["hiso"]
    # 9 rounds x 2 scalars: float32 bytes, not the run's directory
    assert (tmp_path / "r.pack").stat().st_size < 4000
    assert main(["export", str(tmp_path / "r.pack"), "--out", str(tmp_path / "m")]) == 0
    assert params_sha256(io.read_tensors(tmp_path / "m" / "model.safetensors")) == s["params_sha256"]
    # another base (the pack's config with another init seed) is refused before any replay
    doc["config"]["seed"] = 2
    (tmp_path / "bad.pack").write_bytes(lzma.compress(json.dumps(doc).encode()))
    assert main(["export", str(tmp_path / "bad.pack"), "--out", str(tmp_path / "m2")]) == 2
    assert "base model" in capsys.readouterr().err and not (tmp_path / "m2").exists()
    (tmp_path / "junk.pack").write_bytes(b"\xfd7zXZ\x00garbage")
    assert main(["export", str(tmp_path / "junk.pack"), "--out", str(tmp_path / "m3")]) == 2


def test_lm_export_loads_with_from_pretrained_and_scores_as_the_run(lm_run, tmp_path):
    from transformers import AutoModelForCausalLM

    d, cfg, s = lm_run
    assert s["status"] == "ok"
    assert main(["export", str(d), "--out", str(tmp_path / "m")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    r = resolve(cfg)
    task = r.task_cls(r.task_cfg, 6, 0, r.run.runtime)
    assert params_sha256(task.fm.masters_of(model)) == s["params_sha256"]
    with torch.no_grad():
        got = task._evaluate_split(model, "eval")
    assert got["accuracy"] == s["final_metrics"]["accuracy"]
    assert got["loss"] == pytest.approx(s["final_metrics"]["eval_loss"], rel=1e-5)
    # the tokenizer travels too
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok.get_vocab() == task.tokenizer.get_vocab()


def test_lm_pack_exports_with_a_moved_base_model(lm_run, tmp_path, capsys):
    import shutil

    d, cfg, s = lm_run
    assert main(["pack", str(d), "--out", str(tmp_path / "lm.pack")]) == 0
    doc = json.loads(lzma.decompress((tmp_path / "lm.pack").read_bytes()))
    assert len(doc["base"]["tokenizer_sha256"]) == 64
    moved = shutil.copytree(cfg["task"]["model"], tmp_path / "elsewhere")
    assert main(["export", str(tmp_path / "lm.pack"), "--out", str(tmp_path / "m"),
                 "--model", str(moved)]) == 0
    assert json.loads((tmp_path / "m" / "export.json").read_text())["params_sha256"] == s["params_sha256"]
    # a different base model is named as such
    other = models.build_tiny(tmp_path / "other", "synthetic", seed=5, hidden=16, layers=1, ffn=32,
                              max_pos=32)
    assert main(["export", str(tmp_path / "lm.pack"), "--out", str(tmp_path / "m2"),
                 "--model", str(other)]) == 2
    assert "base model" in capsys.readouterr().err


def test_the_functional_module_refuses_to_write_its_placeholders(lm_run, tmp_path):
    """Outside a forward the module holds NaN placeholders: its own save would write NaN."""
    _, cfg, _ = lm_run
    r = resolve(cfg)
    task = r.task_cls.for_parameters(r.task_cfg, 6, 0, r.run.runtime)
    module = task.fm.module
    assert any(torch.isnan(p).all() for p in module.parameters())  # the trap is real
    for call in (lambda: module.save_pretrained(tmp_path / "bad"), module.state_dict,
                 lambda: module.push_to_hub("x")):
        with pytest.raises(RuntimeError, match="placeholders"):
            call()
    assert not (tmp_path / "bad").exists()
