"""Rounds against the whitening rank zeta at a fixed dimension (issue #3, second experiment).

d = 1000; heads of k eigenvalues log-spaced in [1, 100] (k in 8 ... 128) over the d-sweep's tiny
tail (total ``tail_share * eps``), eps = 1e-2, the initial error of norm 1 on the head. With the
oracle H each head eigenvalue (>= 1 >> eps) adds ~1 to zeta, so zeta ~ k. HiSo runs at the
theory step 1/(zeta + 2); the prediction is (zeta + 2) ln(1/target) rounds, linear in zeta.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import theory
from . import runs
from .runs import RunSpec
from .stats import Threshold, fmt, make_check, median

NAME = "zsweep"


def task_for(k: int, cfg: dict) -> dict:
    eps = float(cfg["eps"])
    return {"dim": int(cfg["dim"]), "init_scale": 1.0, "structure_seed": 0, "rotate": False,
            "spectrum": {"kind": "head_tail", "head_size": int(k), "lo": 1.0, "hi": 100.0,
                         "tail_total": float(cfg["tail_share"]) * eps},
            "init_dims": int(k)}


def specs(cfg: dict, common: dict) -> list[RunSpec]:
    out = []
    eps = float(cfg["eps"])
    for k in cfg["heads"]:
        task = task_for(k, cfg)
        zeta = runs.curvature({"name": "quadratic", **task}).zeta(eps)
        lr = 1.0 / (zeta + 2.0)
        for seed in common["seeds"]:
            out.append(RunSpec(
                f"k{k}/seed{seed}",
                runs.base_config(common, name=f"{NAME}-k{k}", seed=seed, task=task,
                                 method={"name": "hiso_oracle", "lr": lr, "eps": eps},
                                 rounds=int(cfg["cap"]), every=int(cfg["every"]),
                                 stop_below=float(common["target"])),
                {"k": int(k), "zeta": zeta, "seed": int(seed)}))
    return out


def run(cfg: dict, common: dict, out: Path) -> None:
    todo = specs(cfg, common)
    runs.execute(todo, out)
    runs.write_index(out, NAME, todo)


def analyse(cfg: dict, common: dict, out: Path, checks_cfg: dict) -> dict:
    results = runs.load_results(out)
    target = float(common["target"])
    ks = sorted({r.labels["k"] for r in results})
    zetas, rows = [], []
    for k in ks:
        group = runs.pick(results, k=k)
        # zeta as measured from the run's own H (any evaluation: H is fixed)
        zetas.append(float(np.median([r.series("zeta_H")[1][0] for r in group])))
        rows.append([r.rounds_to(target) for r in group])
    y = np.array([[v if math.isfinite(v) else np.nan for v in row] for row in rows])
    f = theory.fit_loglog_slope(zetas, y, n_boot=int(common["n_boot"]))
    preds = [theory.predicted_rounds(z, target) for z in zetas]
    meds = [median(row) for row in rows]
    pred_slope = theory.fit_loglog_slope(zetas, np.array(preds)).slope
    text = "; ".join(f"zeta={fmt(z)}: {fmt(m)} (pred {fmt(p)})" for z, m, p in zip(zetas, meds, preds))
    check = make_check(
        "zsweep.hiso_slope", NAME,
        f"HiSo (oracle H): rounds grow in proportion to zeta at d = {int(cfg['dim'])} (log-log slope)",
        (f.slope, f.lo, f.hi), Threshold.from_config(checks_cfg.get("hiso_zeta_slope")),
        lambda ok: (f"median rounds {text}; the prediction's own slope over these zeta is "
                    f"{fmt(pred_slope)} (the +2 bends it below 1); censored {int(np.isnan(y).sum())}."))
    return {"checks": [check], "zetas": zetas, "rows": rows, "preds": preds, "fit": f,
            "results": results}
