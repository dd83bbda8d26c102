"""Block-structured quadratics: does hiso_block's learned H track the block curvature (issue #15)?

Design (configs/theory.yaml ``blocks``): A diagonal with K contiguous equal blocks, block levels
log-spaced in [lo, hi], every coordinate its level times exp(N(0, s^2)) rescaled to the exact
block mean (``theory.block_spectrum``); ``main`` has a small within-block spread s, ``control``
a large one (a block-wise H cannot follow it: the full-diagonal oracle then pulls ahead). The
initial error is isotropic, of norm 1. Every method uses central differences with P Gaussian
directions per step, one client, tau = 1; hiso_block and the block oracle use K blocks of d/K.

Methods: ``decomfl`` (ZO-SGD), ``hiso`` (learned diagonal), ``hiso_scalar`` (one learned value
per tensor: here one for the whole vector), ``hiso_oracle`` (H = Diag A + eps), ``block_oracle``
(``hiso_oracle`` with Diag A averaged over the K blocks) and ``hiso_block``.

Steps: a factor-2 grid (``hiso.experiments.tuning``) around a base step, searched on the
selection seed at the smallest d and reused as the same multiple of the base at every d (the
base scales with the problem, the multiple is what is tuned): base P / (zeta + P + 1) for the
preconditioned methods (zeta: the oracle's whitening rank), P / (Tr A + (P + 1) L) for those that
start at H = 1. Round caps: ``cap_factor`` x the oracle's predicted rounds (zeta + P + 1) / P
ln(1/target); a run that has not reached the target by then is censored.

Scale: the whitening rank of any H that is constant on K equal blocks grows like d, so every
method's rounds grow like d (the issue's "flat in d" cannot hold in this design; the table says
so with the measured slopes). What can be tested is whether hiso_block approaches the block
oracle and beats the learned diagonal, and whether its h ranks the block curvatures.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import io, theory
from . import runs
from .illcond import scale_free_zeta
from .runs import RunSpec
from .stats import Threshold, bootstrap, fmt, make_check, median
from .tuning import Grid, scores_from_rounds, search, select

NAME = "blocks"
PRECONDITIONED = ("hiso_oracle", "block_oracle", "hiso_block")
LEARNED = ("hiso", "hiso_scalar", "hiso_block")


def task_for(design: str, d: int, cfg: dict) -> dict:
    return {"dim": int(d), "init_scale": 1.0, "structure_seed": 0, "rotate": False,
            "spectrum": {"kind": "blocks", "blocks": int(cfg["blocks"]), "lo": float(cfg["lo"]),
                         "hi": float(cfg["hi"]), "log_sd": float(cfg["designs"][design]["within_sd"])}}


def block_size(d: int, cfg: dict) -> int:
    return int(d) // int(cfg["blocks"])


def base_lr(method: str, curv: runs.Curvature, cfg: dict) -> float:
    P = int(cfg["perturbations"])
    if method in PRECONDITIONED:
        return P / (curv.zeta(float(cfg["eps"])) + P + 1.0)
    return P / (curv.trace + (P + 1.0) * curv.L)


def cap_for(curv: runs.Curvature, cfg: dict, target: float) -> int:
    P = int(cfg["perturbations"])
    pred = (curv.zeta(float(cfg["eps"])) + P + 1.0) / P * math.log(1.0 / target)
    return int(math.ceil(float(cfg["cap_factor"]) * pred))


def method_block(method: str, d: int, cfg: dict, lr: float) -> dict:
    m = {"lr": float(lr), "perturbations": int(cfg["perturbations"]), "mu": float(cfg["mu"]),
         "difference": "central"}
    eps = float(cfg["eps"])
    if method == "decomfl":
        return {"name": "decomfl", **m}
    if method in ("hiso", "hiso_scalar"):
        ld = cfg["learned"]
        return {"name": method, **m, "nu": float(ld["nu"]), "eps": float(ld["eps"]),
                "h_convention": "nu_on_old", "h_source": "last_step"}
    if method == "hiso_oracle":
        return {"name": "hiso_oracle", **m, "eps": eps}
    if method == "block_oracle":
        return {"name": "hiso_oracle", **m, "eps": eps, "block_size": block_size(d, cfg)}
    if method == "hiso_block":
        hb = cfg["hiso_block"]
        return {"name": "hiso_block", **m, "eps": eps, "block_size": block_size(d, cfg),
                **{k: v for k, v in hb.items()}}
    raise ValueError(method)


class Runner:
    def __init__(self, cfg: dict, common: dict, out: Path):
        self.cfg, self.common, self.out = cfg, common, Path(out)
        self.target = float(common["target"])
        self.done: list[RunSpec] = []

    def spec(self, design: str, method: str, d: int, stage: str, k: int, grid: Grid, seed: int,
             cap: int) -> RunSpec:
        task = task_for(design, d, self.cfg)
        key = (f"{design}/{method}/tune/d{d}/k{k}/seed{seed}" if stage == "tune"
               else f"{design}/{method}/d{d}/seed{seed}")
        cfg = runs.base_config(self.common, name=f"{NAME}-{design}-{method}-d{d}", seed=seed,
                               task=task, method=method_block(method, d, self.cfg, grid.lr(k)),
                               rounds=cap, every=int(self.cfg["every"]), stop_below=self.target,
                               save_h=(method != "decomfl" and stage == "report"))
        labels = {"design": design, "method": method, "d": int(d), "stage": stage, "k": int(k),
                  "base": grid.base, "kmin": grid.kmin, "kmax": grid.kmax, "seed": int(seed),
                  "cap": int(cap)}
        return RunSpec(key, cfg, labels)

    def _run(self, spec: RunSpec) -> float:
        runs.execute_one(spec, self.out)
        self.done.append(spec)
        return runs.load_run(self.out / spec.key).rounds_to(self.target)

    def grid(self, method: str, curv: runs.Curvature) -> Grid:
        g = self.cfg["grids"]["preconditioned" if method in PRECONDITIONED else "unit_start"]
        return Grid(base_lr(method, curv, self.cfg), int(g["kmin"]), int(g["kmax"]), int(g["k0"]))

    def method(self, design: str, method: str, dims: list[int]) -> None:
        d0 = min(dims)
        curv0 = runs.curvature({"name": "quadratic", **task_for(design, d0, self.cfg)})
        grid0 = self.grid(method, curv0)
        cap0 = cap_for(curv0, self.cfg, self.target)
        seed = int(self.cfg["tune_seed"])
        scores = search(lambda k, cap_k: self._run(self.spec(design, method, d0, "tune", k, grid0,
                                                              seed, cap_k)), grid0, cap0)
        k = select(scores)
        for d in dims:
            curv = runs.curvature({"name": "quadratic", **task_for(design, d, self.cfg)})
            grid, cap = self.grid(method, curv), cap_for(curv, self.cfg, self.target)
            for s in self.cfg["seeds"]:
                self._run(self.spec(design, method, d, "report", k, grid, int(s), cap))

    def run(self) -> list[RunSpec]:
        """Every (design, method): the preconditioned methods and HiSo first (the verdict rows
        need them), then those that only give censored references. ``index.json`` is rewritten
        after each group, so an interrupted experiment can still be reported on what it has."""
        groups = [(design, method, dd) for design, dd in self.cfg["designs"].items()
                  for method in dd["methods"]]
        groups.sort(key=lambda g: g[1] not in PRECONDITIONED + ("hiso",))
        for design, method, dd in groups:
            self.method(design, method, [int(d) for d in dd["dims"].get(method, dd["dims"]["default"])])
            runs.write_index(self.out, NAME, self.done)
        return self.done


def run(cfg: dict, common: dict, out: Path) -> None:
    done = Runner(cfg, common, out).run()
    runs.write_index(out, NAME, done)


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


def block_means(values: np.ndarray, K: int) -> np.ndarray:
    """Means over K contiguous blocks of len(values) // K (the last takes the remainder)."""
    d = len(values)
    ids = np.minimum(np.arange(d) // (d // K), K - 1)
    return np.bincount(ids, weights=values) / np.bincount(ids)


def h_block_spearman(r: runs.RunResult, K: int) -> float:
    """Spearman of the final H's block means with the true block curvatures (NaN for a
    constant H or a run without a saved H)."""
    path = r.dir / "H.npy"
    if not path.is_file():
        return math.nan
    h = np.load(path).astype(np.float64)
    if np.ptp(h) == 0:  # one value for every coordinate (hiso_scalar on one tensor)
        return math.nan
    hb = block_means(h, K)
    ab = block_means(runs.curvature(r.config["task"]).diag, K)
    return theory.spearman(hb, ab)


def oracle_sf_zeta(r: runs.RunResult, eps: float) -> float:
    """Scale-free whitening rank of the full-diagonal oracle H = Diag A + eps on r's task."""
    diag = runs.curvature(r.config["task"]).diag
    b = diag / (diag + eps)
    return float(b.sum() / b.min())


def selection(results, target: float) -> dict:
    """(design, method) -> selected k, re-derived from the tuning runs; reported runs checked."""
    tune: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in results:
        if r.labels["stage"] == "tune":
            tune.setdefault((r.labels["design"], r.labels["method"]), {}).setdefault(
                r.labels["k"], []).append(r.rounds_to(target))
    sel = {key: select(scores_from_rounds(by_k)) for key, by_k in tune.items()}
    for r in results:
        if r.labels["stage"] == "report":
            key = (r.labels["design"], r.labels["method"])
            if r.labels["k"] != sel[key]:
                raise ValueError(f"{r.dir}: step exponent {r.labels['k']} is not the selected {sel[key]}")
    return sel


def summarise(results, cfg: dict, target: float) -> dict:
    K = int(cfg["blocks"])
    rep: dict[tuple[str, str], dict[int, dict]] = {}
    for r in results:
        if r.labels["stage"] != "report":
            continue
        e = rep.setdefault((r.labels["design"], r.labels["method"]), {}).setdefault(
            r.labels["d"], {"rounds": [], "spearman": [], "zeta_ratio": [], "cap": r.labels["cap"],
                            "lr": r.lr, "k": r.labels["k"], "runs": []})
        e["rounds"].append(r.rounds_to(target))
        e["runs"].append(r)
        if r.labels["method"] != "decomfl":
            e["spearman"].append(h_block_spearman(r, K))
            e["zeta_ratio"].append(scale_free_zeta(r) / oracle_sf_zeta(r, float(cfg["eps"])))
    return rep


def analyse(cfg: dict, common: dict, out: Path, checks_cfg: dict) -> dict:
    results = runs.load_results(out)
    target, n_boot = float(common["target"]), int(common["n_boot"])
    sel = selection(results, target)
    rep = summarise(results, cfg, target)
    th = checks_cfg.get("blocks", {})
    checks = []

    def rounds(design, method, d):
        return rep.get((design, method), {}).get(d, {}).get("rounds", [])

    def meds(design, method):
        by_d = rep.get((design, method), {})
        return ", ".join(f"d={d}: " + rounds_text(e) for d, e in sorted(by_d.items()))

    def slope(design, method):
        by_d = {d: e["rounds"] for d, e in rep.get((design, method), {}).items()}
        ds = sorted(by_d)
        y = np.array([[v if math.isfinite(v) else np.nan for v in by_d[d]] for d in ds])
        if len(ds) < 2 or np.isnan(y).all(axis=1).sum() > len(ds) - 2:
            return None, int(np.isnan(y).sum())
        return theory.fit_loglog_slope(ds, y, n_boot=n_boot), int(np.isnan(y).sum())

    top = max(rep.get(("main", "hiso_block"), {0: None}))
    fb, nb = slope("main", "hiso_block")
    fo, _ = slope("main", "block_oracle")
    checks.append(make_check(
        "blocks.flat_in_d", NAME,
        "hiso_block: rounds to target stay flat in d at fixed K (log-log slope; the issue's claim)",
        (fb.slope, fb.lo, fb.hi) if fb else (math.nan,) * 3, Threshold.from_config(th.get("flat_in_d")),
        lambda ok: (f"median rounds {meds('main', 'hiso_block')}; censored {nb}. Block oracle's "
                    f"slope {fmt(fo.slope) if fo else 'NaN'} ({meds('main', 'block_oracle')}). "
                    + ("" if ok else "With K equal blocks the whitening rank of any block-wise H "
                       "grows like d, so the oracle's rounds grow like d too: flatness would need "
                       "a spectrum whose effective dimension is fixed."))))
    ratio = bootstrap([rounds("main", "hiso_block", top), rounds("main", "block_oracle", top)],
                      lambda m: m[0] / m[1], n_boot=n_boot)
    checks.append(make_check(
        "blocks.vs_block_oracle", NAME,
        f"hiso_block approaches the block oracle: median rounds ratio at d = {top}",
        ratio, Threshold.from_config(th.get("vs_block_oracle")),
        lambda ok: (f"hiso_block {meds('main', 'hiso_block')}; block oracle "
                    f"{meds('main', 'block_oracle')}; full-diagonal oracle {meds('main', 'hiso_oracle')}.")))
    lrn = max(rep.get(("main", "hiso"), {0: None}))
    ratio = bootstrap([rounds("main", "hiso_block", lrn), rounds("main", "hiso", lrn)],
                      lambda m: m[0] / m[1], n_boot=n_boot)
    checks.append(make_check(
        "blocks.vs_learned_diagonal", NAME,
        f"hiso_block needs fewer rounds than HiSo's learned diagonal (ratio at d = {lrn})",
        ratio, Threshold.from_config(th.get("vs_learned_diagonal")),
        lambda ok: (f"HiSo {meds('main', 'hiso')}; hiso_scalar {meds('main', 'hiso_scalar')}; "
                    f"ZO-SGD {meds('main', 'decomfl')}; '>' marks runs censored at their cap "
                    f"(a ratio against a censored median is 0: an upper bound).")))
    sp = rep.get(("main", "hiso_block"), {}).get(top, {}).get("spearman", [])
    sp_h = rep.get(("main", "hiso"), {}).get(lrn, {}).get("spearman", [])
    checks.append(make_check(
        "blocks.spearman", NAME, f"Spearman(h_b, a_b) of hiso_block's final H, d = {top}",
        bootstrap([sp], lambda m: m[0], n_boot=n_boot), Threshold.from_config(th.get("spearman")),
        f"per seed {', '.join(fmt(v) for v in sp)}; HiSo's learned diagonal (block means of H): "
        f"{', '.join(fmt(v) for v in sp_h)} at d = {lrn}."))
    zr = rep.get(("main", "hiso_block"), {}).get(top, {}).get("zeta_ratio", [])
    zb = rep.get(("main", "block_oracle"), {}).get(top, {}).get("zeta_ratio", [])
    zh = rep.get(("main", "hiso"), {}).get(lrn, {}).get("zeta_ratio", [])
    checks.append(make_check(
        "blocks.whitening_rank", NAME,
        f"Whitening rank of hiso_block's final H over the full oracle's (scale-free), d = {top}",
        bootstrap([zr], lambda m: m[0], n_boot=n_boot), Threshold.from_config(th.get("whitening_rank")),
        f"block oracle {', '.join(fmt(v) for v in zb)}; HiSo's learned diagonal "
        f"{', '.join(fmt(v) for v in zh)} (d = {lrn}). Scale-free: zeta(H) / lambda_min(H^-1/2 A H^-1/2)."))
    if ("control", "hiso_block") in rep:
        ctop = max(rep[("control", "hiso_block")])
        ratio = bootstrap([rounds("control", "hiso_block", ctop), rounds("control", "block_oracle", ctop)],
                          lambda m: m[0] / m[1], n_boot=n_boot)
        checks.append(make_check(
            "blocks.control_vs_block_oracle", NAME,
            f"Control (large within-block spread): hiso_block vs the block oracle, d = {ctop}",
            ratio, Threshold.from_config(th.get("control_vs_block_oracle")),
            lambda ok: (f"hiso_block {meds('control', 'hiso_block')}; block oracle "
                        f"{meds('control', 'block_oracle')}; full oracle {meds('control', 'hiso_oracle')}.")))
        ratio = bootstrap([rounds("control", "block_oracle", ctop), rounds("control", "hiso_oracle", ctop)],
                          lambda m: m[0] / m[1], n_boot=n_boot)
        checks.append(make_check(
            "blocks.control_block_cost", NAME,
            f"Control: what a block-wise H gives up, block oracle over full oracle rounds, d = {ctop}",
            ratio, Threshold(), "informative: within-block spread a block-wise H cannot whiten."))
    return {"checks": checks, "rep": rep, "selection": sel}


def rounds_text(e: dict) -> str:
    """A run group's median rounds, or '> cap' when censored."""
    m = median(e["rounds"])
    return fmt(m) if math.isfinite(m) else f"> {e['cap']}"
