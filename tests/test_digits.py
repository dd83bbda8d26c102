"""The digits check: data fallback, splits and partition, the functional CNN under ZO, end-to-end
runs through the runner (H.npy saved), lr selection on dev only, and the Table-2 metric."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from hiso.report import digits as dr
from hiso.cli import main as cli_main
from hiso.config import resolve
from hiso.directions import DirectionSampler
from hiso.errors import UserError
from hiso.runner import Run
from hiso.tasks import TASKS
from hiso.tasks import digits as dg
from hiso.vision import Arch
from hiso.zo import Perturbation, params_sha256


@pytest.fixture(autouse=True)
def fresh_sources():
    dg._SOURCES.clear()
    threads = torch.get_num_threads()
    yield
    dg._SOURCES.clear()
    # Run.build applies runtime.threads process-wide: do not leak it into later tests, whose
    # in-process reference runs must use the same thread count as their subprocess runs
    torch.set_num_threads(threads)


def task_cfg(**kw) -> dg.DigitsConfig:
    return dg.DigitsConfig(**{"source": "sklearn_digits", **kw})


# -- data ----------------------------------------------------------------------------------------
def test_offline_fallback_loads_sklearn_digits(monkeypatch, tmp_path, capsys):
    # the hub is unreachable and the (empty) cache holds no MNIST: `auto` falls back
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    src = dg.load_source("auto", str(tmp_path / "empty_cache"))
    assert src.name == "sklearn_digits"
    assert src.train_x.shape == (1797, 8, 8) and src.test_x is None
    assert sorted(np.unique(src.train_y)) == list(range(10))
    assert 0.0 <= src.train_x.min() and src.train_x.max() == 1.0
    assert "MNIST unavailable" in capsys.readouterr().err
    # asking for MNIST explicitly is a one-line user error naming the data set
    with pytest.raises(UserError, match="ylecun/mnist"):
        dg.load_source("mnist", str(tmp_path / "empty_cache"))
    # and the task records which source it used
    task = TASKS["digits"](dg.DigitsConfig(source="auto", cache_dir=str(tmp_path / "empty_cache")), 64, 0)
    assert task.source == "sklearn_digits" and task.describe()["source"] == "sklearn_digits"


def test_bundled_digits_equal_sklearn_load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    src = dg.load_sklearn_digits()
    assert np.array_equal(src.train_x, (d.images / 16.0).astype(np.float32))
    assert np.array_equal(src.train_y, d.target)


def test_mnist_path_with_a_fake_datasets(monkeypatch):
    """MNIST loading and splits, without the hub: a stand-in `datasets` with MNIST's columns."""
    rng = np.random.default_rng(0)

    def fake_load_dataset(name, split, cache_dir=None):
        assert name == "ylecun/mnist"
        n = 300 if split == "train" else 120
        return {"image": [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(n)],
                "label": list(rng.integers(0, 10, n))}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    cfg = dg.DigitsConfig(source="auto", eval_size=100, dev_size=50, train_size=200)
    task = TASKS["digits"](cfg, 8, 0)
    assert task.source == "mnist" and task.arch.image_size == 28
    assert (len(task.splits.train_y), len(task.splits.dev_y), len(task.splits.eval_y)) == (200, 50, 100)
    assert not set(task.splits.train_idx) & set(task.splits.dev_idx)   # both from MNIST train
    assert task.num_params() == Arch("cnn", 28).num_params() == 9098
    out = task.evaluate(task.init_params())
    assert 0.0 <= out["accuracy"] <= 1.0 and math.isfinite(out["loss"])


def test_splits_are_disjoint_fixed_by_data_seed_and_cover_the_digits():
    src = dg.load_source("sklearn_digits")
    sp = dg.make_splits(src, task_cfg())
    assert (len(sp.eval_idx), len(sp.dev_idx), len(sp.train_idx)) == (400, 200, 1197)
    allidx = np.concatenate([sp.eval_idx, sp.dev_idx, sp.train_idx])
    assert np.array_equal(np.sort(allidx), np.arange(1797))            # disjoint, complete
    again = dg.make_splits(src, task_cfg())
    assert np.array_equal(sp.eval_idx, again.eval_idx) and np.array_equal(sp.dev_idx, again.dev_idx)
    other = dg.make_splits(src, task_cfg(data_seed=1))
    assert not np.array_equal(sp.eval_idx, other.eval_idx)
    with pytest.raises(UserError, match="too few"):
        dg.make_splits(src, task_cfg(eval_size=1500, dev_size=400))


def test_partition_covers_every_training_example_once_and_is_deterministic():
    Task = TASKS["digits"]
    a, b = Task(task_cfg(), 64, seed=0), Task(task_cfg(), 64, seed=7)
    assert len(a.parts) == 64 and min(len(p) for p in a.parts) >= 1
    joined = np.concatenate(a.parts)
    assert np.array_equal(np.sort(joined), np.arange(1197))              # each example once
    # fixed by data_seed, not by the run seed: every seed of a study sees the same clients
    assert all(np.array_equal(p, q) for p, q in zip(a.parts, b.parts))
    c = Task(task_cfg(data_seed=3), 64, seed=0)
    assert not all(np.array_equal(p, q) for p, q in zip(a.parts, c.parts))
    # the client shards hold exactly the examples of their indices
    for k in (0, 17, 63):
        assert torch.equal(a.client_y[k], torch.from_numpy(a.splits.train_y[a.parts[k]]))
    # Dirichlet(1) is label-skewed; an IID split is not
    iid = Task(task_cfg(alpha=None), 64, seed=0)
    skew, iid_skew = a.describe()["label_skew"], iid.describe()["label_skew"]
    assert skew > 0.3 and skew > 1.2 * iid_skew    # (an IID shard of ~19 images is skewed by chance)
    counts = json.loads(json.dumps(a.describe()))
    assert counts["train"] == 1197 and counts["clients"] == 64


def test_batches_are_deterministic_functions_of_client_round_step():
    task = TASKS["digits"](task_cfg(batch_size=8), 64, seed=0)
    big = max(range(64), key=lambda c: len(task.parts[c]))
    x1, y1 = task.batch(big, 3, 0)
    x2, y2 = task.batch(big, 3, 0)
    assert len(y1) == 8 and torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = task.batch(big, 4, 0)
    assert not torch.equal(x1, x3)
    small = TASKS["digits"](task_cfg(batch_size=1000), 64, seed=0)
    x, y = small.batch(5, 0, 0)
    assert len(y) == len(small.parts[5])                                 # whole shard


# -- model ---------------------------------------------------------------------------------------
def test_cnn_zo_loss_equals_loss_at_explicitly_perturbed_weights():
    task = TASKS["digits"](task_cfg(), 64, seed=0)
    params = task.init_params()
    assert task.num_params() == params[0].numel() == 1898
    before = params_sha256(params)
    batch = task.batch(3, 0, 0)
    pert = Perturbation(seed=12345, scale=1e-3, sampler=DirectionSampler("gaussian"),
                        H=[torch.rand_like(params[0]) + 0.5])
    # x + (u * H^-1/2) * mu, in the engine's order: float products do not associate, and
    # whether a last-bit difference in the weights reaches the loss depends on the CPU's kernels
    explicit = params[0] + DirectionSampler("gaussian").sample(12345, 0, params[0]) \
        * torch.rsqrt(pert.H[0]) * 1e-3
    assert task.loss(params, batch, pert) == float(task.batch_loss([explicit], batch))
    assert params_sha256(params) == before                               # master weights untouched
    assert task.loss(params, batch, None) == float(task.batch_loss(params, batch))
    # the forward-difference scalar approximates the autograd directional derivative
    u = DirectionSampler("gaussian").sample(7, 0, params[0])
    _, (grad,) = task.loss_and_grad(params, batch)
    fd = (task.loss(params, batch, Perturbation(7, 1e-3, DirectionSampler("gaussian"))) -
          task.loss(params, batch, None)) / 1e-3
    assert fd == pytest.approx(float(grad @ u), rel=0.05, abs=1e-3)


def test_flat_and_list_forward_agree_and_mlp_option():
    arch = Arch("cnn", 8)
    x = torch.randn(5, 1, 8, 8)
    flat = arch.init_flat(3)
    assert torch.equal(arch.forward(flat, x), arch.forward(arch.init(3), x))
    assert [n for n, _ in arch.layers()] == ["conv1", "conv2", "fc"]
    assert sum(k for _, k in arch.layers()) == flat.numel()
    mlp = Arch("mlp", 8, hidden=32)
    assert mlp.num_params() == 64 * 32 + 32 + 32 * 10 + 10
    assert mlp.forward(mlp.init_flat(0), x).shape == (5, 10)
    task = TASKS["digits"](task_cfg(model="mlp"), 64, seed=0)
    assert task.num_params() == mlp.num_params()


# -- end to end through the runner ---------------------------------------------------------------
def small_run(method: dict, **kw) -> dict:
    cfg = {"name": "t", "seed": 1,
           "task": {"name": "digits", "source": "sklearn_digits"},
           "method": method,
           "federation": {"clients": 64, "sampled": 4, "local_steps": 1, "rounds": 6},
           "eval": {"every": 3, "save_h": True}}
    cfg.update(kw)
    return cfg


ZO = {"lr": 0.005, "mu": 1e-3, "perturbations": 2}


@pytest.mark.parametrize("method", [{"name": "hiso", "nu": 0.95, **ZO}, {"name": "decomfl", **ZO},
                                    {"name": "fedavg", "lr": 0.1}])
def test_runs_end_to_end_and_hiso_saves_h(tmp_path, method):
    s = Run(resolve(small_run(method)), tmp_path / "r", progress=False).execute()
    assert s["status"] == "ok" and s["rounds"] == 6 and s["metric"] == "accuracy"
    recs = [json.loads(line) for line in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [0, 3, 6]
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["dev_accuracy"] <= 1 for r in recs)
    data = json.loads((tmp_path / "r/data.json").read_text())
    assert data["source"] == "sklearn_digits" and data["num_params"] == 1898
    labels = json.loads((tmp_path / "r/client_labels.json").read_text())
    assert len(labels) == 64 and sum(sum(c.values()) for c in labels) == 1197
    h_path = tmp_path / "r/H.npy"
    if method["name"] == "hiso":
        H = np.load(h_path)
        assert H.shape == (1898,) and H.dtype == np.float32 and np.all(H > 0)
        assert not np.all(H == 1.0)                                      # H has learned
        assert recs[-1]["h_max"] >= recs[-1]["h_median"] >= recs[-1]["h_min"] > 0
    else:
        assert not h_path.exists()


def test_hiso_with_nu_one_is_decomfl_on_the_cnn(tmp_path):
    a = Run(resolve(small_run({"name": "hiso", "nu": 1.0, "eps": 1e-8, **ZO})), tmp_path / "a",
            progress=False).execute()
    b = Run(resolve(small_run({"name": "decomfl", **ZO})), tmp_path / "b", progress=False).execute()
    assert a["params_sha256"] == b["params_sha256"]


# -- selection on dev, the pipeline's command line -----------------------------------------------
def test_cli_grid_select_and_report_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(json.dumps(small_run({"name": "decomfl", **ZO}, **{"federation": {
        "clients": 64, "sampled": 2, "local_steps": 1, "rounds": 4}})))
    for lr in ("0.002", "0.02"):
        assert cli_main(["digits", "run", "c.yaml", "--name", "hiso_x", "--lr", lr, "--seeds", "100", "101",
                         "--out", f"grid/lr{lr}/seed{{seed}}", "--set", "method.name=hiso",
                         "--set", "method.nu=0.9"]) == 0
    assert cli_main(["select", *[f"grid/lr{lr}/seed{s}" for lr in ("0.002", "0.02")
                                 for s in (100, 101)], "--out", "sel.json"]) == 0
    sel = json.loads((tmp_path / "sel.json").read_text())
    assert sel["name"] == "hiso_x" and sel["lr"] in (0.002, 0.02)
    assert cli_main(["digits", "run", "c.yaml", "--name", "hiso_x", "--lr-from", "sel.json", "--seeds", "0",
                     "--out", "rep/seed{seed}", "--set", "method.name=hiso", "--set", "method.nu=0.9"]) == 0
    import yaml

    cfg = yaml.safe_load((tmp_path / "rep/seed0/config.yaml").read_text())
    assert cfg["method"]["lr"] == sel["lr"] and cfg["seed"] == 0 and cfg["method"]["nu"] == 0.9
    assert (tmp_path / "rep/seed0/H.npy").exists()
    assert cli_main(["digits", "run", "c.yaml", "--name", "other", "--lr-from", "sel.json", "--seeds", "0",
                     "--out", "x/seed{seed}"]) == 2
    # an ablation variant at another variant's selected lr
    assert cli_main(["digits", "run", "c.yaml", "--name", "other", "--lr-from", "sel.json", "--lr-variant",
                     "hiso_x", "--seeds", "0", "--out", "abl/seed{seed}", "--set", "method.name=hiso",
                     "--set", "method.nu=0.99"]) == 0
    abl = yaml.safe_load((tmp_path / "abl/seed0/config.yaml").read_text())
    assert abl["method"]["lr"] == sel["lr"] and abl["name"] == "other" and abl["method"]["nu"] == 0.99
    assert cli_main(["table", "selection", "sel.json", "--out", "s.md", "--csv", "s.csv"]) == 0
    assert "dev split" in (tmp_path / "s.md").read_text()
    assert cli_main(["digits", "figure", "hessian", "rep/seed0", "--out", "h.png"]) == 0
    assert (tmp_path / "h.png").stat().st_size > 1000


# -- the Table-2 metric --------------------------------------------------------------------------
def curve_rows(name, seed, accs, every=10, bytes_per_round=100):
    return [{"name": name, "seed": seed, "round": every * i, "accuracy": a,
             "bytes_total": every * i * bytes_per_round} for i, a in enumerate(accs)]


def test_rounds_to_reach():
    assert dr.rounds_to_reach([0, 10, 20, 30], [0.1, 0.5, 0.7, 0.6], 0.6) == 20
    assert math.isnan(dr.rounds_to_reach([0, 10], [0.1, 0.5], 0.6))
    assert dr.rounds_to_reach([20, 0, 10], [0.9, 0.1, 0.8], 0.8) == 10      # order by round


def test_table2_and_symmetric_speedups_on_synthetic_metrics():
    rows = []
    # seed 0: DeComFL peaks at 0.70 at round 80; HiSo passes 0.70 at round 40 -> 2x
    rows += curve_rows("decomfl", 0, [0.1, 0.3, 0.4, 0.5, 0.55, 0.6, 0.62, 0.65, 0.70, 0.69])
    rows += curve_rows("hiso", 0, [0.1, 0.4, 0.5, 0.6, 0.71, 0.72, 0.74, 0.75, 0.75, 0.76], bytes_per_round=100)
    # seed 1: DeComFL peaks at 0.80 at round 90; HiSo never reaches 0.80 -> not reached
    rows += curve_rows("decomfl", 1, [0.1, 0.3, 0.4, 0.5, 0.6, 0.6, 0.65, 0.7, 0.75, 0.80])
    rows += curve_rows("hiso", 1, [0.1, 0.5, 0.6, 0.7, 0.72, 0.74, 0.75, 0.76, 0.77, 0.78])
    df = pd.DataFrame(rows)
    summary, per_seed = dr.speedup_rows(df, "decomfl", target=0.6)
    s0 = [r for r in per_seed if r["name"] == "hiso" and r["seed"] == 0][0]
    assert (s0["t2_target"], s0["t2_rounds_baseline"], s0["t2_rounds"], s0["t2_speedup"]) == (0.70, 80, 40, 2.0)
    assert s0["t2_bytes_baseline"] == 8000 and s0["t2_bytes"] == 4000
    assert (s0["ct_rounds_baseline"], s0["ct_rounds"], s0["ct_speedup"]) == (50, 30, 50 / 30)
    s1 = [r for r in per_seed if r["name"] == "hiso" and r["seed"] == 1][0]
    assert s1["t2_rounds_baseline"] == 90 and math.isnan(s1["t2_rounds"]) and math.isnan(s1["t2_speedup"])
    assert (s1["ct_rounds_baseline"], s1["ct_rounds"], s1["ct_speedup"]) == (40, 20, 2.0)
    h = [r for r in summary if r["name"] == "hiso"][0]
    assert h["t2_reached"] == "1/2" and h["t2_speedup_median"] == 2.0
    assert h["ct_reached"] == "2/2" and h["ct_speedup_min"] == pytest.approx(50 / 30)
    assert h["ct_speedup_max"] == 2.0
    assert h["final_accuracy_mean"] == pytest.approx(0.77)
    base = [r for r in summary if r["name"] == "decomfl"][0]
    assert base["t2_speedup_median"] == 1.0                               # the baseline vs itself
    # the default common target: 0.95 x the lowest best seed-mean accuracy
    assert dr.common_target(df, ["decomfl", "hiso"], 0.95) == pytest.approx(0.95 * 0.745)


# -- the scalar-H control (hiso/optimizers/hiso_scalar.py) ---------------------------------------
def test_hiso_scalar_keeps_one_h_per_tensor_and_equals_decomfl_at_nu_one(tmp_path):
    s = Run(resolve(small_run({"name": "hiso_scalar", "nu": 0.9, **ZO})), tmp_path / "s", progress=False).execute()
    H = np.load(tmp_path / "s/H.npy")
    assert s["status"] == "ok" and np.all(H == H[0]) and H[0] != 1.0      # one learned scalar
    full = Run(resolve(small_run({"name": "hiso", "nu": 0.9, **ZO})), tmp_path / "h", progress=False).execute()
    assert full["params_sha256"] != s["params_sha256"]
    a = Run(resolve(small_run({"name": "hiso_scalar", "nu": 1.0, **ZO})), tmp_path / "a", progress=False).execute()
    b = Run(resolve(small_run({"name": "decomfl", **ZO})), tmp_path / "b", progress=False).execute()
    assert a["params_sha256"] == b["params_sha256"]


def test_h_sources_coincide_with_one_local_step(tmp_path):
    # why the digits check does not ablate h_source: at local_steps = 1 every source is one
    # H update per round from the same Delta
    a = Run(resolve(small_run({"name": "hiso", "h_source": "last_step", **ZO})), tmp_path / "a", progress=False).execute()
    b = Run(resolve(small_run({"name": "hiso", "h_source": "every_step", **ZO})), tmp_path / "b", progress=False).execute()
    assert a["params_sha256"] == b["params_sha256"]
    assert np.array_equal(np.load(tmp_path / "a/H.npy"), np.load(tmp_path / "b/H.npy"))
