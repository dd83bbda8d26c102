"""Block quadratics at large d without d-sized vectors: an exact reduced simulation (issue #15).

On a quadratic whose curvature A is *exactly* constant on each block (a_b on n_b coordinates)
and a preconditioner H constant on the same blocks (h_b), the methods of the block experiment
(``blocks.py``) are invariant under rotations within a block. The error of block b enters
every scalar only through its norm r_b, so one round can be sampled exactly from a few
block-level random variables instead of P d Gaussians. With v the unit error of block b and
u_pb = alpha_pb v + w_pb (alpha_pb ~ N(0, 1), w_pb orthogonal to v),

    g_p   = sum_b (a_b / sqrt(h_b)) r_b alpha_pb              (central differences are exact)
    c_p   = sum_b (a_b / h_b) ||u_pb||^2,  ||u_pb||^2 = alpha_pb^2 + W_b[p, p]
    r_b' ^2 = (r_b - beta_b s.alpha_b)^2 + beta_b^2 s^T W_b s,  beta_b = lr / (P sqrt(h_b)), s = g

where W_b = [w_pb . w_qb] is Wishart(n_b - 1, I_P), drawn by Bartlett's decomposition. Next
round's directions are fresh, so only r' matters. f = 1/2 sum_b a_b r_b^2. One round costs
O(K P^2) whatever d is, so d = 1e5 (and more) is cheap. Every (step, seed) of a grid runs in
one batch.

Methods (all as in the engine, tau = 1, one client): ``decomfl`` (h = 1), ``hiso_oracle``
(h_b = a_b + eps: with exact blocks the full and the block oracle coincide), ``hiso_scalar``
(one tensor: h <- nu h + (1 - nu)(mean(Delta^2) + eps), mean(Delta^2) = sum_b ||sum_p s_p
u_pb||^2 / (h d P^2)) and ``hiso_block`` (the optimiser's own estimator,
:func:`hiso.optimizers.hiso_block.fit_curvature`, fed the same sufficient statistics). HiSo's
learned diagonal is not block-constant, so it has no reduced form (it runs in the engine only).

The reduction is checked against a full-dimensional simulation (tests/test_blocks_scale.py: the
same mean f after a few rounds) and against the engine (``engine_check``: rounds of both at
d = 300, rows of the hiso_block table).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
from pathlib import Path

from ..optimizers.hiso_block import fit_curvature
from .stats import fmt, median

METHODS = ("decomfl", "hiso_oracle", "hiso_scalar", "hiso_block")


@dataclass(frozen=True)
class Problem:
    """Block levels a [K] and sizes n [K] (exactly block-constant curvature)."""

    a: np.ndarray
    n: np.ndarray

    @property
    def d(self) -> int:
        return int(self.n.sum())

    def zeta(self, h: np.ndarray) -> float:
        """Whitening rank Tr(H^-1 A) / lambda_max(H^-1 A) of a block-constant H (the theory's)."""
        w = self.a / h
        return float((self.n * w).sum() / w.max())

    def sf_zeta(self, h: np.ndarray) -> float:
        """Scale-free whitening rank Tr(H^-1 A) / lambda_min(H^-1 A) (blocks.py's ratio)."""
        w = self.a / h
        return float((self.n * w).sum() / w.min())


def equal_blocks(d: int, K: int, lo: float, hi: float) -> Problem:
    """K equal blocks (the last takes the remainder), levels log-spaced in [lo, hi]."""
    size = d // K
    n = np.full(K, size, dtype=np.float64)
    n[-1] += d - size * K
    a = np.exp(np.linspace(math.log(lo), math.log(hi), K)) if K > 1 else np.array([float(lo)])
    return Problem(a, n)


def head_tail_blocks(d: int, K: int, lo: float, hi: float, head_size: int, tail_total: float) -> Problem:
    """K - 1 blocks of ``head_size`` with levels log-spaced in [lo, hi] and one tail block of
    the remaining d - (K - 1) head_size coordinates whose curvatures sum to ``tail_total`` (the
    dimension sweep's tiny tail): with tail_total << eps the tail adds about tail_total / eps to
    the oracle's whitening rank, so it stays about (K - 1) head_size whatever d."""
    head = equal_blocks((K - 1) * head_size, K - 1, lo, hi)
    tail = d - (K - 1) * head_size
    if tail < 1:
        raise ValueError(f"d = {d} leaves no tail after {K - 1} blocks of {head_size}")
    return Problem(np.append(head.a, tail_total / tail), np.append(head.n, float(tail)))


@dataclass(frozen=True)
class Settings:
    P: int
    eps: float                      # oracle / hiso_block: h = a + eps
    nu: float = 0.95                # hiso_scalar
    scalar_eps: float = 1e-8
    h_init: float = 1.0             # hiso_block's a_0 and H_0
    window: int = 20
    max_factor: float = 10.0
    ridge: float = 1e-3
    divergence_factor: float = 1e6


def wishart_factors(rng: np.random.Generator, df: np.ndarray, shape: tuple, P: int) -> np.ndarray:
    """Lower-triangular L with L L^T ~ Wishart(df, I_P) (Bartlett), shape + (K, P, P); df [K]."""
    K = len(df)
    L = np.tril(rng.standard_normal(shape + (K, P, P)), -1)
    dof = df[:, None] - np.arange(P)[None, :]                       # [K, P]
    idx = np.arange(P)
    L[..., idx, idx] = np.sqrt(rng.chisquare(np.broadcast_to(dof, shape + (K, P))))
    return L


#: rounds of random numbers drawn at once per run (a run's draws depend only on its seed)
CHUNK = 256


def simulate(problem: Problem, method: str, lrs: np.ndarray, seeds: list[int], s: Settings,
             cap: int, target: float) -> dict:
    """Rounds to f <= target f0 for every (lr, seed) (``inf``: censored at ``cap`` or diverged),
    the final block h and the final f / f0 of each run (a run stops at the target). Batch B = len(lrs) x len(seeds); seeds are independent
    generators (a run's numbers do not depend on which other runs share its batch)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    a, n = problem.a.astype(np.float64), problem.n.astype(np.float64)
    K, P, d = len(a), int(s.P), problem.d
    if np.any(n < P + 1):
        raise ValueError(f"every block needs more than P = {P} coordinates")
    G, S = len(lrs), len(seeds)
    lr = np.repeat(np.asarray(lrs, dtype=np.float64), S)            # [B]
    rngs = [np.random.default_rng([int(sd), 15]) for sd in seeds] * G
    B = G * S
    # isotropic initial error of norm 1: block shares of a Gaussian's squared norm
    r2 = np.stack([g.chisquare(n) for g in rngs])
    r = np.sqrt(r2 / r2.sum(axis=1, keepdims=True))                  # [B, K]
    f0 = 0.5 * (a * r**2).sum(axis=1)
    if method == "decomfl":
        h = np.ones((B, K))
    elif method == "hiso_oracle":
        h = np.broadcast_to(a + s.eps, (B, K)).copy()
    elif method == "hiso_scalar":
        h = np.ones((B, K))
    else:
        est = np.full((B, K), float(s.h_init))
        h = est.copy()                       # H_0 = h_init, as the optimiser's init_state
        ring_G = np.zeros((B, s.window, K, K))
        ring_b = np.zeros((B, s.window, K))
        ring_h = np.ones((B, s.window, K))
    rounds = np.full(B, math.inf)
    alive = np.ones(B, dtype=bool)
    df = n - 1.0
    alpha_buf = np.zeros((B, CHUNK, K, P))
    L_buf = np.zeros((B, CHUNK, K, P, P))
    for t in range(1, cap + 1):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        j = (t - 1) % CHUNK
        if j == 0:
            for i in idx:
                alpha_buf[i] = rngs[i].standard_normal((CHUNK, K, P))
                L_buf[i] = wishart_factors(rngs[i], df, (CHUNK,), P)
        alpha, L = alpha_buf[idx, j], L_buf[idx, j]                               # [b, K, P(, P)]
        hb, rb = h[idx], r[idx]
        sg = np.einsum("bk,bkp->bp", a / np.sqrt(hb) * rb, alpha)                 # g [b, P]
        beta = lr[idx, None] / (P * np.sqrt(hb))                                  # [b, K]
        sa = np.einsum("bp,bkp->bk", sg, alpha)
        q = np.square(np.einsum("bkpq,bp->bkq", L, sg)).sum(axis=2)               # s^T W s
        r_new = np.sqrt(np.square(rb - beta * sa) + np.square(beta) * q)
        if method == "hiso_block":
            phi = np.square(alpha) + np.square(L).sum(axis=3)                     # ||u_pb||^2
            psi = phi / hb[:, :, None]                                            # [b, K, P]
            c = np.einsum("bk,bkp->bp", a / hb, phi).astype(np.float32).astype(np.float64)
            slot = (t - 1) % s.window
            ring_G[idx, slot] = np.einsum("bkp,blp->bkl", psi, psi)
            ring_b[idx, slot] = np.einsum("bkp,bp->bk", psi, c)
            ring_h[idx, slot] = hb
            for i in idx:
                est[i] = fit_curvature(est[i], n, ring_G[i], ring_b[i], ring_h[i],
                                       min(t, s.window), s.ridge, s.max_factor)
            h[idx] = est[idx] + s.eps
        elif method == "hiso_scalar":
            mean_sq = (np.square(sa) + q).sum(axis=1) / (hb[:, 0] * d * P * P)
            h[idx] = (s.nu * hb[:, 0] + (1 - s.nu) * (mean_sq + s.scalar_eps))[:, None]
        r[idx] = r_new
        f = 0.5 * (a * r_new**2).sum(axis=1)
        hit = f <= target * f0[idx]
        bad = ~np.isfinite(f) | (f > s.divergence_factor * f0[idx])
        rounds[idx[hit]] = t
        alive[idx[hit | bad]] = False
    f_end = 0.5 * (a * r**2).sum(axis=1) / f0
    return {"rounds": rounds.reshape(G, S), "h": h.reshape(G, S, K), "f": f_end.reshape(G, S)}


# --------------------------------------------------------------------------------------------
# The experiment (configs/theory.yaml ``blocks_scale``): `hiso theory run blocks_scale`
# --------------------------------------------------------------------------------------------

NAME = "blocks_scale"
RESULTS = "results.json"
PRECONDITIONED = ("hiso_oracle", "hiso_block")


def problem_for(design: dict, d: int, cfg: dict) -> Problem:
    K, lo, hi = int(cfg["blocks"]), float(cfg["lo"]), float(cfg["hi"])
    if design["kind"] == "equal":
        return equal_blocks(d, K, lo, hi)
    if design["kind"] == "head_tail":
        return head_tail_blocks(d, K, lo, hi, int(design["head_size"]), float(design["tail_total"]))
    raise ValueError(f"blocks_scale design kind {design['kind']!r}")


def settings(cfg: dict) -> Settings:
    hb, ld = cfg["hiso_block"], cfg["learned"]
    return Settings(P=int(cfg["perturbations"]), eps=float(cfg["eps"]), nu=float(ld["nu"]),
                    scalar_eps=float(ld["eps"]), h_init=float(hb["h_init"]), window=int(hb["window"]),
                    max_factor=float(hb["max_factor"]), ridge=float(hb["ridge"]))


def base_lr(method: str, pr: Problem, s: Settings) -> float:
    """The theory's step, as in blocks.py: P / (zeta + P + 1) with the oracle's zeta for the
    preconditioned methods, P / (Tr A + (P + 1) L) for those that start at H = 1."""
    if method in PRECONDITIONED:
        return s.P / (pr.zeta(pr.a + s.eps) + s.P + 1.0)
    return s.P / (float((pr.n * pr.a).sum()) + (s.P + 1.0) * float(pr.a.max()))


def predicted_rounds(pr: Problem, s: Settings, target: float) -> float:
    """The oracle's predicted rounds (zeta + P + 1) / P ln(1 / target)."""
    return (pr.zeta(pr.a + s.eps) + s.P + 1.0) / s.P * math.log(1.0 / target)


def jobs(cfg: dict) -> list[tuple[str, str, int]]:
    """(design, method, d) in increasing d (so an interrupted run has every method at small d;
    a d above tune_max_d reuses the exponent selected at a smaller d, which runs first)."""
    out = []
    for dname, design in cfg["designs"].items():
        for method in design["methods"]:
            for d in design["dims"].get(method, design["dims"]["default"]):
                out.append((dname, method, int(d)))
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(out, key=lambda j: (j[2], list(cfg["designs"]).index(j[0]), order[j[1]]))


def run(cfg: dict, common: dict, out: Path) -> None:
    """Every (design, method, d): the step grid on the tuning seeds (at d <= tune_max_d, walked
    with the pruning search of ``tuning.search``; above it, the exponent selected at the largest
    tuned d), then the report seeds at the selected step (``seeds_large`` above tune_max_d);
    last the engine check. One JSON file, rewritten after each group."""
    from .. import io
    from .tuning import Grid, search, select

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target, s = float(common["target"]), settings(cfg)
    rows: list[dict] = []
    chosen: dict[tuple[str, str], int] = {}
    check: list[dict] = []
    for dname, method, d in jobs(cfg):
        design = cfg["designs"][dname]
        pr = problem_for(design, d, cfg)
        base = base_lr(method, pr, s)
        cap = int(math.ceil(float(cfg["cap_factor"][method]) * predicted_rounds(pr, s, target)))
        g = cfg["grids"][method]
        grid = Grid(base, int(g["kmin"]), int(g["kmax"]), int(g["k0"]))
        t0 = time.perf_counter()
        tune: dict[str, list[float]] | None = None
        large = d > int(cfg["tune_max_d"])
        if not large:
            tune = {}

            def evaluate(k: int, cap_k: int) -> float:
                r = simulate(pr, method, np.array([grid.lr(k)]), cfg["tune_seeds"], s, cap_k, target)
                tune[str(k)] = r["rounds"][0].tolist()
                return median(tune[str(k)])

            chosen[(dname, method)] = select(search(evaluate, grid, cap))
        k_sel = chosen[(dname, method)]
        seeds = cfg["seeds_large"] if large else cfg["seeds"]
        rep = simulate(pr, method, np.array([grid.lr(k_sel)]), seeds, s, cap, target)
        rows.append({"design": dname, "method": method, "d": d, "cap": cap, "base": base,
                     "k": k_sel, "kmin": grid.kmin, "kmax": grid.kmax, "tune": tune,
                     "seeds": list(seeds), "rounds": rep["rounds"][0].tolist(),
                     "h": rep["h"][0].tolist(), "a": pr.a.tolist(), "n": pr.n.tolist(),
                     "seconds": time.perf_counter() - t0})
        print(f"[blocks_scale] {dname}/{method}/d{d}: k={k_sel} rounds {rep['rounds'][0]} "
              f"(cap {cap}, {time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
        io.atomic_write_json(out / RESULTS, {"experiment": NAME, "rows": rows, "engine_check": check})
    if cfg.get("engine_check"):  # last: the engine is ~1000x slower per round than the reduction
        check = engine_check(cfg, common, out)
        io.atomic_write_json(out / RESULTS, {"experiment": NAME, "rows": rows, "engine_check": check})
    if cfg.get("engine_learned"):
        rows += engine_learned(cfg, common, out)
        io.atomic_write_json(out / RESULTS, {"experiment": NAME, "rows": rows, "engine_check": check})


def engine_check(cfg: dict, common: dict, out: Path) -> list[dict]:
    """The reduction against the engine: the block experiment's design with no within-block
    spread (curvature exactly block-constant) at d = ``engine_check.d``, the theory's step (k = 0),
    both ways on the same seeds (different random numbers: distributions, not runs, compare)."""
    from . import blocks, runs
    from .runs import RunSpec

    ec, target, s = cfg["engine_check"], float(common["target"]), settings(cfg)
    d = int(ec["d"])
    pr = equal_blocks(d, int(cfg["blocks"]), float(cfg["lo"]), float(cfg["hi"]))
    bcfg = {**cfg, "designs": {"exact": {"within_sd": 0.0}}, "mu": float(ec["mu"]), "every": 1}
    rows = []
    for method in ec["methods"]:
        lr = base_lr(method, pr, s)
        cap = int(math.ceil(float(cfg["cap_factor"][method]) * predicted_rounds(pr, s, target)))
        engine = []
        for seed in ec["seeds"]:
            task = blocks.task_for("exact", d, bcfg)
            mb = blocks.method_block("block_oracle" if method == "hiso_oracle" else method, d, bcfg, lr)
            rc = runs.base_config(common, name=f"{NAME}-engine-{method}", seed=int(seed), task=task,
                                  method=mb, rounds=cap, every=1, stop_below=target)
            key = f"engine/{method}/seed{seed}"
            runs.execute_one(RunSpec(key, rc), out)
            engine.append(runs.load_run(out / key).rounds_to(target))
        red = simulate(pr, method, np.array([lr]), ec["seeds"], s, cap, target)["rounds"][0].tolist()
        rows.append({"method": method, "d": d, "lr": lr, "engine": engine, "reduced": red})
    return rows


# --------------------------------------------------------------------------------------------
# Analysis: verdict rows (configs/theory.yaml checks.blocks) from results.json
# --------------------------------------------------------------------------------------------


def load(out: Path) -> dict:
    import json

    from ..errors import UserError

    path = Path(out) / RESULTS
    if not path.is_file():
        raise UserError(f"{path}: missing (run `hiso theory run blocks_scale` first)")
    res = json.loads(path.read_text())

    def rounds(values):  # censored runs are written as null
        return [math.inf if v is None else float(v) for v in values]

    for r in res["rows"]:
        r["rounds"] = rounds(r["rounds"])
        if r.get("tune"):
            r["tune"] = {k: rounds(v) for k, v in r["tune"].items()}
    for e in res.get("engine_check", []):
        e["engine"], e["reduced"] = rounds(e["engine"]), rounds(e["reduced"])
    return res


def _finite_or_nan(values) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def _text(row: dict) -> str:
    per = ", ".join(fmt(v) if math.isfinite(v) else f">{row['cap']}" for v in row["rounds"])
    return f"d={row['d']}: {per}"


def analyse(cfg: dict, common: dict, out: Path, checks_cfg: dict) -> dict:
    from .. import theory
    from .stats import Threshold, bootstrap, make_check

    res = load(out)
    n_boot, target = int(common["n_boot"]), float(common["target"])
    th = checks_cfg.get("blocks", {})
    by: dict[tuple[str, str], dict[int, dict]] = {}
    for r in res["rows"]:
        by.setdefault((r["design"], r["method"]), {})[int(r["d"])] = r
    eps = float(cfg["eps"])
    checks = []

    def rows(design, method):
        return [by[(design, method)][d] for d in sorted(by.get((design, method), {}))]

    def listing(design, method):
        rs = rows(design, method)
        return "; ".join(_text(r) for r in rs) if rs else "not run"

    def slope(design, method, relative=False):
        rs = rows(design, method)
        if len(rs) < 2:
            return None, 0
        ys = []
        for r in rs:
            pr = Problem(np.asarray(r["a"]), np.asarray(r["n"]))
            scale = predicted_rounds(pr, settings(cfg), target) if relative else 1.0
            ys.append([v / scale for v in _finite_or_nan(r["rounds"])])
        width = max(len(y) for y in ys)
        y = np.array([y + [math.nan] * (width - len(y)) for y in ys])
        censored = sum(1 for r in rs for v in r["rounds"] if not math.isfinite(v))
        try:
            return theory.fit_loglog_slope([r["d"] for r in rs], y, n_boot=n_boot), censored
        except ValueError:
            return None, censored

    def sv(fit):
        return (fit.slope, fit.lo, fit.hi) if fit else (math.nan,) * 3

    def zeta_ratio(r):
        if "zeta_ratio" in r:  # engine rows: from the full final H
            return r["zeta_ratio"]
        pr = Problem(np.asarray(r["a"]), np.asarray(r["n"]))
        return [pr.sf_zeta(np.asarray(h)) / pr.sf_zeta(pr.a + eps) for h in r["h"]]

    def spearmans(r):
        return [theory.spearman(np.asarray(h), np.asarray(r["a"])) for h in r["h"]]

    for design in cfg["designs"]:
        fo, _ = slope(design, "hiso_oracle")
        fb, nb = slope(design, "hiso_block")
        checks.append(make_check(
            f"blocks_scale.{design}.oracle_slope", NAME,
            f"{design}: the oracle's (H = Diag A + eps) rounds against d (log-log slope): what the "
            f"design allows", sv(fo), Threshold(),
            f"oracle {listing(design, 'hiso_oracle')}. The oracle's whitening rank is "
            + ("~d (every block's whitened curvature is ~1)" if cfg["designs"][design]["kind"] == "equal"
               else "~(K - 1) x head_size whatever d (the tail's total curvature is << eps)") + "."))
        checks.append(make_check(
            f"blocks_scale.{design}.flat_in_d", NAME,
            f"{design}: hiso_block's rounds to target stay flat in d at fixed K (log-log slope)",
            sv(fb), Threshold.from_config(th.get("flat_in_d")),
            f"hiso_block {listing(design, 'hiso_block')}; censored {nb}; the oracle's slope "
            f"{fmt(fo.slope) if fo else 'NaN'}."))
        fr, _ = slope(design, "hiso_block", relative=True)
        checks.append(make_check(
            f"blocks_scale.{design}.flat_relative", NAME,
            f"{design}: hiso_block's rounds over the oracle's predicted rounds (zeta + P + 1)/P "
            f"ln(1/target), against d (log-log slope): flat if it tracks the oracle at every d",
            sv(fr), Threshold.from_config(th.get("flat_in_d")),
            "an added row, not a replacement of the one above: it asks whether the method keeps "
            "up with what the design allows."))
        common_d = sorted(set(by.get((design, "hiso_block"), {})) & set(by.get((design, "hiso_oracle"), {})))
        if common_d:
            top = common_d[-1]
            rb, ro = by[(design, "hiso_block")][top], by[(design, "hiso_oracle")][top]
            ratio = bootstrap([rb["rounds"], ro["rounds"]], lambda m: m[0] / m[1], n_boot=n_boot)
            checks.append(make_check(
                f"blocks_scale.{design}.vs_oracle", NAME,
                f"{design}: hiso_block over the oracle, median rounds, d = {top} "
                f"({len(rb['rounds'])} seed(s))", ratio, Threshold.from_config(th.get("vs_block_oracle")),
                f"per d (hiso_block / oracle medians): " + ", ".join(
                    f"{d}: {fmt(median(by[(design, 'hiso_block')][d]['rounds']) / median(by[(design, 'hiso_oracle')][d]['rounds']))}"
                    for d in common_d) + "."))
            sp = spearmans(rb)
            checks.append(make_check(
                f"blocks_scale.{design}.spearman", NAME,
                f"{design}: Spearman(h_b, a_b) of hiso_block's final H, d = {top}",
                bootstrap([sp], lambda m: m[0], n_boot=n_boot), Threshold.from_config(th.get("spearman")),
                f"per seed {', '.join(fmt(v) for v in sp)} (hiso_scalar and ZO-SGD: constant H, no ranking)."))
            zr = zeta_ratio(rb)
            others = []
            for m in ("hiso", "hiso_scalar", "decomfl"):
                if by.get((design, m)):
                    r = by[(design, m)][max(by[(design, m)])]
                    others.append(f"{m} {', '.join(fmt(v) for v in zeta_ratio(r))} (d = {r['d']})")
            checks.append(make_check(
                f"blocks_scale.{design}.whitening_rank", NAME,
                f"{design}: whitening rank of hiso_block's final H over the oracle's (scale-free), d = {top}",
                bootstrap([zr], lambda m: m[0], n_boot=n_boot), Threshold.from_config(th.get("whitening_rank")),
                "; ".join(others) + ". Scale-free: Tr(H^-1 A) / lambda_min(H^-1 A)." if others
                else "Scale-free: Tr(H^-1 A) / lambda_min(H^-1 A)."))
        for m, label in (("hiso", "HiSo's learned diagonal (engine)"), ("hiso_scalar", "hiso_scalar"),
                         ("decomfl", "ZO-SGD")):
            shared = sorted(set(by.get((design, "hiso_block"), {})) & set(by.get((design, m), {})))
            if not shared:
                continue
            d = shared[-1]
            rm = by[(design, m)][d]
            den = [min(v, rm["cap"]) for v in rm["rounds"]]
            cens = any(not math.isfinite(v) for v in rm["rounds"])
            ratio = bootstrap([by[(design, "hiso_block")][d]["rounds"], den], lambda v: v[0] / v[1],
                              n_boot=n_boot)
            fm, _ = slope(design, m)
            checks.append(make_check(
                f"blocks_scale.{design}.vs_{m}", NAME,
                f"{design}: hiso_block needs fewer rounds than {label} (median ratio, d = {d})"
                + (f" (upper bound: {label}'s censored runs enter at their cap)" if cens else ""),
                ratio, Threshold.from_config(th.get("vs_learned_diagonal")),
                f"{label} {listing(design, m)} (slope {fmt(fm.slope) if fm else 'NaN'}"
                + (f" [{fmt(fm.lo)}, {fmt(fm.hi)}]" if fm else "") + ")."))
    for e in res.get("engine_check", []):
        ratio = bootstrap([e["engine"], e["reduced"]], lambda m: m[0] / m[1], n_boot=n_boot)
        checks.append(make_check(
            f"blocks_scale.engine_check.{e['method']}", NAME,
            f"The reduction against the engine: {e['method']}, d = {e['d']}, engine over reduced "
            f"median rounds", ratio, Threshold(),
            f"engine {', '.join(fmt(v) for v in e['engine'])}; reduced "
            f"{', '.join(fmt(v) for v in e['reduced'])} (same lr {fmt(e['lr'])})."))
    return {"checks": checks, "by": by, "results": res}


def markdown_rows(res: dict, eps: float) -> tuple[list[str], list[list]]:
    """Every (design, method, d): rounds per seed, the step, Spearman and zeta ratio."""
    from .. import theory

    header = ["design", "method", "d", "seeds", "median rounds", "rounds per seed", "lr (k)", "cap",
              "Spearman(h_b, a_b)", "zeta(H) / zeta(oracle)"]
    out = []
    for (design, method), by_d in sorted(res["by"].items()):
        for d, r in sorted(by_d.items()):
            pr = Problem(np.asarray(r["a"]), np.asarray(r["n"]))
            zr = r.get("zeta_ratio") or [pr.sf_zeta(np.asarray(h)) / pr.sf_zeta(pr.a + eps) for h in r["h"]]
            sp = ([theory.spearman(np.asarray(h), pr.a) for h in r["h"]]
                  if method in ("hiso_block", "hiso") else [])
            m = median(r["rounds"])
            out.append([design, method + (" (engine)" if r.get("source") == "engine" else ""), d, len(r["rounds"]), fmt(m) if math.isfinite(m) else f"> {r['cap']}",
                        ", ".join(fmt(v) if math.isfinite(v) else f">{r['cap']}" for v in r["rounds"]),
                        f"{fmt(r['base'] * 2.0 ** r['k'])} ({r['k']})", r["cap"],
                        fmt(median(sp)) if sp else "-", fmt(median(zr))])
    return header, out


def engine_learned(cfg: dict, common: dict, out: Path) -> list[dict]:
    """HiSo's learned diagonal (no reduced form) in the engine on the ``equal`` design with no
    within-block spread, at ``engine_learned.dims``: the same pruned step search on the tuning
    seeds and report seeds as the reduced methods; rows in the reduced rows' format, with the
    final H's block means as ``h`` and its own scale-free whitening-rank ratio."""
    from . import blocks, runs
    from .runs import RunSpec
    from .tuning import Grid, search, select

    el, target, s = cfg["engine_learned"], float(common["target"]), settings(cfg)
    method = el["method"]
    rows = []
    for d in el["dims"]:
        d = int(d)
        pr = equal_blocks(d, int(cfg["blocks"]), float(cfg["lo"]), float(cfg["hi"]))
        bcfg = {**cfg, "designs": {"exact": {"within_sd": 0.0}}, "mu": float(el["mu"]),
                "every": int(el["every"])}
        base = base_lr(method, pr, s)
        cap = int(math.ceil(float(cfg["cap_factor"][method]) * predicted_rounds(pr, s, target)))
        g = cfg["grids"][method]
        grid = Grid(base, int(g["kmin"]), int(g["kmax"]), int(g["k0"]))

        def one(k: int, seed: int, cap_k: int, stage: str):
            rc = runs.base_config(common, name=f"{NAME}-engine-{method}-d{d}", seed=int(seed),
                                  task=blocks.task_for("exact", d, bcfg),
                                  method=blocks.method_block(method, d, bcfg, grid.lr(k)),
                                  rounds=cap_k, every=int(el["every"]), stop_below=target,
                                  save_h=stage == "report")
            key = f"engine/{method}/d{d}/{stage}/k{k}/seed{seed}"
            runs.execute_one(RunSpec(key, rc), out)
            return runs.load_run(out / key)

        tune: dict[str, list[float]] = {}

        def evaluate(k: int, cap_k: int) -> float:
            tune[str(k)] = [one(k, sd, cap_k, "tune").rounds_to(target) for sd in cfg["tune_seeds"]]
            return median(tune[str(k)])

        k_sel = select(search(evaluate, grid, cap))
        reps = [one(k_sel, sd, cap, "report") for sd in cfg["seeds"]]
        hs = [np.load(r.dir / "H.npy").astype(np.float64) for r in reps]
        ids = np.repeat(np.arange(len(pr.n)), pr.n.astype(int))
        a_full = pr.a[ids]
        zr = []
        for h in hs:
            w = a_full / h
            zr.append(float(w.sum() / w.min()) / pr.sf_zeta(pr.a + s.eps))
        rows.append({"design": "equal", "method": method, "d": d, "cap": cap, "base": base,
                     "k": k_sel, "kmin": grid.kmin, "kmax": grid.kmax, "tune": tune,
                     "seeds": list(cfg["seeds"]), "rounds": [r.rounds_to(target) for r in reps],
                     "h": [(np.bincount(ids, weights=h) / pr.n).tolist() for h in hs],
                     "zeta_ratio": zr, "a": pr.a.tolist(), "n": pr.n.tolist(), "source": "engine"})
        print(f"[blocks_scale] engine equal/{method}/d{d}: k={k_sel} rounds {rows[-1]['rounds']} "
              f"(cap {cap})", file=sys.stderr, flush=True)
    return rows
