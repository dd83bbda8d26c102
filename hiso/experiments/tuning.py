"""Step-size selection on a factor-2 grid, with exact pruning, and its re-derivation from runs.

The grid is ``lr_k = base * 2**k`` for integers ``k`` in ``[kmin, kmax]``; ``base`` is the step the
theory gives the method (ZO-SGD: 1/(Tr A + 2L); HiSo with oracle H: 1/(zeta + 2)), so ``k = 0`` is
the theory's step and the selected ``k`` says how far from it the best step lies. The score of a
step is the median over the *selection seeds* of its rounds to the target (the reported runs use
other seeds: a deterministic quadratic has no held-out split, so disjoint seeds are what keeps
selection and reporting apart).

Search. Round counts of a fixed method are unimodal in the step on these problems (too small:
slow; too large: unstable), so the search walks the grid from ``k0``: it tries ``k0 + 1`` and keeps
going up while the score improves strictly, else tries ``k0 - 1`` and keeps going down while it
improves; if every score so far is censored it evaluates the rest of the grid. Pruning is exact:
a candidate's runs are capped at the incumbent's median, since a candidate that has not reached
the target by then cannot beat it; the report re-derives the selection from the run files with
the same rule (:func:`select`), censored runs counting as ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .stats import median


@dataclass(frozen=True)
class Grid:
    base: float
    kmin: int = -3
    kmax: int = 3
    k0: int = 0

    def lr(self, k: int) -> float:
        return float(self.base * 2.0**k)

    def __post_init__(self) -> None:
        if not (self.kmin <= self.k0 <= self.kmax):
            raise ValueError(f"grid start k0={self.k0} outside [{self.kmin}, {self.kmax}]")


def search(evaluate: Callable[[int, int], float], grid: Grid, cap: int) -> dict[int, float]:
    """Scores ``{k: median rounds}`` of the evaluated grid points (see the module docstring).

    ``evaluate(k, cap_k)`` runs the selection seeds at ``grid.lr(k)`` with round cap ``cap_k``
    and returns their median rounds to the target (``inf`` if censored).
    """
    scores: dict[int, float] = {}

    def best() -> float:
        return min(scores.values(), default=math.inf)

    def ev(k: int) -> float:
        b = best()
        cap_k = cap if math.isinf(b) else max(1, min(cap, int(b)))
        scores[k] = evaluate(k, cap_k)
        return scores[k]

    ev(grid.k0)
    went_up = False
    k = grid.k0 + 1
    while k <= grid.kmax:
        prev = best()
        if ev(k) < prev:
            went_up = True
            k += 1
        else:
            break
    if not went_up:
        k = grid.k0 - 1
        while k >= grid.kmin:
            prev = best()
            if ev(k) < prev:
                k -= 1
            else:
                break
    if math.isinf(best()):
        for k in _outward(grid):
            if k not in scores:
                ev(k)
    return scores


def _outward(grid: Grid):
    """Grid points ordered by distance from k0 (upwards first at equal distance)."""
    ks = range(grid.kmin, grid.kmax + 1)
    return sorted(ks, key=lambda k: (abs(k - grid.k0), -k))


def select(scores: dict[int, float]) -> int:
    """The selected grid exponent: the lowest median rounds; ties go to the smaller step."""
    if not scores:
        raise ValueError("no grid point was evaluated")
    return min(scores, key=lambda k: (scores[k], k))


def scores_from_rounds(rounds_by_k: dict[int, list[float]]) -> dict[int, float]:
    """Median rounds per grid exponent from per-seed rounds (``inf`` for censored runs)."""
    return {k: median(v) for k, v in rounds_by_k.items()}
