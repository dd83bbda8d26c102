"""Run specs, the theory checks' base config, executing a grid in-process, reading runs back.

A theory experiment is a list of :class:`RunSpec` (a run directory, a raw config dict and the
labels the report groups by). :func:`execute` runs them one after another in this process through
the engine (``hiso.config.resolve`` -> ``hiso.runner.Run``), so the torch start-up is paid once
per experiment rather than once per run, and every run still leaves a normal run directory. The
experiment then writes ``index.json`` (run directory -> labels); the report reads the runs back
with :func:`load_results` and computes everything from the run files.

The base config puts the engine in the theory's setting (the step-size derivations in
:mod:`hiso.theory` assume it): one client (m = 1; or m clients holding the same data), tau = 1,
P = 1 Gaussian direction, forward differences with a small ``mu`` (the quadratic is evaluated in
float64, so mu = 1e-6 measures curvature, not rounding), no noise, no heterogeneity, one thread
(two Snakemake jobs share the two cores; a second OpenMP thread only adds contention).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import io
from ..errors import UserError

INDEX = "index.json"


@dataclass(frozen=True)
class RunSpec:
    """One run: its directory (relative to the experiment's), its raw config, its labels."""

    key: str
    config: dict
    labels: dict = field(default_factory=dict)


def base_config(common: dict, *, name: str, seed: int, task: dict, method: dict, rounds: int,
                every: int, stop_below: float | None, clients: int = 1, local_steps: int = 1,
                save_h: bool = False) -> dict:
    """A raw run config in the theory's setting; ``task``/``method`` add or override keys.

    Everything the theory fixes is written out explicitly (P = 1, forward differences, no
    noise, no heterogeneity, every client sampled) instead of relying on engine defaults.
    """
    return {
        "name": name,
        "seed": int(seed),
        "task": {"name": "quadratic", "heterogeneity": 0.0, "noise": {"kind": "none", "sigma": 0.0},
                 **task},
        "method": {"perturbations": 1, "mu": float(common["mu"]), "difference": "forward",
                   "directions": "gaussian", **method},
        "federation": {"clients": clients, "sampled": clients, "local_steps": local_steps,
                       "rounds": int(rounds), "aggregation": "mean", "mode": "simulation"},
        "eval": {"every": int(every), "stop_below": stop_below, "save_h": save_h,
                 "divergence_factor": float(common.get("divergence_factor", 1e6))},
        "runtime": {"device": "cpu", "threads": int(common.get("threads", 1))},
    }


def execute_one(spec: RunSpec, out: Path, log: bool = True) -> dict:
    """Run ``spec`` into ``out / spec.key`` (a finished run with the same config is reused)."""
    from ..config import resolve
    from ..runner import Run

    resolved = resolve(spec.config)
    t0 = time.perf_counter()
    summary = Run(resolved, Path(out) / spec.key, progress=False).execute()
    if log:
        print(f"[theory] {spec.key}: {summary['status']} after {summary['rounds']} rounds "
              f"({time.perf_counter() - t0:.2f}s)", file=sys.stderr, flush=True)
    return summary


def execute(specs: Iterable[RunSpec], out: Path, log: bool = True) -> list[dict]:
    return [execute_one(s, out, log) for s in specs]


def write_index(out: Path, experiment: str, specs: Iterable[RunSpec], extra: dict | None = None) -> None:
    """``index.json``: the experiment's run directories and their labels (written last)."""
    entries = [{"dir": s.key, "labels": s.labels} for s in specs]
    io.atomic_write_json(Path(out) / INDEX, {"experiment": experiment, "runs": entries, **(extra or {})})


def read_index(out: Path) -> dict:
    path = Path(out) / INDEX
    if not path.is_file():
        raise UserError(f"{path}: missing (run `hiso theory run` for this experiment first)")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# Reading runs back
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """A finished run directory as the report sees it."""

    dir: Path
    labels: dict
    config: dict
    summary: dict
    metrics: list[dict]

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def cap(self) -> int:
        return int(self.config["federation"]["rounds"])

    @property
    def lr(self) -> float:
        return float(self.config["method"]["lr"])

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(rounds, values) of a metric over the run's evaluations (NaN where absent)."""
        r = np.array([m["round"] for m in self.metrics], dtype=np.int64)
        v = np.array([_num(m.get(key)) for m in self.metrics], dtype=np.float64)
        return r, v

    def rounds_to(self, target: float) -> float:
        """First evaluated round with ``f - f* <= target (f(x0) - f*)``; ``inf`` if never.

        A diverged run, or one stopped by its round cap before the target, is censored: it
        counts as "more than the cap", i.e. ``inf``, so medians and comparisons stay honest.
        The round is the first *evaluated* one, an upper bound on the true first hit within
        ``eval.every - 1`` rounds (``every = 1`` where that matters).
        """
        r, v = self.series("rel_gap")
        hits = np.flatnonzero(v <= target)
        return float(r[hits[0]]) if hits.size else math.inf

    def final(self, key: str) -> float:
        return _num(self.summary.get("final_metrics", {}).get(key))


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def load_run(d: Path, labels: dict | None = None) -> RunResult:
    d, cfg, summary, metrics = io.read_run(Path(d))
    return RunResult(d, dict(labels or {}), cfg, summary, metrics)


def load_results(out: Path) -> list[RunResult]:
    """Every run listed in ``out/index.json``, with its labels."""
    idx = read_index(out)
    return [load_run(Path(out) / e["dir"], e["labels"]) for e in idx["runs"]]


def pick(results: Iterable[RunResult], **labels) -> list[RunResult]:
    """The runs whose labels match every given key (order kept)."""
    return [r for r in results if all(r.labels.get(k) == v for k, v in labels.items())]


def by_seed(results: Iterable[RunResult]) -> list[RunResult]:
    return sorted(results, key=lambda r: r.config["seed"])


# --------------------------------------------------------------------------------------------
# The problem behind a task config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curvature:
    """What the step-size rules need to know about a quadratic task's A."""

    eigs: np.ndarray   # eigenvalues of A
    diag: np.ndarray   # Diag(A) (differs from eigs when A is rotated)
    L: float           # largest eigenvalue
    trace: float       # Tr(A) = L * kappa

    def zeta(self, eps: float) -> float:
        """Whitening rank of the oracle H = Diag(A) + eps."""
        from .. import theory

        return theory.whitening_rank(self.diag, self.diag + eps)


def curvature(task: dict) -> Curvature:
    """Build the task from its config (the engine's own code) and read off its curvature.

    Diag(A) comes from ``task.oracle_h()``, i.e. exactly the H that ``hiso_oracle`` uses (before
    its eps), so the theory step 1/(zeta + 2) matches the run's H.
    """
    from ..schema import build
    from ..tasks import TASKS

    data = dict(task)
    cls = TASKS[data.pop("name")]
    obj = cls(build(cls.Config, data, "task"), 1, 0)
    eigs = np.asarray(obj.eigs, dtype=np.float64)
    diag = obj.oracle_h()[0].double().numpy()
    return Curvature(eigs, diag, float(eigs.max()), float(eigs.sum()))
