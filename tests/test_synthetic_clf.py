"""The synthetic classification task of the large-federation study: data from (seed, client),
label and feature skew, no empty client, nothing materialised up front, bad keys refused."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest
import torch

from hiso.config import resolve
from hiso.directions import DirectionSampler
from hiso.errors import UserError
from hiso.protocol import ZOFederation
from hiso.runner import Run
from hiso.tasks import TASKS
from hiso.tasks.synthetic_clf import Population, SyntheticClfConfig, SyntheticClfTask
from hiso.zo import params_sha256


def cfg(**kw) -> SyntheticClfConfig:
    return SyntheticClfConfig(**{"dev_size": 100, "eval_size": 100, **kw})


def run_config(**task) -> dict:
    return {"name": "syn", "seed": 1,
            "task": {"name": "synthetic_clf", "dev_size": 100, "eval_size": 100, **task},
            "method": {"name": "hiso", "lr": 0.02, "mu": 1e-3, "perturbations": 2},
            "federation": {"clients": 50, "sampled": 5, "local_steps": 1, "rounds": 6},
            "eval": {"every": 3}, "runtime": {"threads": 1}}


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_registered():
    assert TASKS["synthetic_clf"] is SyntheticClfTask


def test_data_is_a_function_of_the_data_seed_and_client():
    a, b = SyntheticClfTask(cfg(), 1000, seed=0), SyntheticClfTask(cfg(), 1000, seed=7)
    for k in (0, 3, 999):
        xa, ya = a.client_data(k)
        xb, yb = b.client_data(k)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)  # the run seed does not change data
    assert torch.equal(a.dev[0], b.dev[0]) and torch.equal(a.eval[1], b.eval[1])
    other = SyntheticClfTask(cfg(data_seed=1), 1000, seed=0)
    assert not torch.equal(a.client_data(3)[0], other.client_data(3)[0])
    assert not torch.equal(a.client_data(3)[0], a.client_data(4)[0])
    # batches: a function of (run seed, client, round, step)
    c = SyntheticClfTask(cfg(examples=80), 10, seed=0)
    x1, y1 = c.batch(2, 5, 0)
    x2, y2 = c.batch(2, 5, 0)
    assert torch.equal(x1, x2) and len(y1) == 32
    assert not torch.equal(x1, c.batch(2, 6, 0)[0])
    # the model's initial weights come from the run seed
    assert not torch.equal(a.init_params()[0], b.init_params()[0])


def test_dev_and_eval_are_held_out_examples():
    t = SyntheticClfTask(cfg(), 200, seed=0)
    train = torch.cat([t.client_data(k)[0] for k in range(200)])
    rows = {tuple(r.tolist()) for r in train}
    assert not any(tuple(r.tolist()) in rows for r in t.dev[0])
    assert not torch.equal(t.dev[0][:10], t.eval[0][:10])
    assert t.dev[0].shape == (100, 32) and t.eval[1].dtype == torch.int64


def mean_tv(alpha, clients=300) -> float:
    pop = Population(cfg(alpha=alpha, examples=200), clients)
    labels = np.stack([np.bincount(pop.train(k)[1], minlength=10) / 200 for k in range(clients)])
    return float(np.mean(0.5 * np.abs(labels - labels.mean(axis=0)).sum(axis=1)))


def test_label_skew_grows_as_alpha_shrinks():
    tv = {a: mean_tv(a) for a in (None, 10.0, 1.0, 0.1)}
    assert tv[None] < 0.15  # sampling noise only
    assert tv[None] < tv[10.0] < tv[1.0] < tv[0.1]
    assert tv[0.1] > 0.6    # most clients hold one or two classes


def test_feature_skew_per_client():
    pop = Population(cfg(alpha=None, examples=400), 20)
    means = np.stack([pop.train(k)[0].mean(axis=0) for k in range(20)])
    # every client sees the same label mix, so mean differences are the client's shift
    spread = means.std(axis=0).mean()
    assert spread > 0.3
    flat = Population(cfg(alpha=None, examples=400, feature_shift=0.0, feature_scale=0.0), 20)
    means0 = np.stack([flat.train(k)[0].mean(axis=0) for k in range(20)])
    assert means0.std(axis=0).mean() < 0.5 * spread


def test_no_client_is_empty():
    t = SyntheticClfTask(cfg(examples=1, alpha=0.01), 500, seed=0)
    for k in range(500):
        x, y = t.client_data(k)
        assert len(y) == 1 and x.shape == (1, 32)
        assert t.client_weight(k) == 1.0


def test_ten_thousand_clients_cost_nothing_up_front():
    tracemalloc.start()
    t0 = time.perf_counter()
    task = SyntheticClfTask(cfg(dev_size=50, eval_size=50), 10_000, seed=0)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 2.0
    assert peak < 2 * 2**20  # bytes: nothing per client is held
    x, y = task.client_data(9_999)
    assert len(y) == 40


def test_bad_keys_are_one_line_errors():
    with pytest.raises(UserError, match="task.alpha"):
        resolve(run_config(alpha=0))
    with pytest.raises(UserError, match="task.examples"):
        resolve(run_config(examples=0))
    with pytest.raises(UserError, match="task.classes"):
        resolve(run_config(classes=1))
    with pytest.raises(UserError, match="task.colour"):
        resolve(run_config(colour=3))


def test_runs_end_to_end_and_replays(tmp_path):
    summary = Run(resolve(run_config()), tmp_path / "run", progress=False).execute()
    assert summary["status"] == "ok" and summary["num_params"] == 1386
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["clients"] == 50 and 0 < data["label_skew_first_50_clients"] < 1
    r = resolve(run_config())
    task = r.task_cls(r.task_cfg, 50, r.run.seed)
    fed = ZOFederation(task, r.method_cls(r.method_cfg, DirectionSampler("gaussian"), task),
                       r.run.federation, r.run.seed)
    for rec in map(json.loads, (tmp_path / "run" / "history.jsonl").read_text().splitlines()):
        fed.replay(rec["round"], rec["seed"], rec["clients"], rec["scalars"])
    assert params_sha256(fed.params) == summary["params_sha256"]


def test_catchup_and_large_federation_report(tmp_path):
    """`hiso catchup` counts the downlink of k missed rounds; `hiso largefed report` writes its
    tables and figures and HiSo's advantage over DeComFL, paired by seed."""
    import pandas as pd

    from hiso.catchup import measure
    from hiso.cli import main as cli_main
    from hiso.report import large_federation as lf

    runs = []
    for method in ("hiso", "decomfl"):
        cfg = run_config()
        cfg["name"] = method
        cfg["method"]["name"] = method
        if method == "decomfl":
            cfg["method"] = {k: v for k, v in cfg["method"].items() if k in ("name", "lr", "mu", "perturbations")}
        out = tmp_path / method
        Run(resolve(cfg), out, progress=False).execute()
        runs.append(str(out))
    rows = measure(runs[0], [1, 4, 6, 99], repeats=1)
    assert [r["rounds_away"] for r in rows] == [1, 4, 6]  # 99 > the run's 6 rounds: skipped
    # header (round, seed, first missed, count) + per round a seed and tau x P float32 scalars
    assert [r["bytes_down"] for r in rows] == [20 + k * (8 + 4 * 2) for k in (1, 4, 6)]
    assert all(r["model_bytes"] == 4 * 1386 and r["replay_seconds"] > 0 for r in rows)

    cu = tmp_path / "catchup.csv"
    assert cli_main(["catchup", runs[0], "--rounds-away", "1", "4", "--out", str(cu)]) == 0
    rc = cli_main(["largefed", "report", *runs, "--catchup", str(cu), "--reach", "synthetic_clf=0.05",
                   "--figures", str(tmp_path / "fig"), "--tables", str(tmp_path / "tab")])
    assert rc == 0
    for name in ("fig_rounds", "fig_bytes", "fig_catchup"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.pdf").is_file()
    tab = pd.read_csv(tmp_path / "tab.csv")
    finals = {m: json.loads((tmp_path / m / "summary.json").read_text())["final_metrics"]["accuracy"]
              for m in ("hiso", "decomfl")}
    h = tab[tab["method"] == "hiso"].iloc[0]
    assert h["clients"] == 50 and h["sampled"] == 5 and h["lr"] == 0.02
    assert h["hiso_minus_decomfl_accuracy"] == pytest.approx(finals["hiso"] - finals["decomfl"], abs=1e-4)
    assert h["rounds_to_target"] == 0  # every run starts above 5%
    assert "alpha" in (tmp_path / "tab.md").read_text()
    assert len(pd.read_csv(tmp_path / "tab_catchup.csv")) == 2
    with pytest.raises(UserError, match="--reach"):
        lf.parse_reach(["synthetic_clf"])
