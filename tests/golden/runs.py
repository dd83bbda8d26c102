"""Synthetic run directories and the table commands whose outputs the golden test pins.

The run directories are written as the runner writes them (config.yaml, summary.json,
metrics.jsonl, history.jsonl), from a seeded generator, so the same files come out on every
machine. ``COMMANDS`` are the reporting commands of the pipeline (``hiso aggregate``, ``hiso
table``, ``hiso select``, ``hiso digits table``) on those runs; ``python tests/golden/runs.py
--regenerate`` writes their outputs into ``tests/golden/expected/`` (done once, by the code
before the reporting move); ``tests/test_golden_tables.py`` asserts that today's code writes
the same bytes. The quadratic fixtures' random factors are rounded to 9 decimals (numpy's exp
differs in the last bit between CPUs); their three outputs were regenerated when that changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
REPO = HERE.parent.parent


def _write_run(d: Path, cfg: dict, summary: dict, recs: list[dict]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    (d / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (d / "metrics.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))
    (d / "history.jsonl").write_text("")


def _summary(cfg, method, task, metric, mode, recs, status="ok"):
    last = recs[-1]
    return {"status": status, "name": cfg["name"], "method": method, "task": task,
            "seed": cfg["seed"], "rounds": last["round"], "metric": metric, "metric_mode": mode,
            "final_metric": last[metric], "bytes_up": last["bytes_up"],
            "bytes_down": last["bytes_down"], "wall_seconds": 1.0}


def quadratic_runs(root: Path, rng) -> list[str]:
    """Min-mode runs (relative gap), two methods x three seeds."""
    out = []
    for method, rate in (("decomfl", 0.93), ("hiso", 0.8)):
        for seed in range(3):
            cfg = {"name": f"{method}-seed{seed}", "seed": seed,
                   "method": {"name": method, "lr": 0.01}, "task": {"name": "quadratic"}}
            recs, gap = [], 1.0
            for r in range(0, 101, 10):
                recs.append({"round": r, "train_loss": None if r == 0 else float(gap),
                             "rel_gap": float(gap), "bytes_up": 16 * r * 5,
                             "bytes_down": 24 * r * 5 + 7 * seed, "wall_seconds": 0.01 * r})
                # rounded: numpy's exp differs in the last bit between CPUs (SIMD dispatch)
                gap *= rate ** 10 * round(float(np.exp(rng.normal(0, 0.3))), 9)
            d = root / "quadratic" / method / f"seed{seed}"
            _write_run(d, cfg, _summary(cfg, method, "quadratic", "rel_gap", "min", recs), recs)
            out.append(str(d / "summary.json"))
    return out


def _acc_curve(rng, start, top, speed, rounds, dev=True):
    recs = []
    for r in rounds:
        acc = top - (top - start) * float(np.exp(-speed * r)) + float(rng.normal(0, 0.01))
        acc = float(np.clip(round(acc * 200) / 200, 0.0, 1.0))
        rec = {"round": r, "accuracy": acc, "loss": float(1.2 - acc), "train_loss": float(1.3 - acc)}
        if dev:
            rec["dev_accuracy"] = float(np.clip(acc + rng.normal(0, 0.02), 0, 1))
        recs.append(rec)
    return recs


def lm_runs(root: Path, rng) -> tuple[list[str], dict[str, list[str]]]:
    """Max-mode runs (accuracy with dev_accuracy): report runs and lr grids on two seeds."""
    rounds = list(range(0, 201, 20))
    speeds = {"hiso": 0.03, "decomfl": 0.012, "fedzo": 0.01, "mezo": 0.015}
    report = []
    for method, speed in speeds.items():
        for seed in range(3 if method in ("hiso", "decomfl") else 1):
            cfg = {"name": f"lm-{method}-seed{seed}", "seed": seed,
                   "method": {"name": method, "lr": 0.01}, "task": {"name": "lm"}}
            recs = _acc_curve(rng, 0.5, 0.9 if method != "fedzo" else 0.7, speed, rounds)
            for rec in recs:
                rec["bytes_up"] = 8 * rec["round"] * (1 if method != "fedzo" else 500)
                rec["bytes_down"] = 40 * rec["round"]
            d = root / "lm" / method / f"seed{seed}"
            _write_run(d, cfg, _summary(cfg, method, "lm", "accuracy", "max", recs), recs)
            report.append(str(d / "summary.json"))
    grids = {}
    for method, lrs in (("hiso", (0.005, 0.01, 0.02)), ("decomfl", (0.01, 0.02, 0.04))):
        grids[method] = []
        for i, lr in enumerate(lrs):
            for seed in (100, 101):
                cfg = {"name": f"lm-{method}", "seed": seed,
                       "method": {"name": method, "lr": lr}, "task": {"name": "lm"}}
                recs = _acc_curve(rng, 0.5, 0.85, 0.01 * (1 + i * (1 if method == "hiso" else 0.3)), rounds)
                for rec in recs:
                    rec["bytes_up"], rec["bytes_down"] = 8 * rec["round"], 40 * rec["round"]
                d = root / "lm_grid" / method / f"lr{lr:g}" / f"seed{seed}"
                _write_run(d, cfg, _summary(cfg, method, "lm", "accuracy", "max", recs), recs)
                grids[method].append(str(d))
    return report, grids


def digits_runs(root: Path, rng) -> list[str]:
    """Digits-shaped report runs: variants with method, lr, nu in their configs, five seeds."""
    variants = {"decomfl": ("decomfl", 0.005, None, 0.008), "hiso_nu0.95": ("hiso", 0.0035, 0.95, 0.02),
                "hiso_nu0.9": ("hiso", 0.0035, 0.9, 0.015), "fedavg": ("fedavg", 0.3, None, 0.05)}
    rounds = list(range(0, 301, 25))
    out = []
    for name, (method, lr, nu, speed) in variants.items():
        for seed in range(5):
            m = {"name": method, "lr": lr}
            if nu is not None:
                m.update(nu=nu, h_convention="nu_on_old")
            cfg = {"name": name, "seed": seed, "method": m, "task": {"name": "digits"}}
            recs = _acc_curve(rng, 0.1, 0.9, speed, rounds, dev=False)
            for rec in recs:
                rec["bytes_up"] = 8 * rec["round"] * (1 if method != "fedavg" else 3000)
                rec["bytes_down"] = 60 * rec["round"] + seed
            d = root / "digits" / name / f"seed{seed}"
            _write_run(d, cfg, _summary(cfg, method, "digits", "accuracy", "max", recs), recs)
            out.append(str(d / "summary.json"))
    return out


def build(root: Path) -> list[list[str]]:
    """Write every run directory under ``root`` (relative paths below it); the command list."""
    rng = np.random.default_rng(20261202)
    quad = quadratic_runs(root, rng)
    lm, grids = lm_runs(root, rng)
    digits = digits_runs(root, rng)
    rel = lambda ps: [str(Path(p).relative_to(root)) for p in ps]
    # a relative path: the table prints it
    (root / "paper_values.csv").write_bytes((REPO / "reference" / "paper_values.csv").read_bytes())
    paper = "paper_values.csv"
    return [
        ["aggregate", *rel(quad), "--out", "quad_metrics.csv"],
        ["table", "convergence", "quad_metrics.csv", "--out", "quad.md", "--csv", "quad.csv"],
        ["table", "convergence", "quad_metrics.csv", "--out", "quad_t.md", "--csv", "quad_t.csv",
         "--target", "0.001", "--title", "Quadratic | demo"],
        ["aggregate", *rel(lm), "--out", "lm_metrics.csv"],
        ["table", "convergence", "lm_metrics.csv", "--out", "lm.md", "--csv", "lm.csv",
         "--title", "LM smoke", "--reach", "0.8", "--reference", "decomfl"],
        ["table", "convergence", "lm_metrics.csv", "--out", "lm_paper.md", "--csv", "lm_paper.csv",
         "--title", "opt on sst2", "--reference", "decomfl", "--paper", paper,
         "--paper-model", "opt-125m", "--paper-task", "sst2"],
        ["select", *rel(grids["hiso"]), "--out", "sel_hiso.json", "--last", "0"],
        ["select", *rel(grids["decomfl"]), "--out", "sel_decomfl.json"],
        ["table", "selection", "sel_hiso.json", "sel_decomfl.json", "--out", "sel.md", "--csv", "sel.csv",
         "--title", "LM smoke tier: learning-rate selection on the dev split"],
        ["aggregate", *rel(digits), "--out", "digits_metrics.csv"],
        ["digits", "table", "speedup", "digits_metrics.csv", "--baseline", "decomfl",
         "--out", "digits.md", "--csv", "digits.csv"],
    ]


# The outputs compared byte for byte (the aggregated metrics and the selection JSONs too).
OUTPUTS = ("quad_metrics.csv", "quad.md", "quad.csv", "quad_t.md", "quad_t.csv", "lm_metrics.csv",
           "lm.md", "lm.csv", "lm_paper.md", "lm_paper.csv", "sel_hiso.json", "sel_decomfl.json",
           "sel.md", "sel.csv", "digits_metrics.csv", "digits.md", "digits.csv", "theory.md",
           "theory.csv")


def theory_tables(root: Path) -> None:
    """The theory verdict table's writers on fixed checks (the numbers come from the runs)."""
    from hiso.experiments import stats
    from hiso.report import theory as report

    checks = [
        stats.Check("a1", "dsweep", "rounds do not grow with d | x", 0.0312345, -0.1, 0.15,
                    "slope <= 0.2", "PASS", "slope of log rounds on log d"),
        stats.Check("a2", "zsweep", "rounds grow with zeta", 0.91234, 0.8, 1.05, "slope >= 0.8",
                    "PASS", "fit over 5 zetas\nand 10 seeds"),
        stats.Check("a3", "noise", "noise floor", 123456.0, float("nan"), float("nan"), "",
                    "INFO", "no threshold"),
        stats.Check("a4", "local", "local steps", 2.5e-7, 1e-7, 4e-7, "< 1e-6", "FAIL", "x"),
    ]
    (root / "theory.md").write_text(report.checks_markdown(checks) + "\n")
    (root / "theory.csv").write_text(report.checks_csv(checks))


def produce(root: Path) -> None:
    """Build the runs under ``root`` and run every command there (cwd = root)."""
    import os

    from hiso.cli import main

    commands = build(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for argv in commands:
            rc = main(argv)
            if rc != 0:
                raise RuntimeError(f"hiso {' '.join(argv)}: exit {rc}")
        theory_tables(root)
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/golden/runs.py --regenerate")
    with tempfile.TemporaryDirectory() as tmp:
        produce(Path(tmp))
        EXPECTED.mkdir(exist_ok=True)
        for name in OUTPUTS:
            (EXPECTED / name).write_bytes((Path(tmp) / name).read_bytes())
    print(f"wrote {len(OUTPUTS)} files to {EXPECTED}")
