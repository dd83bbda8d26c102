"""Medians with censoring, bootstrap intervals, and the verdict rows of the theory table.

Round counts are *censored*: a run that hits its round cap (or diverges) before the target only
tells us "more than the cap". Such runs are ``inf`` here, so a median over seeds is ``inf`` as
soon as half the seeds are censored, and a ratio or comparison built on it stays a valid bound
(e.g. ZO-SGD censored and HiSo not: the speed-up is "more than cap / rounds", reported as inf).
Log-log slopes instead drop censored runs (``theory.fit_loglog_slope`` takes NaN) and the table
says how many were dropped.

Intervals are percentile bootstraps over seeds: each group's seeds are resampled independently,
the group medians recomputed and the statistic recomputed from them. With 5 seeds per group the
interval is coarse (a median of 5 can only take 5 values); it is reported, not used for the
verdict, which compares the point estimate with the threshold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

PASS, FAIL, INFO = "PASS", "FAIL", "INFO"


def median(values: Sequence[float]) -> float:
    """Median that treats ``inf`` (censored) as larger than any finite value."""
    s = np.sort(np.asarray(values, dtype=np.float64))
    n = s.size
    if n == 0:
        return math.nan
    if n % 2:
        return float(s[n // 2])
    a, b = s[n // 2 - 1], s[n // 2]
    return float(a) if a == b else float((a + b) / 2.0)  # inf == inf: no inf - inf


def bootstrap(groups: Sequence[Sequence[float]], stat: Callable[[np.ndarray], float],
              n_boot: int = 2000, seed: int = 0, ci: float = 0.95) -> tuple[float, float, float]:
    """(point, lo, hi) of ``stat(group medians)``, resampling every group's seeds.

    Quantiles use the ``inverted_cdf`` rule (an actual bootstrap value, no interpolation) so
    that ``inf`` values from censored runs cannot produce ``inf - inf``.
    """
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    point = float(stat(np.array([median(g) for g in arrays])))
    rng = np.random.default_rng(seed)
    meds = np.empty((n_boot, len(arrays)))
    for j, g in enumerate(arrays):
        idx = rng.integers(0, g.size, size=(n_boot, g.size))
        s = np.sort(g[idx], axis=1)
        n = g.size
        if n % 2:
            meds[:, j] = s[:, n // 2]
        else:
            a, b = s[:, n // 2 - 1], s[:, n // 2]
            with np.errstate(invalid="ignore"):
                meds[:, j] = np.where(a == b, a, (a + b) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.array([stat(row) for row in meds], dtype=np.float64)
    boot = boot[~np.isnan(boot)]
    if boot.size == 0:
        return point, math.nan, math.nan
    lo, hi = np.quantile(boot, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0], method="inverted_cdf")
    return point, float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# Verdict rows
# --------------------------------------------------------------------------------------------


@dataclass
class Threshold:
    """``lo <= value <= hi`` (either side may be open); ``None`` on both sides: informative."""

    lo: float | None = None
    hi: float | None = None
    strict_hi: bool = False  # value < hi instead of <= (e.g. "fewer rounds": ratio < 1)

    @classmethod
    def from_config(cls, spec: dict | None) -> "Threshold":
        spec = spec or {}
        return cls(_opt(spec.get("min")), _opt(spec.get("max")), bool(spec.get("strict_max", False)))

    @property
    def informative(self) -> bool:
        return self.lo is None and self.hi is None

    def holds(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.lo is not None and not value >= self.lo:
            return False
        if self.hi is not None and not (value < self.hi if self.strict_hi else value <= self.hi):
            return False
        return True

    def text(self) -> str:
        if self.informative:
            return "none (informative)"
        if self.lo is not None and self.hi is not None:
            return f"[{fmt(self.lo)}, {fmt(self.hi)}]"
        if self.lo is not None:
            return f">= {fmt(self.lo)}"
        return f"{'<' if self.strict_hi else '<='} {fmt(self.hi)}"


def _opt(v) -> float | None:
    return None if v is None else float(v)


@dataclass
class Check:
    """One row of the theory table: a claim, its measured number, interval, threshold, verdict."""

    id: str
    experiment: str
    claim: str
    measured: float
    ci_lo: float
    ci_hi: float
    threshold: str
    verdict: str
    explanation: str

    def as_row(self) -> dict:
        return asdict(self)


def make_check(id: str, experiment: str, claim: str, value: tuple[float, float, float],
               threshold: Threshold, explain: Callable[[bool], str] | str) -> Check:
    """Judge ``value = (point, lo, hi)`` against ``threshold``; ``explain(passed)`` -> text."""
    point, lo, hi = value
    if threshold.informative:
        verdict = INFO
        passed = True
    else:
        passed = threshold.holds(point)
        verdict = PASS if passed else FAIL
    text = explain(passed) if callable(explain) else explain
    return Check(id, experiment, claim, float(point), float(lo), float(hi), threshold.text(),
                 verdict, text)


def fmt(v: float, digits: int = 3) -> str:
    """Compact number formatting for tables and explanations (inf shown as such)."""
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    if float(v).is_integer() and abs(v) < 1e5:
        return f"{int(v)}"
    return f"{v:.{digits}g}"
