"""The reduced simulation of block quadratics (issue #15): exact against a full-dimensional one,
hiso_block's estimator wired as in the optimiser, and the verdict rows it feeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hiso.experiments import blocks_scale as bs
from hiso.report import block_compare

ROOT = Path(__file__).resolve().parents[1]


def test_bartlett_factors_give_wishart_moments():
    rng = np.random.default_rng(0)
    df = np.array([30.0, 200.0])
    L = bs.wishart_factors(rng, df, (4000,), 3)
    W = L @ np.swapaxes(L, -1, -2)
    mean = W.mean(axis=0)
    for k, n in enumerate(df):
        assert np.allclose(np.diag(mean[k]), n, rtol=0.03)
        assert abs(mean[k][0, 1]) < 0.05 * n
        # Var W_pp = 2 n for Wishart(n, I)
        assert np.var(W[:, k, 0, 0]) == pytest.approx(2 * n, rel=0.1)


def full_dimensional(pr: bs.Problem, h: np.ndarray, lr: float, P: int, rounds: int, seeds) -> np.ndarray:
    """f_R / f0 of ZO-SGD with directions H^{-1/2} u in all d coordinates (the reference)."""
    a = np.repeat(pr.a, pr.n.astype(int))
    hd = np.repeat(h, pr.n.astype(int))
    out = []
    for s in seeds:
        rng = np.random.default_rng(s)
        e = rng.standard_normal(pr.d)
        e /= np.linalg.norm(e)
        f0 = 0.5 * (a * e * e).sum()
        for _ in range(rounds):
            u = rng.standard_normal((P, pr.d))
            z = u / np.sqrt(hd)
            g = z @ (a * e)
            e = e - lr / P * (g @ z)
        out.append(0.5 * (a * e * e).sum() / f0)
    return np.array(out)


@pytest.mark.parametrize("method", ["decomfl", "hiso_oracle"])
def test_reduction_matches_the_full_dimensional_dynamics(method):
    pr = bs.Problem(np.array([1.0, 10.0, 100.0]), np.array([12.0, 8.0, 20.0]))
    s = bs.Settings(P=3, eps=1e-2)
    h = np.ones(3) if method == "decomfl" else pr.a + s.eps
    lr = 0.5 * bs.base_lr(method, pr, s)
    R, n = 6, 600
    red = bs.simulate(pr, method, np.array([lr]), list(range(n)), s, R, 0.0)["f"][0]
    ref = full_dimensional(pr, h, lr, s.P, R, range(10_000, 10_000 + n))
    se = math.sqrt(red.var() / n + ref.var() / n)
    assert abs(red.mean() - ref.mean()) < 4 * se
    assert red.mean() < 0.9  # it did descend


def test_hiso_block_learns_the_block_ranking_and_tracks_the_oracle():
    pr = bs.equal_blocks(2000, 5, 1.0, 1e3)
    s = bs.Settings(P=8, eps=1e-2, h_init=1e3)
    lr = bs.base_lr("hiso_block", pr, s)
    cap = int(3 * bs.predicted_rounds(pr, s, 1e-3))
    blk = bs.simulate(pr, "hiso_block", np.array([lr]), [0, 1], s, cap, 1e-3)
    orc = bs.simulate(pr, "hiso_oracle", np.array([lr]), [0, 1], s, cap, 1e-3)
    assert np.isfinite(blk["rounds"]).all()
    assert np.median(blk["rounds"]) / np.median(orc["rounds"]) < 1.3
    from hiso import theory

    for h in blk["h"][0]:
        assert theory.spearman(h, pr.a) == pytest.approx(1.0)
        assert np.allclose(h, pr.a + s.eps, rtol=0.05)


def test_head_tail_problem_keeps_the_oracle_rank_fixed():
    s = bs.Settings(P=10, eps=1e-2)
    ht = [bs.head_tail_blocks(d, 10, 1.0, 1e4, 100, 1e-5) for d in (1_000, 100_000)]
    z = [p.zeta(p.a + s.eps) for p in ht]
    assert z[1] / z[0] < 1.0001
    assert ht[1].n[-1] == 100_000 - 900 and ht[1].a[-1] * ht[1].n[-1] == pytest.approx(1e-5)
    eq = [bs.equal_blocks(d, 10, 1.0, 1e4) for d in (1_000, 100_000)]
    assert eq[1].zeta(eq[1].a + s.eps) / eq[0].zeta(eq[0].a + s.eps) == pytest.approx(100, rel=0.01)


def tiny_config() -> tuple[dict, dict, dict]:
    th = yaml.safe_load((ROOT / "configs/theory.yaml").read_text())
    cfg = dict(th["blocks_scale"])
    cfg.update({"blocks": 4, "hi": 100.0, "perturbations": 4, "tune_seeds": [100], "seeds": [0, 1],
                "seeds_large": [0], "tune_max_d": 200, "engine_check": None, "engine_learned": None,
                "hiso_block": {**cfg["hiso_block"], "h_init": 100.0}})
    cfg["designs"] = {"equal": {"kind": "equal", "methods": ["hiso_oracle", "hiso_block", "decomfl"],
                                "dims": {"default": [100, 200, 400], "decomfl": [100, 200]}}}
    return cfg, {**th["common"], "n_boot": 200}, th["checks"]


def test_experiment_writes_rows_and_verdicts(tmp_path):
    cfg, common, checks = tiny_config()
    bs.run(cfg, common, tmp_path)
    res = bs.analyse(cfg, common, tmp_path, checks)
    ids = {c.id: c for c in res["checks"]}
    assert {"blocks_scale.equal.oracle_slope", "blocks_scale.equal.flat_in_d",
            "blocks_scale.equal.flat_relative", "blocks_scale.equal.vs_oracle",
            "blocks_scale.equal.spearman", "blocks_scale.equal.whitening_rank",
            "blocks_scale.equal.vs_decomfl"} <= set(ids)
    assert ids["blocks_scale.equal.oracle_slope"].verdict == "INFO"
    # equal blocks: every whitening H has rank ~d, so the oracle's rounds grow about like d
    assert 0.6 < ids["blocks_scale.equal.oracle_slope"].measured < 1.4
    # d = 400 ran on seeds_large only, at the exponent selected at d = 200
    top = res["by"][("equal", "hiso_block")][400]
    assert top["seeds"] == [0] and top["tune"] is None
    assert top["k"] == res["by"][("equal", "hiso_block")][200]["k"]
    header, rows = bs.markdown_rows(res, cfg["eps"])
    assert len(rows) == 3 + 3 + 2
    # the report: every verdict row, the reduced runs and a real-task comparison, .md/.csv/.tex
    from hiso.report.theory import write_blocks_table

    metrics = tmp_path / "metrics.csv"
    pd.concat([curves("hiso_block", s, 0.003, 11) for s in range(2)]
              + [curves("hiso", s, 0.002, 6) for s in range(2)]).to_csv(metrics, index=False)
    md, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    out = write_blocks_table({}, common, None, checks, md, csv_path, tmp_path / "f.png",
                             scale=(cfg, tmp_path), compare=[("toy", metrics, "hiso")])
    ids = {c.id for c in out}
    assert {"blocks_scale.equal.flat_in_d", "hiso_block.toy.final", "hiso_block.toy.at_budget"} <= ids
    text = md.read_text()
    assert "| equal | hiso_block | 400 |" in text and "FAIL" in text or "PASS" in text
    assert len(pd.read_csv(csv_path)) == len(out)
    assert "tabular" in (tmp_path / "t.tex").read_text()
    assert (tmp_path / "f.png").is_file()


def curves(name: str, seed: int, acc_per_round: float, fwd_per_round: int) -> pd.DataFrame:
    r = np.arange(0, 101, 10)
    return pd.DataFrame({"name": name, "seed": seed, "round": r, "accuracy": acc_per_round * r,
                         "forwards": fwd_per_round * r})


def test_compare_per_round_and_per_forward():
    # hiso_block gains 1.5x per round but pays 11/6 the forwards: it wins per round, loses per forward
    df = pd.concat([curves("hiso_block", s, 0.003 + 1e-5 * s, 11) for s in range(3)]
                   + [curves("hiso", s, 0.002, 6) for s in range(3)])
    th = yaml.safe_load((ROOT / "configs/theory.yaml").read_text())["checks"]["hiso_block"]
    res = block_compare.compare(df, "toy", "hiso_block", "hiso", ["hiso"], th)
    ids = {c.id: c for c in res["checks"]}
    # per round: at round 100, 0.3 + 0.001 * mean(seed) against 0.2
    assert ids["hiso_block.toy.final"].measured == pytest.approx(0.101)
    assert ids["hiso_block.toy.final"].verdict == "PASS"
    assert ids["hiso_block.toy.final"].ci_lo < 0.101 < ids["hiso_block.toy.final"].ci_hi
    # the common forward budget: the smallest final count, hiso's 600
    assert res["budget"] == 600
    # there hiso_block is at round 50 (550 forwards): 0.15 + 0.0005 against hiso's 0.2
    assert ids["hiso_block.toy.at_budget"].measured == pytest.approx(-0.0495)
    assert ids["hiso_block.toy.at_budget"].verdict == "FAIL"
