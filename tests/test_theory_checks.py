"""Tests for the theory checks (hiso/experiments): statistics, verdicts, the step search, run
reading, the table writer, and tiny experiments run end to end through the engine."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from hiso import theory
from hiso.experiments import noise, runs, stats, tuning, zsweep
from hiso.report import theory as report
from hiso.experiments.stats import Check, Threshold, make_check

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"target": 1e-3, "seeds": [0, 1, 2], "mu": 1e-6, "threads": 1, "n_boot": 200,
          "divergence_factor": 1e6}


# ---------------------------------------------------------------- statistics


def test_median_with_censored_runs():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, math.inf, 2.0]) == 2.0
    assert stats.median([1.0, math.inf, math.inf]) == math.inf
    assert stats.median([1.0, 3.0]) == 2.0
    assert stats.median([1.0, math.inf]) == math.inf
    assert stats.median([math.inf, math.inf]) == math.inf  # no inf - inf
    assert math.isnan(stats.median([]))


def test_bootstrap_point_and_interval():
    point, lo, hi = stats.bootstrap([[10.0, 11.0, 12.0, 13.0, 14.0], [5.0, 5.0, 5.0]],
                                    lambda m: m[0] / m[1], n_boot=500)
    assert point == 12.0 / 5.0
    assert 10.0 / 5.0 <= lo <= point <= hi <= 14.0 / 5.0
    # censored groups keep a valid bound: the ratio is inf, never NaN
    p, lo, hi = stats.bootstrap([[math.inf, math.inf, 1.0], [2.0, 2.0, 2.0]], lambda m: m[0] / m[1],
                                n_boot=200)
    assert p == math.inf and hi == math.inf


@pytest.mark.parametrize("spec,value,ok", [
    ({"min": -0.15, "max": 0.15}, 0.1, True),
    ({"min": -0.15, "max": 0.15}, 0.2, False),
    ({"min": -0.15, "max": 0.15}, math.nan, False),
    ({"min": 2.5}, math.inf, True),
    ({"min": 2.5}, 2.4, False),
    ({"max": 1.0, "strict_max": True}, 1.0, False),
    ({"max": 1.0, "strict_max": True}, 0.99, True),
])
def test_threshold(spec, value, ok):
    assert Threshold.from_config(spec).holds(value) is ok


def test_make_check_verdicts_and_text():
    th = Threshold.from_config({"min": 0.8, "max": 1.2})
    assert th.text() == "[0.8, 1.2]"
    ok = make_check("x", "e", "claim", (1.0, 0.9, 1.1), th, lambda passed: "fine" if passed else "bad")
    bad = make_check("x", "e", "claim", (0.5, 0.4, 0.6), th, lambda passed: "fine" if passed else "bad")
    info = make_check("x", "e", "claim", (0.5, 0.4, 0.6), Threshold(), "evidence")
    assert (ok.verdict, ok.explanation) == ("PASS", "fine")
    assert (bad.verdict, bad.explanation) == ("FAIL", "bad")
    assert (info.verdict, info.threshold) == ("INFO", "none (informative)")
    assert Threshold.from_config({"max": 1.0, "strict_max": True}).text() == "< 1"


# ---------------------------------------------------------------- the step search


def _fake(costs: dict[int, float]):
    calls = []

    def evaluate(k, cap):
        calls.append((k, cap))
        v = costs[k]
        return v if v <= cap else math.inf

    return evaluate, calls


def test_search_finds_the_minimum_and_prunes_at_the_incumbent():
    costs = {-3: 900, -2: 500, -1: 300, 0: 200, 1: 150, 2: 170, 3: math.inf}
    evaluate, calls = _fake(costs)
    scores = tuning.search(evaluate, tuning.Grid(1.0, -3, 3, 0), cap=1000)
    assert tuning.select(scores) == 1
    assert [k for k, _ in calls] == [0, 1, 2]  # went up, stopped at the first worse point
    assert dict(calls) == {0: 1000, 1: 200, 2: 150}  # later candidates capped at the best so far
    assert scores[2] == math.inf  # 170 > cap 150: censored, cannot win


def test_search_goes_down_and_scans_everything_when_all_censored():
    evaluate, calls = _fake({-2: 50, -1: 80, 0: 100, 1: 120, 2: 300})
    assert tuning.select(tuning.search(evaluate, tuning.Grid(1.0, -2, 2, 0), 1000)) == -2
    evaluate, calls = _fake({k: math.inf for k in range(-2, 3)})
    scores = tuning.search(evaluate, tuning.Grid(1.0, -2, 2, 0), 1000)
    assert sorted(scores) == [-2, -1, 0, 1, 2]


def test_select_ties_go_to_the_smaller_step():
    assert tuning.select({0: 100.0, 1: 100.0, -1: 120.0}) == 0
    assert tuning.scores_from_rounds({0: [1.0, math.inf, 3.0]}) == {0: 3.0}


# ---------------------------------------------------------------- reading runs back


def _fake_run(d: Path, rel_gaps, every=1, status="ok", cap=100, labels=None, extra=None) -> None:
    d.mkdir(parents=True)
    cfg = {"seed": 0, "federation": {"rounds": cap}, "method": {"lr": 0.1}, "task": {}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = [{"round": i * every, "rel_gap": g, "f_gap": g, **(extra(i) if extra else {})}
               for i, g in enumerate(rel_gaps)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (d / "summary.json").write_text(json.dumps({"status": status, "rounds": metrics[-1]["round"],
                                                "final_metrics": metrics[-1]}))


def test_rounds_to_target_first_hit_and_censoring(tmp_path):
    _fake_run(tmp_path / "a", [1.0, 0.1, 0.01, 0.0009, 0.0001], every=10)
    _fake_run(tmp_path / "b", [1.0, 0.1, 0.01], every=10)  # capped before the target
    _fake_run(tmp_path / "c", [1.0, 10.0, math.nan], status="diverged")
    assert runs.load_run(tmp_path / "a").rounds_to(1e-3) == 30.0
    assert runs.load_run(tmp_path / "b").rounds_to(1e-3) == math.inf
    assert runs.load_run(tmp_path / "c").rounds_to(1e-3) == math.inf
    with pytest.raises(Exception):
        runs.load_run(tmp_path / "missing")


def test_zsweep_verdict_from_synthetic_run_directories(tmp_path):
    """Runs whose rounds follow (zeta + 2) ln(1000) pass; runs that ignore zeta fail."""
    cfg = {"dim": 100, "eps": 1e-2, "tail_share": 1e-3, "heads": [8, 16, 32, 64], "cap": 5000,
           "every": 1}
    checks_cfg = {"hiso_zeta_slope": {"min": 0.8, "max": 1.15}}
    for name, law in (("prop", lambda z: (z + 2) * math.log(1e3)), ("flat", lambda z: 80.0)):
        out = tmp_path / name
        specs = []
        for k in cfg["heads"]:
            for s in (0, 1, 2):
                n = int(round(law(k) * (1 + 0.02 * s)))
                gaps = [1.0] * n + [1e-4]
                _fake_run(out / f"k{k}/seed{s}", gaps, cap=5000,
                          extra=lambda i, k=k: {"zeta_H": float(k)})
                specs.append(runs.RunSpec(f"k{k}/seed{s}", {}, {"k": k, "zeta": float(k), "seed": s}))
        runs.write_index(out, "zsweep", specs)
        res = zsweep.analyse(cfg, COMMON, out, checks_cfg)
        check = res["checks"][0]
        assert check.verdict == ("PASS" if name == "prop" else "FAIL"), check


# ---------------------------------------------------------------- the table writer


def test_table_writer_markdown_and_csv():
    checks = [Check("a.b", "exp", "claim | with pipe", 0.5, 0.4, 0.6, "[0.8, 1.2]", "FAIL", "why"),
              Check("c", "exp", "info", math.inf, 1.0, math.inf, "none (informative)", "INFO", "ev")]
    md = report.checks_markdown(checks)
    assert "claim \\| with pipe" in md and "**FAIL**" in md and "| inf |" in md
    rows = list(__import__("csv").DictReader(report.checks_csv(checks).splitlines()))
    assert [r["verdict"] for r in rows] == ["FAIL", "INFO"]
    assert float(rows[0]["measured"]) == 0.5 and float(rows[1]["measured"]) == math.inf


def test_snakemake_figure_list_matches_the_report():
    smk = (ROOT / "workflow/rules/theory.smk").read_text()
    listed = re.findall(r'"(theory_[a-z_]+\.png)"', smk)
    assert tuple(listed) == report.FIGURES


def test_config_thresholds_are_the_issues():
    cfg = yaml.safe_load((ROOT / "configs/theory.yaml").read_text())
    ch = cfg["checks"]
    assert ch["hiso_slope"] == {"min": -0.15, "max": 0.15}
    assert ch["zosgd_slope"] == {"min": 0.8, "max": 1.2}
    assert ch["hiso_prediction"] == {"min": 0.6, "max": 1.4}
    assert ch["hiso_zeta_slope"] == {"min": 0.8, "max": 1.15}
    assert ch["oracle_speedup"] == {"min": 2.5}
    assert ch["oracle_speedup_rotated"] == {"min": 0.7, "max": 1.4}
    assert ch["noise_function_slope"] == {"min": -0.15, "max": 0.15}
    assert len(cfg["common"]["seeds"]) >= 5


# ---------------------------------------------------------------- through the engine


def test_dsweep_verdict_row_for_zo_sgd_is_the_slow_half_design(monkeypatch):
    """ZO-SGD's verdict row is the design that isolates L kappa ~ d (x0 on the unit-curvature
    half); the isotropic-x0 row is informative and carries its explanation. Synthetic runs:
    rounds ~ d on the slow half, ~ sqrt(d) with x0 isotropic, flat for HiSo."""
    from hiso.experiments import dsweep

    def result(design, method, d, seed, rounds):
        labels = {"design": design, "method": method, "d": d, "zeta": 10.0, "trace": d / 2 + 5,
                  "L": d / 10, "seed": seed}
        metrics = [{"round": 0, "rel_gap": 1.0, "zeta_H": 10.0},
                   {"round": int(rounds), "rel_gap": 1e-4, "zeta_H": 10.0}]
        return runs.RunResult(Path("."), labels, {"federation": {"rounds": 10**6}, "seed": seed},
                              {"status": "ok"}, metrics)

    fake = [result(des, m, d, seed, f(d) * (1 + 0.01 * seed))
            for des, m, f in (("main", "hiso_oracle", lambda d: 100.0),
                              ("main", "decomfl", lambda d: 50 * d ** 0.5),
                              ("slowhalf", "decomfl", lambda d: 7.0 * d))
            for d in (100, 1000, 10000) for seed in (0, 1, 2)]
    monkeypatch.setattr(dsweep.runs, "load_results", lambda out: fake)
    cfg = {"eps": 1e-2}
    res = dsweep.analyse(cfg, COMMON, Path("."), {"zosgd_slope": {"min": 0.8, "max": 1.2}})
    rows = {c.id: c for c in res["checks"]}
    primary, info = rows["dsweep.zosgd_slope"], rows["dsweep.zosgd_isotropic_slope"]
    assert primary.measured == pytest.approx(1.0, abs=1e-3) and primary.verdict == "PASS"
    assert "unit-curvature" in primary.claim
    assert info.measured == pytest.approx(0.5, abs=1e-3) and info.verdict == "INFO"
    assert "how the target meets the start" in info.explanation
    ids = [c.id for c in res["checks"]]
    assert ids.index("dsweep.zosgd_slope") < ids.index("dsweep.zosgd_isotropic_slope")
    assert "dsweep.zosgd_slowhalf_slope" not in ids  # no longer a supplementary row


def test_tiny_zeta_sweep_end_to_end(tmp_path):
    """A real (tiny) zeta sweep: engine runs, index, analysis; the slope is near the
    prediction's and the runs' zeta is the theory's."""
    cfg = {"dim": 60, "eps": 1e-2, "tail_share": 1e-3, "heads": [4, 16], "cap": 2000, "every": 1}
    zsweep.run(cfg, COMMON, tmp_path)
    res = zsweep.analyse(cfg, COMMON, tmp_path, {"hiso_zeta_slope": {"min": 0.5, "max": 1.15}})
    assert res["checks"][0].verdict == "PASS"
    for z, k in zip(res["zetas"], cfg["heads"]):
        assert z == pytest.approx(k, rel=0.02)
    for row, p in zip(res["rows"], res["preds"]):
        assert 0.5 * p < stats.median(row) <= 1.1 * p
    # every run directory is a normal, finished run at the theory step
    r = runs.load_results(tmp_path)[0]
    assert r.status == "ok" and r.lr == pytest.approx(theory.hiso_step(r.labels["zeta"]))
    assert r.config["method"]["perturbations"] == 1 and r.config["federation"]["local_steps"] == 1


def test_noise_floor_matches_the_exact_expectation(tmp_path):
    """The engine's measured floor under isotropic gradient noise agrees with
    theory.expected_losses_noisy (the recursion the report compares with)."""
    cfg = {"dims": [40], "eps": 1e-2, "tail_share": 1e-5, "rounds": 240, "burn_in": 120,
           "every": 4, "kinds": {"gradient_isotropic": 2e-3}}
    common = dict(COMMON, seeds=[0, 1, 2, 3, 4])
    noise.run(cfg, common, tmp_path)
    results = runs.load_results(tmp_path)
    measured = np.mean([noise.floor(r, cfg["burn_in"]) for r in results])
    expected = noise.expected_floor(results[0], cfg["burn_in"])
    assert measured == pytest.approx(expected, rel=0.35)


def test_tiny_illcond_case_selection_is_rederived_from_the_runs(tmp_path):
    """Tune + report one tiny case through the engine; the report re-derives every selected
    step from the tuning runs, the reported runs used it, and the non-ZO caps follow ZO-SGD."""
    from hiso.experiments import illcond

    cfg = {"dim": 20, "every": 10, "cap": 4000, "cap_factor": 1.5, "tune_seeds": [100],
           "oracle_eps": 1e-2,
           "learned": {"nus": [0.95], "tune_nu": 0.95, "eps": 1e-8, "h_convention": "nu_on_old",
                       "h_source": "last_step"},
           "grids": {"decomfl": {"kmin": -1, "kmax": 2, "k0": "theory"},
                     "hiso_oracle": {"kmin": -1, "kmax": 1, "k0": "theory"},
                     "hiso": {"kmin": -1, "kmax": 2, "k0": 0}},
           "cases": {"c": {"family": "illcond", "learned_nus": [0.9, 0.95],
                           "spectrum": {"kind": "lognormal_condition", "condition": 30.0}}},
           "parts": {"p": ["c"]}}
    common = dict(COMMON, seeds=[0, 1])
    illcond.run(cfg, common, tmp_path, "p")
    results = runs.load_results(tmp_path)
    sel = illcond.selection(results, 1e-3)
    runner_caps = {r.labels["method"]: r.cap for r in results if r.labels["stage"] == "report"}
    zo = sel[("c", "decomfl")]
    assert runner_caps["decomfl"] == cfg["cap"]
    assert runner_caps["hiso_oracle"] == math.ceil(1.5 * zo["scores"][zo["k"]])
    assert sel[("c", "hiso_nu0.9")]["k"] == sel[("c", "hiso_nu0.95")]["k"]  # borrowed step
    # a reported run at another step than the selected one is caught
    bad = next(r for r in results if r.labels["stage"] == "report" and r.labels["method"] == "decomfl")
    bad.config["method"]["lr"] *= 2.0
    with pytest.raises(ValueError):
        illcond.selection(results, 1e-3)


def test_tiny_block_quadratic_experiment_end_to_end(tmp_path):
    """issue #15's block experiment through the engine at toy scale: tune, report, re-derive
    the selection, and the verdict rows (hiso_block learns the block ranking exactly here)."""
    from hiso.experiments import blocks

    cfg = {"blocks": 4, "lo": 1.0, "hi": 100.0, "perturbations": 4, "mu": 1e-3, "eps": 1e-2,
           "hiso_block": {"h_init": 100.0, "window": 10}, "learned": {"nu": 0.95, "eps": 1e-8},
           "every": 5, "cap_factor": 3, "tune_seed": 100, "seeds": [0, 1],
           "grids": {"preconditioned": {"kmin": -1, "kmax": 1, "k0": 0},
                     "unit_start": {"kmin": 0, "kmax": 1, "k0": 0}},
           "designs": {"main": {"within_sd": 0.1, "methods": ["block_oracle", "hiso_block", "hiso"],
                                "dims": {"default": [40, 80]}},
                       "control": {"within_sd": 1.0, "methods": ["hiso_oracle", "block_oracle", "hiso_block"],
                                   "dims": {"default": [40, 80]}}}}
    blocks.run(cfg, COMMON, tmp_path)
    th = yaml.safe_load((ROOT / "configs/theory.yaml").read_text())["checks"]
    res = blocks.analyse(cfg, COMMON, tmp_path, th)
    rows = {c.id: c for c in res["checks"]}
    assert rows["blocks.spearman"].measured == 1.0 and rows["blocks.spearman"].verdict == "PASS"
    assert rows["blocks.vs_block_oracle"].measured < 1.5
    assert {"blocks.flat_in_d", "blocks.whitening_rank", "blocks.vs_learned_diagonal",
            "blocks.control_vs_block_oracle", "blocks.control_block_cost"} <= set(rows)
    # every reported run used the step selected on the tuning seed, as the same multiple k
    assert set(res["selection"]) == {("main", "block_oracle"), ("main", "hiso_block"), ("main", "hiso"),
                                     ("control", "hiso_oracle"), ("control", "block_oracle"),
                                     ("control", "hiso_block")}
    r = [x for x in runs.load_results(tmp_path) if x.labels["method"] == "hiso_block"][0]
    assert r.config["method"]["block_size"] == r.labels["d"] // 4
    assert r.config["method"]["difference"] == "central"
    from hiso.report.theory import blocks_markdown

    md = blocks_markdown(res)
    assert "| main | hiso_block | 80 |" in md


def test_block_thresholds_are_in_the_config():
    ch = yaml.safe_load((ROOT / "configs/theory.yaml").read_text())["checks"]["blocks"]
    assert ch["spearman"] == {"min": 0.9} and ch["vs_block_oracle"] == {"max": 1.5}
    assert ch["flat_in_d"] == {"min": -0.15, "max": 0.15}
