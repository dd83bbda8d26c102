"""H diagnostics: the optimiser's pure summary of H, logged with every evaluation, and its figure."""

from __future__ import annotations


import pytest
import torch

from hiso import io
from hiso.config import resolve
from hiso.optimizers.base import h_statistics
from hiso.runner import Run

from helpers import config, federation

H_KEYS = {"h_mean", "h_min", "h_max", "lr_eff_mean", "lr_eff_min", "lr_eff_max"}


def test_h_statistics_hand_computed():
    H = [torch.tensor([1.0, 4.0]), torch.tensor([[0.5, 2.0], [0.25, 0.25]])]
    s = h_statistics(H, lr=0.1)
    # six coordinates: sum 8.0; reciprocals 1 + 0.25 + 2 + 0.5 + 4 + 4 = 11.75
    assert s == pytest.approx({"h_mean": 8.0 / 6, "h_min": 0.25, "h_max": 4.0,
                               "lr_eff_mean": 0.1 * 11.75 / 6, "lr_eff_min": 0.1 / 4.0,
                               "lr_eff_max": 0.1 / 0.25})
    assert all(isinstance(v, float) for v in s.values())


def test_hiso_reports_its_h_and_decomfl_nothing():
    fed = federation(config())
    for r in range(3):
        fed.run_round(r)
    d = fed.opt.diagnostics(fed.state)
    assert d == pytest.approx(h_statistics(fed.state, fed.opt.cfg.lr))
    assert d["h_min"] < 1.0 and d["lr_eff_max"] > fed.opt.cfg.lr  # H moved from its start at 1
    dec = federation(config(**{"method.name": "decomfl"}))
    dec.run_round(0)
    assert dec.opt.diagnostics(dec.state) == {}


@pytest.mark.parametrize("method", ["hiso", "decomfl", "fedavg"])
def test_every_evaluation_record_carries_h_for_hiso_only(tmp_path, method):
    cfg = config(**{"method.name": method, "federation.rounds": 10})
    if method == "fedavg":
        cfg["method"] = {"name": "fedavg", "lr": 0.01}
    Run(resolve(cfg), tmp_path / "run", progress=False).execute()
    recs = io.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["round"] for r in recs] == [0, 5, 10]
    for r in recs:
        assert (H_KEYS <= set(r)) == (method == "hiso")
    if method == "hiso":
        assert recs[0]["h_mean"] == recs[0]["h_min"] == recs[0]["h_max"] == 1.0
        last = recs[-1]
        assert last["h_mean"] != 1.0 and last["h_min"] < last["h_mean"] < last["h_max"]
        assert last["lr_eff_min"] == pytest.approx(cfg["method"]["lr"] / last["h_max"])


def test_figure_draws_hiso_runs_and_refuses_metrics_without_h(tmp_path):
    from hiso import cli

    runs = []
    for method in ("hiso", "decomfl"):
        out = tmp_path / method
        Run(resolve(config(**{"method.name": method})), out, progress=False).execute()
        runs.append(str(out))
    csv = tmp_path / "m.csv"
    assert cli.main(["aggregate", *runs, "--out", str(csv)]) == 0
    png = tmp_path / "h.png"
    assert cli.main(["figure-diagnostics", str(csv), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    only_decomfl = tmp_path / "d.csv"
    assert cli.main(["aggregate", runs[1], "--out", str(only_decomfl)]) == 0
    assert cli.main(["figure-diagnostics", str(only_decomfl), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
