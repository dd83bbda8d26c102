"""The paper's spectral illustration: zeta, L kappa and L d over many log-normal draws.

200 eigenvalues exp(N(0.9, 2^2)), H = Diag(Sigma) + 2.5 (``theory.spectral_illustration``): the
paper quotes zeta ~ 100, L kappa ~ 3400, L d ~ 120000. Pure maths, no runs: medians over
``draws`` spectra with bootstrap intervals of the median (draws resampled). The ordering
zeta << L kappa << L d is a statement in the units of A: multiplying A (and eps with it) by c
multiplies L kappa and L d by c and leaves zeta unchanged, so for small enough c L kappa drops
below zeta. The informative row reports the medians at the configured ``unit_scales``.
"""

from __future__ import annotations

import numpy as np

from .. import theory
from .stats import Threshold, bootstrap, fmt, make_check

NAME = "spectrum"


def draws(cfg: dict, scale: float = 1.0) -> dict[str, np.ndarray]:
    return theory.spectral_illustration_draws(int(cfg["dim"]), float(cfg["log_mean"]),
                                              float(cfg["log_sd"]), float(cfg["eps"]),
                                              int(cfg["draws"]), int(cfg["seed"]), scale)


def analyse(cfg: dict, common: dict, checks_cfg: dict) -> dict:
    base = draws(cfg)
    n_boot = int(common["n_boot"])
    checks = []
    paper = cfg["paper"]
    for key, th_key, label in (("zeta", "illustration_zeta", "zeta = Tr(H^-1/2 Sigma H^-1/2)"),
                               ("L_kappa", "illustration_l_kappa", "L kappa = Tr(Sigma)"),
                               ("L_d", "illustration_l_d", "L d")):
        value = bootstrap([base[key]], lambda m: m[0], n_boot=n_boot)
        checks.append(make_check(
            f"spectrum.{key}", NAME,
            f"Spectral illustration: median {label} over {cfg['draws']} draws (paper: ~{fmt(paper[key])})",
            value, Threshold.from_config(checks_cfg.get(th_key)),
            f"d = {cfg['dim']}, eigenvalues exp(N({cfg['log_mean']}, {cfg['log_sd']}^2)), "
            f"eps = {cfg['eps']}; 5-95% over draws {fmt(np.quantile(base[key], 0.05))}-"
            f"{fmt(np.quantile(base[key], 0.95))}."))
    scaled = {c: {k: float(np.median(v)) for k, v in draws(cfg, float(c)).items()}
              for c in cfg["unit_scales"]}
    text = "; ".join(f"A x {c:g}: zeta {fmt(s['zeta'])}, L kappa {fmt(s['L_kappa'])}, L d {fmt(s['L_d'])}"
                     for c, s in scaled.items())
    flips = [c for c, s in scaled.items() if s["L_kappa"] < s["zeta"]]
    z0 = scaled[min(scaled, key=lambda c: abs(np.log(float(c))))]["zeta"]
    change = max(abs(s["zeta"] / z0 - 1.0) for s in scaled.values())
    checks.append(make_check(
        "spectrum.units", NAME,
        "Units: largest relative change of median zeta when A (and eps) change units; "
        "L kappa and L d scale with A",
        (change,) * 3, Threshold(),
        text + (f". At A x {flips[0]:g} the ordering flips: L kappa < zeta." if flips else ".")))
    return {"checks": checks, "draws": base, "scaled": scaled}
