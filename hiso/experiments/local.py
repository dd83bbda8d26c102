"""Local steps tau and clients m against Corollary 3's shape (issue #3, stochastic setting).

Corollary 3 bounds the average over R rounds by O(sqrt(zeta/(tau m R))) + O(sqrt(tau kappa/(m R)))
with the step eta ~ sqrt(m / (tau R zeta)). Design: the fixed-trace head over a tiny tail at
d = ``dim`` (zeta ~ 10, kappa = Tr A / L ~ 2.5), HiSo with the oracle H, curvature-aligned
gradient noise, m clients that hold the same data (heterogeneity 0, all sampled, each with its
own noise), tau local steps per round, R rounds, eta = sqrt(m / (tau R zeta)) (below the
deterministic stability step 1/(zeta + 2) on the whole grid). Measured per run: the mean of
f - f* over the evaluations of rounds 0..R (the analogue of the corollary's average over rounds).

There is no threshold in the issue: the report gives the least-squares (non-negative) fit of
``a sqrt(zeta/(tau m R)) + b sqrt(tau kappa/(m R))`` to the medians, its error, and the measured
exponents of tau and m, as informative rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import optimize

from .. import theory
from . import runs
from .runs import RunSpec
from .stats import Threshold, fmt, make_check, median

NAME = "local"


def task_for(cfg: dict) -> dict:
    eps = float(cfg["eps"])
    return {"dim": int(cfg["dim"]), "init_scale": 1.0, "structure_seed": 0, "rotate": False,
            "spectrum": {"kind": "head_tail", "head_size": 10, "lo": 1.0, "hi": 100.0,
                         "tail_total": float(cfg["tail_share"]) * eps},
            "init_dims": 10, "noise": {"kind": cfg["noise"], "sigma": float(cfg["sigma"])}}


def step(zeta: float, tau: int, m: int, rounds: int) -> float:
    return min(theory.hiso_step(zeta), math.sqrt(m / (tau * rounds * zeta)))


def specs(cfg: dict, common: dict) -> list[RunSpec]:
    task = task_for(cfg)
    curv = runs.curvature({"name": "quadratic", **task})
    eps, R = float(cfg["eps"]), int(cfg["rounds"])
    zeta = curv.zeta(eps)
    out = []
    for tau in cfg["taus"]:
        for m in cfg["clients"]:
            lr = step(zeta, int(tau), int(m), R)
            for seed in common["seeds"]:
                out.append(RunSpec(
                    f"tau{tau}_m{m}/seed{seed}",
                    runs.base_config(common, name=f"{NAME}-tau{tau}-m{m}", seed=seed, task=task,
                                     method={"name": "hiso_oracle", "lr": lr, "eps": eps},
                                     rounds=R, every=int(cfg["every"]), stop_below=None,
                                     clients=int(m), local_steps=int(tau)),
                    {"tau": int(tau), "m": int(m), "zeta": zeta, "kappa": curv.trace / curv.L,
                     "seed": int(seed)}))
    return out


def run(cfg: dict, common: dict, out: Path) -> None:
    todo = specs(cfg, common)
    runs.execute(todo, out)
    runs.write_index(out, NAME, todo)


def average_gap(r: runs.RunResult) -> float:
    _, gap = r.series("f_gap")
    return float(np.mean(gap))


def fit_shape(tau, m, y, zeta, kappa, R):
    """Non-negative least squares of y ~ a t1 + b t2 in relative terms (weights 1/y)."""
    t1, t2 = theory.corollary3_terms(zeta, kappa, tau, m, R)
    A = np.stack([t1, t2], axis=1) / y[:, None]
    coef, _ = optimize.nnls(A, np.ones_like(y))
    pred = np.stack([t1, t2], axis=1) @ coef
    return coef, pred


def analyse(cfg: dict, common: dict, out: Path, checks_cfg: dict) -> dict:
    results = runs.load_results(out)
    R = int(cfg["rounds"])
    cells = sorted({(r.labels["tau"], r.labels["m"]) for r in results})
    zeta, kappa = results[0].labels["zeta"], results[0].labels["kappa"]
    tau = np.array([c[0] for c in cells], dtype=float)
    m = np.array([c[1] for c in cells], dtype=float)
    rows = [[average_gap(r) for r in runs.pick(results, tau=int(t), m=int(k))] for t, k in cells]
    y = np.array([median(row) for row in rows])
    coef, pred = fit_shape(tau, m, y, zeta, kappa, R)
    rel_err = np.abs(pred / y - 1.0)
    # measured exponents: log y = c + alpha log tau + beta log m (least squares)
    X = np.stack([np.ones_like(tau), np.log(tau), np.log(m)], axis=1)
    (c0, alpha, beta), *_ = np.linalg.lstsq(X, np.log(y), rcond=None)
    # bootstrap over seeds for the exponents
    rng = np.random.default_rng(0)
    boot = []
    arr = [np.asarray(row) for row in rows]
    for _ in range(int(common["n_boot"])):
        yb = np.array([np.median(a[rng.integers(0, a.size, a.size)]) for a in arr])
        boot.append(np.linalg.lstsq(X, np.log(yb), rcond=None)[0][1:])
    boot = np.array(boot)
    lo, hi = np.quantile(boot, [0.025, 0.975], axis=0)
    share2 = float(np.median(coef[1] * theory.corollary3_terms(zeta, kappa, tau, m, R)[1] / pred)) \
        if coef.any() else math.nan
    checks = [
        make_check("local.m_exponent", NAME,
                   "Clients m: exponent of the average f - f* in m (Corollary 3: -1/2)",
                   (beta, lo[1], hi[1]), Threshold(),
                   f"least squares over the {len(cells)} (tau, m) cells, eta = sqrt(m/(tau R zeta)), "
                   f"R = {R}, zeta = {fmt(zeta)}, kappa = {fmt(kappa)}."),
        make_check("local.tau_exponent", NAME,
                   "Local steps tau: exponent of the average f - f* in tau (Corollary 3: -1/2 from "
                   "the first term, up to +1/2 where the tau kappa term dominates)",
                   (alpha, lo[0], hi[0]), Threshold(),
                   f"fit a sqrt(zeta/(tau m R)) + b sqrt(tau kappa/(m R)): a = {fmt(coef[0])}, "
                   f"b = {fmt(coef[1])} (median share of the second term {fmt(share2)}); "
                   f"relative error of the fitted shape median {fmt(float(np.median(rel_err)))}, "
                   f"max {fmt(float(rel_err.max()))}."),
    ]
    return {"checks": checks, "cells": cells, "rows": rows, "y": y, "pred": pred, "coef": coef,
            "zeta": zeta, "kappa": kappa, "results": results}
