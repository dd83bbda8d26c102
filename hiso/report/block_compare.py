"""hiso_block against the other scalar-only methods on a real task, per round and per forward pass.

Reads a ``hiso aggregate`` metrics.csv of report runs (one run per (variant, seed), variant =
config ``name``) and compares, paired by seed:

* per round: eval accuracy at the last common round R, and its mean over every evaluation up to R
  (the area under the accuracy curve, which rewards getting there sooner); a run that ended
  early (diverged) sets R for everyone, and the verdict rows say so;
* per forward pass: eval accuracy at the largest forward count F that every variant reaches (a
  variant's last evaluation with ``forwards <= F``). hiso_block pays 2P + 1 forwards per step,
  the others P + 1, so at equal F it has taken about (P + 1) / (2P + 1) of their rounds.

Intervals: mean paired difference +- Student t (n - 1 degrees of freedom, 95%) over seeds.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UserError
from ..experiments.stats import Threshold, fmt, make_check

METRIC = "accuracy"


def _t_interval(values) -> tuple[float, float, float]:
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


def per_seed(df, names: list[str]) -> dict:
    """{name: {seed: {"final", "auc", "at_budget", "forwards_final", "rounds_at_budget"}}} at the
    common last round and the common forward budget."""
    missing = [n for n in names if n not in set(df["name"])]
    if missing:
        raise UserError(f"metrics: no runs named {', '.join(missing)}")
    runs = {n: {int(s): g.sort_values("round") for s, g in df[df["name"] == n].groupby("seed")}
            for n in names}
    ends = {n: {s: int(g["round"].max()) for s, g in by.items()} for n, by in runs.items()}
    last = min(e for by in ends.values() for e in by.values())
    longest = max(e for by in ends.values() for e in by.values())
    short = {n: sorted(e for e in by.values() if e < longest) for n, by in ends.items()}
    budget = min(float(g.loc[g["round"] <= last, "forwards"].max()) for by in runs.values()
                 for g in by.values())
    out: dict = {}
    for n, by in runs.items():
        for s, g in by.items():
            g = g[g["round"] <= last]
            acc = g[METRIC].to_numpy(dtype=float)
            ok = g[g["forwards"] <= budget]
            out.setdefault(n, {})[s] = {
                "final": float(acc[-1]), "auc": float(np.mean(acc)),
                "at_budget": float(ok[METRIC].iloc[-1]), "rounds_at_budget": int(ok["round"].iloc[-1]),
                "forwards_final": float(g["forwards"].iloc[-1])}
    return {"runs": out, "last": last, "budget": budget,
            "short": {n: v for n, v in short.items() if v}, "longest": longest}


def compare(df, task: str, method: str, baseline: str, others: list[str], th: dict) -> dict:
    """Verdict rows (``method`` beats ``baseline`` per round, per forward pass) and a table of
    every variant's mean and interval."""
    names = [method, baseline, *[o for o in others if o not in (method, baseline)]]
    ps = per_seed(df, names)
    runs, last, budget = ps["runs"], ps["last"], ps["budget"]
    early = "".join(f" {n}: {len(v)} run(s) ended early (diverged or failed), at rounds "
                    f"{', '.join(map(str, v))} of {ps['longest']}, so every variant is compared at "
                    f"round {last}." for n, v in ps["short"].items())
    seeds = sorted(set(runs[method]) & set(runs[baseline]))
    if not seeds:
        raise UserError(f"{task}: {method} and {baseline} share no seed")
    checks = []
    for key, what, thr in (("final", f"eval accuracy at round {last}", "beats_per_round"),
                           ("auc", f"mean eval accuracy over evaluations up to round {last}", "beats_per_round"),
                           ("at_budget", f"eval accuracy at {budget:.0f} forward passes", "beats_per_forward")):
        diff = [runs[method][s][key] - runs[baseline][s][key] for s in seeds]
        val = _t_interval(diff)
        excl = "excludes" if (val[1] > 0 or val[2] < 0) else "includes"
        rounds = ""
        if key == "at_budget":
            rounds = (f" At that budget {method} has run {fmt(np.mean([runs[method][s]['rounds_at_budget'] for s in seeds]))} "
                      f"rounds, {baseline} {fmt(np.mean([runs[baseline][s]['rounds_at_budget'] for s in seeds]))}.")
        checks.append(make_check(
            f"hiso_block.{task}.{key}", f"hiso_block_{task}",
            f"{task}: {method} beats {baseline}: {what}, mean paired difference over {len(seeds)} seeds",
            val, Threshold.from_config(th.get(thr)),
            f"{method} {', '.join(fmt(runs[method][s][key]) for s in seeds)}; {baseline} "
            f"{', '.join(fmt(runs[baseline][s][key]) for s in seeds)} (seeds {', '.join(map(str, seeds))}); "
            f"the 95% interval {excl} 0.{rounds}{early}"))
    header = ["variant", "seeds", f"accuracy at round {last}", f"mean accuracy to round {last}",
              f"accuracy at {budget:.0f} forwards", "rounds at that budget", f"forwards at round {last}"]
    rows = []
    for n in names:
        by = runs[n]

        def cell(key):
            m, lo, hi = _t_interval([v[key] for v in by.values()])
            return f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]"

        rows.append([n, len(by), cell("final"), cell("auc"), cell("at_budget"),
                     fmt(np.mean([v["rounds_at_budget"] for v in by.values()])),
                     fmt(np.mean([v["forwards_final"] for v in by.values()]))])
    return {"checks": checks, "header": header, "rows": rows, "last": last, "budget": budget}
