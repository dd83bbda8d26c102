"""HiSo's noise floor against d for three kinds of noise (issue #3, noise experiment).

Problem: the fixed-trace head (ten eigenvalues log-spaced in [1, 100]) over a tail of d - 10
eigenvalues of total ``tail_share * eps``, so zeta, L and Tr A do not move with d; HiSo with the
oracle H = Diag(A) + eps (eps = 1e-2) at its theory step 1/(zeta + 2); the initial error on the
head. The runs go on for a fixed number of rounds (no early stop); the *floor* of a run is the
mean of f - f* over its evaluations from ``burn_in`` on, when the deterministic part has decayed
by (1 - 1/(zeta+2))^burn_in ~ 1e-6.

Noise kinds (``hiso.tasks.quadratic``): ``function`` adds N(0, sigma^2) to every evaluation,
``gradient_aligned`` has covariance sigma^2 A, ``gradient_isotropic`` covariance sigma^2 I. In the
exact expected-loss recursion (``theory.zo_noise_injection``) the first two inject noise whose
f-weighted total is proportional to zeta, while the isotropic kind carries Tr(H^{-1}), which
grows like d / eps along the flat tail: only its floor should grow with d. The sigmas are chosen
so that each floor is ~1e-3 at d = 100 (about 100x above the deterministic plateau that whitened
steps leave in the flat tail; the smaller tail than the d-sweep's keeps that plateau low). The
report also compares every measured floor with the recursion's exact expectation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import theory
from . import runs
from .runs import RunSpec
from .stats import Threshold, fmt, make_check, median

NAME = "noise"


def task_for(d: int, kind: str, sigma: float, cfg: dict) -> dict:
    eps = float(cfg["eps"])
    return {"dim": int(d), "init_scale": 1.0, "structure_seed": 0, "rotate": False,
            "spectrum": {"kind": "head_tail", "head_size": 10, "lo": 1.0, "hi": 100.0,
                         "tail_total": float(cfg["tail_share"]) * eps},
            "init_dims": 10, "noise": {"kind": kind, "sigma": float(sigma)}}


def specs(cfg: dict, common: dict) -> list[RunSpec]:
    out = []
    eps = float(cfg["eps"])
    for kind, sigma in cfg["kinds"].items():
        for d in cfg["dims"]:
            task = task_for(d, kind, sigma, cfg)
            zeta = runs.curvature({"name": "quadratic", **task}).zeta(eps)
            for seed in common["seeds"]:
                out.append(RunSpec(
                    f"{kind}/d{d}/seed{seed}",
                    runs.base_config(common, name=f"{NAME}-{kind}-d{d}", seed=seed, task=task,
                                     method={"name": "hiso_oracle", "lr": theory.hiso_step(zeta), "eps": eps},
                                     rounds=int(cfg["rounds"]), every=int(cfg["every"]), stop_below=None),
                    {"kind": kind, "sigma": float(sigma), "d": int(d), "zeta": zeta, "seed": int(seed)}))
    return out


def run(cfg: dict, common: dict, out: Path) -> None:
    todo = specs(cfg, common)
    runs.execute(todo, out)
    runs.write_index(out, NAME, todo)


def floor(r: runs.RunResult, burn_in: int) -> float:
    rounds, gap = r.series("f_gap")
    keep = rounds >= burn_in
    return float(np.mean(gap[keep])) if keep.any() else math.nan


def expected_floor(r: runs.RunResult, burn_in: int) -> float:
    """The exact expectation of the same window mean, from the run's own config."""
    task, method = r.config["task"], r.config["method"]
    curv = runs.curvature(task)
    h = curv.diag + float(method["eps"])
    eta, R = float(method["lr"]), int(r.config["federation"]["rounds"])
    k = int(task["init_dims"])
    s0 = np.zeros_like(curv.diag)
    s0[:k] = float(task["init_scale"]) ** 2 / k
    inject = theory.zo_noise_injection(curv.diag, h, eta, task["noise"]["kind"],
                                       float(task["noise"]["sigma"]), float(method["mu"]))
    f = theory.expected_losses_noisy(curv.diag, h, eta, s0, R, inject)
    rounds, _ = r.series("f_gap")
    rounds = rounds[rounds >= burn_in]
    return float(np.mean(f[rounds]))


def analyse(cfg: dict, common: dict, out: Path, checks_cfg: dict) -> dict:
    results = runs.load_results(out)
    burn, n_boot = int(cfg["burn_in"]), int(common["n_boot"])
    data, checks = {}, []
    for kind in cfg["kinds"]:
        ds = sorted({r.labels["d"] for r in runs.pick(results, kind=kind)})
        rows, preds = [], []
        for d in ds:
            group = runs.pick(results, kind=kind, d=d)
            rows.append([floor(r, burn) for r in group])
            preds.append(expected_floor(group[0], burn))  # same config up to the seed
        y = np.array(rows)
        f = theory.fit_loglog_slope(ds, y, n_boot=n_boot)
        pf = theory.fit_loglog_slope(ds, np.array(preds))
        ratios = [median(row) / p for row, p in zip(rows, preds)]
        data[kind] = {"d": ds, "rows": rows, "preds": preds, "fit": f, "pred_fit": pf}
        evidence = (f"median floors {', '.join(f'd={d:g}: {fmt(median(row))}' for d, row in zip(ds, rows))}; "
                    f"exact expectation's slope {fmt(pf.slope)}, measured/expected "
                    f"{fmt(min(ratios))}-{fmt(max(ratios))}.")
        th = Threshold.from_config(checks_cfg.get(f"noise_{kind}_slope"))
        claim = {"function": "Function-value noise: HiSo's noise floor does not grow with d (slope)",
                 "gradient_aligned": "Curvature-aligned gradient noise: floor against d (slope; "
                                     "theory: flat)",
                 "gradient_isotropic": "Isotropic gradient noise: floor against d (slope; theory: "
                                       "grows with Tr(H^-1) ~ d)"}[kind]
        checks.append(make_check(f"noise.{kind}_slope", NAME, claim, (f.slope, f.lo, f.hi), th,
                                 evidence))
    return {"checks": checks, "data": data, "results": results}
