"""Learning-rate selection on the dev split, for any task whose runs record ``dev_*`` metrics.

``hiso select RUN_DIR ... --out SEL.json [--last N] [--base-lrs LR ... --max-extensions K]``
    the learning rate of one variant from its grid runs (same config but ``method.lr`` and
    ``seed``; the same seeds for every lr). Score of a run = its ``dev_accuracy`` (``dev_f1``
    for a task whose metric is F1, such as SQuAD) averaged over
    its last ``N`` evaluations (``--last 0``: all of them, i.e. the area under the dev curve,
    which rewards speed as well as the end point); score of an lr = mean over the seeds; the
    best score wins (ties: the smaller lr).
    With ``--base-lrs`` (the configured grid; the runs may hold lrs beyond it, added by earlier
    rounds): a best lr at an edge of the grid asks for one more lr, one log-step beyond that edge
    (the ratio of the two lrs at that edge), in ``extend``, until ``K`` lrs were added; the
    pipeline (a Snakemake checkpoint per round) runs it on the selection seeds and selects again.
``hiso table selection SEL.json ... --out t.md --csv t.csv``
    the grids and what was selected.
``hiso run CONFIG --lr-from SEL.json``
    a run at the selected lr.

Nothing here reads the eval split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import io
from ..errors import UserError

SCORE = "dev_accuracy"  # the selection metric (dev split), unless the runs' metric is another


def score_key(summary: dict) -> str:
    """The dev-split counterpart of the metric a run reports (``dev_f1`` for SQuAD's F1)."""
    metric = summary.get("metric", "accuracy")
    return SCORE if metric in (None, "accuracy") else f"dev_{metric}"


def read_json(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def run_score(records: list[dict], last: int, key: str = SCORE) -> float:
    """Mean dev score ``key`` over the last ``last`` evaluations (0: all; non-finite counts as 0)."""
    vals = [r.get(key) for r in records if key in r]
    if last > 0:
        vals = vals[-last:]
    if not vals:
        raise UserError(f"no {key} in the run's metrics (select needs the dev split)")
    return float(np.mean([v if v is not None and math.isfinite(v) else 0.0 for v in vals]))


def _without_lr_and_seed(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg.pop("seed", None)
    cfg["method"].pop("lr", None)
    return cfg


def select_lr(runs: list[tuple[dict, dict, list[dict]]], last: int = 3) -> dict:
    """The selection record of one variant from (config, summary, metrics) of its grid runs."""
    if not runs:
        raise UserError("select: no runs")
    if last < 0:
        raise UserError(f"select: --last must be >= 0, got {last}")
    names = {c.get("name") for c, _, _ in runs}
    if len(names) != 1:
        raise UserError(f"select: runs of several variants {sorted(map(str, names))}")
    ref = _without_lr_and_seed(runs[0][0])
    for c, _, _ in runs[1:]:
        if _without_lr_and_seed(c) != ref:
            raise UserError("select: grid runs differ in more than method.lr and seed")
    keys = {score_key(s) for _, s, _ in runs}
    if len(keys) != 1:
        raise UserError(f"select: runs report different metrics {sorted(keys)}")
    key = keys.pop()
    by_lr: dict[float, dict[int, tuple[float, str]]] = {}
    # A run that stopped early (diverged or failed) scores 0 at each evaluation it did not reach,
    # as a non-finite one does: otherwise its dev average before blowing up could win.
    evals = max(1, max(sum(key in r for r in m) for _, _, m in runs))
    for c, s, m in runs:
        got = sum(key in r for r in m)
        if s["status"] != "ok" and got < evals:
            m = list(m) + [{key: 0.0}] * (evals - got)
        score = run_score(m, last, key)
        by_lr.setdefault(float(c["method"]["lr"]), {})[int(c["seed"])] = (score, s["status"])
    seed_sets = {tuple(sorted(v)) for v in by_lr.values()}
    if len(seed_sets) != 1:
        raise UserError(f"select: learning rates were run on different seeds {sorted(seed_sets)}")
    grid = []
    for lr in sorted(by_lr):
        per = by_lr[lr]
        grid.append({"lr": lr, "score": float(np.mean([v[0] for v in per.values()])),
                     "per_seed": {str(k): v[0] for k, v in sorted(per.items())},
                     "statuses": sorted({v[1] for v in per.values()})})
    best = max(grid, key=lambda g: (g["score"], -g["lr"]))  # ties: the smaller lr
    lrs = [g["lr"] for g in grid]
    over = ("all of each run's evaluations (the area under its dev curve)" if last == 0
            else f"each run's last {last} evaluations")
    return {
        "name": names.pop(), "lr": best["lr"], "score": best["score"],
        "criterion": f"mean over selection seeds of {key} averaged over {over} "
                     f"(dev split; eval split never read)",
        "seeds": list(seed_sets.pop()), "at_grid_edge": len(lrs) > 1 and best["lr"] in (lrs[0], lrs[-1]),
        "grid": grid,
    }


def beyond_edge(lrs: list[float], side: str) -> float:
    """The lr one log-step beyond the ``side`` ("low" or "high") edge of a sorted grid: the edge
    lr times (high) or divided by (low) the ratio of the two lrs at that edge, so a grid with
    uneven spacing (0.1, 0.3, 1.0) steps on with its edge's own ratio; 3 significant digits."""
    if len(lrs) < 2 or any(b <= a for a, b in zip(lrs, lrs[1:])):
        raise UserError(f"select: a grid needs two or more increasing lrs to step beyond its edge, "
                        f"got {lrs}")
    if lrs[0] <= 0:
        raise UserError(f"select: lrs must be positive to step on a log scale, got {lrs}")
    if side == "high":
        lr = lrs[-1] * (lrs[-1] / lrs[-2])
    elif side == "low":
        lr = lrs[0] / (lrs[1] / lrs[0])
    else:
        raise ValueError(side)
    return float(f"{lr:.3g}")


def extension(lrs: list[float], best: float, base: list[float], cap: int) -> dict:
    """Whether a selection over the grid ``lrs`` (the configured grid ``base`` plus the lrs
    earlier rounds added beyond its edges) asks for one more lr: ``extend`` is the lr one step
    beyond the edge that ``best`` sits on, or None when it sits inside, or when ``cap`` lrs were
    already added (then ``edge_after_cap`` says whether it is still at an edge)."""
    lrs, base = sorted(lrs), sorted(float(b) for b in base)
    if cap < 0:
        raise UserError(f"select: --max-extensions must be >= 0, got {cap}")
    missing = [b for b in base if b not in lrs]
    if missing:
        raise UserError(f"select: no runs at the base lrs {missing} (runs at {lrs})")
    added = [lr for lr in lrs if lr not in base]
    if any(base[0] <= lr <= base[-1] for lr in added):
        raise UserError(f"select: lrs {added} lie inside the base grid {base}; an extension "
                        f"only adds lrs beyond its edges")
    side = ("low" if best == lrs[0] else "high" if best == lrs[-1] else None) if len(lrs) > 1 else None
    more = side is not None and len(added) < cap
    return {"base_grid": base, "extended": added, "max_extensions": cap,
            "extend": beyond_edge(lrs, side) if more else None,
            "edge_after_cap": side is not None and not more}


def extension_note(sels: list[dict]) -> str:
    """What the selection table says about grids extended beyond their edges."""
    grown = [f"{s['name']} (+{', '.join(f'{lr:g}' for lr in s['extended'])})"
             for s in sels if s.get("extended")]
    stuck = [s["name"] for s in sels if s.get("edge_after_cap")]
    caps = sorted({s["max_extensions"] for s in sels if "max_extensions" in s})
    cap = "/".join(map(str, caps))
    return (f"A selection at a grid edge extends its grid by one log-step beyond that edge, up "
            f"to {cap} times (`(added)` marks those lrs). Grids extended: "
            f"{', '.join(grown) if grown else 'none'}. Still at a grid edge after the cap: "
            f"{', '.join(stuck) if stuck else 'none'}.")


def selected_lr(path, variant: str | None = None) -> float:
    """The lr a selection JSON chose; ``variant``: the variant it must have been made for."""
    sel = read_json(path)
    if "lr" not in sel or "name" not in sel:
        raise UserError(f"{path}: not a selection file (no 'name' / 'lr'; see `hiso select`)")
    if variant is not None and sel["name"] != variant:
        raise UserError(f"{path}: selects for {sel['name']!r}, not {variant!r}")
    return float(sel["lr"])


def cmd_select(args) -> int:
    sel = select_lr([io.read_run(p)[1:] for p in args.runs], args.last)
    if args.base_lrs:
        sel.update(extension([g["lr"] for g in sel["grid"]], sel["lr"], args.base_lrs,
                             args.max_extensions))
    io.atomic_write_json(args.out, sel)
    nxt = f"; at a grid edge: extend the grid to {sel['extend']:g}" if sel.get("extend") else ""
    print(f"{sel['name']}: lr = {sel['lr']:g} (dev score {sel['score']:.4f}){nxt}")
    return 0


def write_table(inputs: list[str], out: str, csv: str, title: str, tier: str | None = None) -> int:
    """Markdown + CSV + LaTeX of selection JSONs: every grid point, its dev score, what was
    selected."""
    import pandas as pd

    from .tables import TexDoc, finish, markdown

    sels = [read_json(p) for p in inputs]
    extensible = any("base_grid" in s for s in sels)  # made with --base-lrs (grid extension)
    rows, body = [], []
    for s in sels:
        for g in s["grid"]:
            chosen = g["lr"] == s["lr"]
            added = g["lr"] in s.get("extended", [])
            rows.append({"name": s["name"], "lr": g["lr"], "dev_score": g["score"],
                         **{f"seed{k}": v for k, v in g["per_seed"].items()},
                         "statuses": ",".join(g["statuses"]), "selected": chosen,
                         **({"added_beyond_edge": added} if extensible else {})})
            body.append([s["name"], f"{g['lr']:g}" + (" (added)" if added else ""),
                         f"{g['score']:.4f}" + (" *" if chosen else ""),
                         " ".join(f"{v:.3f}" for v in g["per_seed"].values()), ",".join(g["statuses"])])
    edge = [s["name"] for s in sels if s["at_grid_edge"]]
    header = ["variant", "lr", "dev score", "per seed", "status"]
    text = (f"Criterion: {sels[0]['criterion']}. Selection seeds {sels[0]['seeds']} are disjoint "
            f"from the report seeds. `*` marks the selected lr; a selection at the edge of its grid "
            f"is flagged.")
    at_edge = f"Selected at a grid edge: {', '.join(edge) if edge else 'none'}."
    if extensible:
        at_edge += " " + extension_note(sels)
    md = [f"# {title}", "", text, "", markdown(header, body), "", at_edge, ""]
    tex = TexDoc(title)
    tex.table(f"{title}. {text} {at_edge}", header, body)
    finish(md, tex, tier, out, csv, pd.DataFrame(rows).to_csv(index=False))
    return 0
