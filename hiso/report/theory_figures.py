"""Figures of the theory checks, drawn from the analyses (which read the run files).

Every figure is written atomically (``hiso.io``) as PNG. Censored runs (round cap reached before
the target) are drawn at the cap with an upward triangle. Bands around fitted log-log lines are
the bootstrap interval of the slope, pivoting about the centre of the data (the point an OLS line
always passes through).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..experiments.stats import median
from . import style

COLORS = {"hiso_oracle": "C0", "decomfl": "k", "hiso_nu0.9": "C2", "hiso_nu0.95": "C1",
          "hiso_nu0.99": "C4"}
LABELS = {"hiso_oracle": "HiSo, oracle H", "decomfl": "ZO-SGD (DeComFL)",
          "hiso_nu0.9": "HiSo, learned H (nu=0.9)", "hiso_nu0.95": "HiSo, learned H (nu=0.95)",
          "hiso_nu0.99": "HiSo, learned H (nu=0.99)"}


def _plt():
    return style.pyplot()


def save(fig, out: Path) -> None:
    style.save(fig, out, dpi=130)


def _points(ax, xs, rows, caps, color, label, marker="o"):
    """Per-seed points (censored ones at the cap, as triangles) and per-x median markers."""
    for x, row, cap in zip(xs, rows, caps):
        fin = [v for v in row if math.isfinite(v)]
        ax.scatter([x] * len(fin), fin, s=10, color=color, alpha=0.35, marker=marker, lw=0)
        n_cens = len(row) - len(fin)
        if n_cens:
            ax.scatter([x], [cap], s=40, color=color, marker="^", lw=0)
    med = [median(r) for r in rows]
    fx = [x for x, m in zip(xs, med) if math.isfinite(m)]
    fm = [m for m in med if math.isfinite(m)]
    ax.plot(fx, fm, marker=marker, ls="none", color=color, ms=6, label=label)


def _fit_line(ax, xs, fit, color, ys_for_centre):
    lx = np.log(np.asarray(xs, dtype=float))
    grid = np.linspace(lx.min(), lx.max(), 50)
    ax.plot(np.exp(grid), np.exp(fit.intercept + fit.slope * grid), color=color, lw=1.2)
    cx = lx.mean()
    cy = fit.intercept + fit.slope * cx
    lo = cy + fit.lo * (grid - cx)
    hi = cy + fit.hi * (grid - cx)
    ax.fill_between(np.exp(grid), np.exp(np.minimum(lo, hi)), np.exp(np.maximum(lo, hi)),
                    color=color, alpha=0.15, lw=0)


def dsweep(res: dict, target: float, out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {("main", "hiso_oracle"): ("C0", "o", "HiSo oracle H (main)"),
              ("main", "decomfl"): ("C3", "o", "ZO-SGD, x0 isotropic (informative)"),
              ("control", "decomfl"): ("C7", "s", "ZO-SGD, fixed-trace control"),
              ("slowhalf", "decomfl"): ("C5", "D", "ZO-SGD, x0 on the slow half (verdict)"),
              ("limit", "hiso_oracle"): ("C9", "v", "HiSo, non-shrinking tail (limit)")}
    caps = {}
    for r in res["results"]:
        caps[(r.labels["design"], r.labels["method"], r.labels["d"])] = r.cap
    for ax, keys in ((axes[0], [("main", "hiso_oracle"), ("slowhalf", "decomfl"), ("control", "decomfl")]),
                     (axes[1], [("main", "hiso_oracle"), ("limit", "hiso_oracle"), ("main", "decomfl"),
                                ("slowhalf", "decomfl")])):
        for key in keys:
            if key not in res["table"]:
                continue
            color, marker, label = styles[key]
            by_d = res["table"][key]
            ds = sorted(by_d)
            f = res["fits"].get(key)
            lab = label + (f", slope {f[0].slope:.2f} [{f[0].lo:.2f}, {f[0].hi:.2f}]" if f else "")
            _points(ax, ds, [by_d[d] for d in ds], [caps[(*key, d)] for d in ds], color, lab, marker)
            if f:
                fd = [d for d in ds if any(map(math.isfinite, by_d[d]))]
                _fit_line(ax, fd, f[0], color, None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dimension d")
        ax.set_ylabel(f"rounds to f - f* <= {target:g} (f0 - f*)")
        ax.legend(fontsize=7, loc="best")
    zeta = np.median([r.labels["zeta"] for r in res["results"]
                      if (r.labels["design"], r.labels["method"]) == ("main", "hiso_oracle")])
    from .. import theory

    for ax in axes:
        ax.axhline(theory.predicted_rounds(zeta, target), color="C0", ls=":", lw=1)
    axes[0].set_title("fixed zeta ~ 10: rounds vs d (dotted: (zeta+2) ln(1/target))", fontsize=9)
    axes[1].set_title("limits: a tail that does not shrink; ZO-SGD with x0 isotropic vs on the "
                      "slow half", fontsize=9)
    fig.tight_layout()
    save(fig, out)


def zsweep(res: dict, target: float, out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    f = res["fit"]
    caps = [res["results"][0].cap] * len(res["zetas"])
    _points(ax, res["zetas"], res["rows"], caps, "C0",
            f"HiSo oracle H, slope {f.slope:.2f} [{f.lo:.2f}, {f.hi:.2f}]")
    _fit_line(ax, res["zetas"], f, "C0", None)
    ax.plot(res["zetas"], res["preds"], "k:", label="prediction (zeta + 2) ln(1/target)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("whitening rank zeta (measured from the run's H)")
    ax.set_ylabel(f"rounds to {target:g} x initial gap")
    ax.set_title("d = 1000: rounds grow with zeta", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, out)


def convergence(res: dict, cases: list[str], out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(cases), figsize=(4.6 * len(cases), 3.8), squeeze=False)
    rep = res["rep"]
    for ax, case in zip(axes[0], cases):
        for (c, m), e in sorted(rep.items()):
            if c != case:
                continue
            for i, r in enumerate(e["runs"]):
                x, y = r.series("rel_gap")
                ax.plot(x, y, color=COLORS.get(m, "k"), lw=0.8, alpha=0.7,
                        label=f"{LABELS.get(m, m)}: {median(e['rounds']):.0f}" if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("round")
        ax.set_ylabel("(f - f*) / (f0 - f*)")
        ax.set_title(case, fontsize=9)
        ax.legend(fontsize=6, title="median rounds to target", title_fontsize=6)
    fig.tight_layout()
    save(fig, out)


def learned_zeta(res: dict, case: str, out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    rep = res["rep"]
    for (c, m), e in sorted(rep.items()):
        if c != case or e["kind"] == "decomfl":  # ZO-SGD has no H
            continue
        for i, r in enumerate(e["runs"]):
            x, z = r.series("zeta_H")
            _, s = r.series("h_spearman")
            lab = LABELS.get(m, m) if i == 0 else None
            style = dict(color=COLORS.get(m, "k"), lw=0.8, alpha=0.7, label=lab)
            axes[0].plot(np.maximum(x, 1), z, **style)
            if m != "hiso_oracle":
                axes[1].plot(np.maximum(x, 1), s, **style)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("zeta(H_r) = Tr(H_r^-1/2 A H_r^-1/2)")
    axes[1].set_ylabel("Spearman(H_r, Diag A)")
    axes[1].axhline(0.0, color="k", lw=0.6)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("round")
        ax.legend(fontsize=6)
    fig.suptitle(f"{case}: the learned H against the oracle Diag(A) + eps", fontsize=9)
    fig.tight_layout()
    save(fig, out)


def noise(res: dict, out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for i, (kind, dat) in enumerate(res["data"].items()):
        color = f"C{i}"
        f = dat["fit"]
        _points(ax, dat["d"], dat["rows"], [np.nan] * len(dat["d"]), color,
                f"{kind}: slope {f.slope:.2f} [{f.lo:.2f}, {f.hi:.2f}]")
        _fit_line(ax, dat["d"], f, color, None)
        ax.plot(dat["d"], dat["preds"], ls=":", color=color, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("noise floor: mean f - f* after burn-in")
    ax.set_title("HiSo (oracle H) noise floors; dotted: exact expectation", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, out)


def spectrum(res: dict, cfg: dict, out: Path, case: tuple[str, dict] | None = None) -> None:
    """Left: the spectrum optimised in the illustration case (its own task config), whitened;
    right: zeta, L kappa and L d over the draws, with the paper's numbers."""
    from .. import theory
    from ..experiments.runs import curvature

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    eps = float(cfg["eps"])
    if case is not None:
        name, task = case
        one = np.sort(curvature({"name": "quadratic", **task}).eigs)[::-1]
        where = f"{name} (optimised in theory_convergence)"
    else:
        one = theory.lognormal_spectrum(int(cfg["dim"]), float(cfg["log_mean"]), float(cfg["log_sd"]),
                                        int(cfg["seed"]))
        where = f"draw seed {cfg['seed']}"
    ax = axes[0]
    ax.plot(np.arange(1, one.size + 1), one, label="eigenvalues of Sigma")
    ax.plot(np.arange(1, one.size + 1), one / (one + eps), label="whitened: A_i / (A_i + eps)")
    ax.axhline(eps, color="k", ls=":", lw=1, label=f"eps = {eps:g}")
    ax.set_title(f"{where}: zeta {theory.whitening_rank(one, one + eps):.0f}, "
                 f"L kappa {one.sum():.0f}, L d {one.max() * one.size:.0f}", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("index")
    ax.legend(fontsize=7)
    ax = axes[1]
    bins = np.logspace(1, 7, 80)
    for i, (k, lab) in enumerate((("zeta", "zeta"), ("L_kappa", "L kappa"), ("L_d", "L d"))):
        v = res["draws"][k]
        ax.hist(v, bins=bins, alpha=0.6, color=f"C{i}", label=f"{lab}: median {np.median(v):.3g}")
        ax.axvline(cfg["paper"][k], color=f"C{i}", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"value over {cfg['draws']} draws (dotted: the paper's numbers)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, out)


def local(res: dict, out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    cells, y, pred = res["cells"], res["y"], res["pred"]
    for i, m in enumerate(sorted({c[1] for c in cells})):
        idx = [j for j, c in enumerate(cells) if c[1] == m]
        taus = [cells[j][0] for j in idx]
        for j, t in zip(idx, taus):
            ax.scatter([t] * len(res["rows"][j]), res["rows"][j], s=8, color=f"C{i}", alpha=0.3, lw=0)
        ax.plot(taus, y[idx], "o-", color=f"C{i}", label=f"m = {m} (median)")
        ax.plot(taus, pred[idx], ":", color=f"C{i}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("local steps tau")
    ax.set_ylabel("mean f - f* over the R rounds")
    a, b = res["coef"]
    ax.set_title(f"dotted: {a:.3g} sqrt(zeta/(tau m R)) + {b:.3g} sqrt(tau kappa/(m R))", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, out)


BLOCK_COLORS = {"decomfl": "k", "hiso": "C1", "hiso_scalar": "C4", "hiso_oracle": "C0",
                "block_oracle": "C9", "hiso_block": "C3"}
BLOCK_MARKERS = {"decomfl": "v", "hiso": "s", "hiso_scalar": "D", "hiso_oracle": "o",
                 "block_oracle": "P", "hiso_block": "X"}
BLOCK_LABELS = {"decomfl": "ZO-SGD", "hiso": "HiSo, learned diagonal", "hiso_scalar": "hiso_scalar",
                "hiso_oracle": "oracle Diag(A)", "block_oracle": "block oracle", "hiso_block": "hiso_block"}


def _rounds_against_d(by: dict, designs: list, title: str, out: Path, fontsize=None) -> None:
    """Rounds to target against d, one panel per design; ``by``: {(design, method): {d: ...}}."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(designs), figsize=(5.2 * len(designs), 4.0), squeeze=False)
    for ax, design in zip(axes[0], designs):
        for (des, method), by_d in sorted(by.items()):
            if des != design:
                continue
            ds = sorted(by_d)
            color = BLOCK_COLORS.get(method, "C7")
            _points(ax, ds, [by_d[d]["rounds"] for d in ds], [by_d[d]["cap"] for d in ds],
                    color, BLOCK_LABELS.get(method, method), BLOCK_MARKERS.get(method, "o"))
            med = [(d, median(by_d[d]["rounds"])) for d in ds]
            fin = [(d, m) for d, m in med if math.isfinite(m)]
            if len(fin) > 1:
                ax.plot(*zip(*fin), color=color, lw=0.8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("d")
        ax.set_ylabel("rounds to 1e-3 f0 (triangles: censored at the cap)")
        ax.set_title(f"{title}: {design}", fontsize=fontsize)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, out)


def blocks(res: dict, out: Path) -> None:
    """Rounds to target against d on the block quadratics (engine runs)."""
    designs = sorted({design for design, _ in res["rep"]}, key=lambda s: (s != "main", s))
    _rounds_against_d(res["rep"], designs, "block quadratic", out)


def blocks_scale(res: dict, out: Path) -> None:
    """Rounds to target against d, reduced simulation (blocks_scale)."""
    designs = list(dict.fromkeys(design for design, _ in res["by"]))
    _rounds_against_d(res["by"], designs, "block quadratic (reduced simulation)", out, fontsize=9)
