"""The large-federation study (issue #14): tables and figures from its report run directories.

``hiso largefed report RUN ... --catchup catchup.csv --reach digits=0.3 synthetic_clf=0.5
--figures PREFIX --tables PREFIX``

* a cell is (task, M clients, m sampled, Dirichlet alpha, straggler probability q), read from
  each run's ``config.yaml``; a run's variant is its config ``name`` (the method);
* ``PREFIX.md/.csv/.tex``: per cell and method the lr (selected on the dev split), the seeds,
  final eval accuracy (mean, sd), rounds and bytes to the task's ``--reach`` accuracy (mean over
  the seeds that reached it, and how many did), and HiSo's advantage over DeComFL (paired by
  seed): final accuracy difference and DeComFL's rounds / HiSo's rounds to the target; then that
  advantage averaged per alpha and per participation, per task;
* ``PREFIX_catchup.md/...``: ``hiso catchup``'s measurements (bytes down, replay seconds, per
  rounds away);
* figures ``PREFIX_rounds``, ``PREFIX_bytes`` (accuracy against rounds and against bytes, one
  panel per cell, mean over seeds) and ``PREFIX_catchup`` (PNG + PDF).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import io
from ..errors import UserError
from . import style
from .digits import rounds_to_reach
from .runs import load_runs
from .tables import TexDoc, finish, markdown

CELL = ["task", "clients", "sampled", "participation_pct", "alpha", "dropout"]


def load(paths):
    """Every evaluation of every run, with its cell's columns and its lr."""
    df = load_runs(paths)
    info = {}
    for run in df["run"].unique():
        _, cfg, _, _ = io.read_run(run)
        fed = cfg["federation"]
        info[run] = {"clients": int(fed["clients"]), "sampled": int(fed["sampled"]),
                     "participation_pct": 100.0 * fed["sampled"] / fed["clients"],
                     "alpha": cfg["task"].get("alpha"), "dropout": float(fed.get("dropout", 0.0)),
                     "lr": float(cfg["method"]["lr"])}
    for col in ("clients", "sampled", "participation_pct", "alpha", "dropout", "lr"):
        df[col] = df["run"].map(lambda r, c=col: info[r][c])
    df["alpha"] = df["alpha"].fillna(float("inf"))  # null alpha: an IID split
    return df


def cell_label(key) -> str:
    task, M, m, pct, alpha, q = key
    return f"{task}, M={M}, m={m} ({pct:g}%), alpha={alpha:g}, q={q:g}"


def _mean(vals) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def rows(df, reach: dict[str, float]) -> list[dict]:
    """One row per (cell, method), with HiSo's advantage over DeComFL on the HiSo rows."""
    out = []
    for key, cell in df.groupby(CELL, sort=True):
        target = reach.get(key[0], float("nan"))
        per = {}
        for name, g in cell.groupby("name", sort=True):
            seeds = {}
            for seed, run in g.groupby("seed"):
                run = run.sort_values("round")
                r = rounds_to_reach(run["round"], run["accuracy"], target)
                b = float(run.loc[run["round"] == r, "bytes_total"].iloc[0]) if math.isfinite(r) else float("nan")
                seeds[int(seed)] = {"final": float(run["accuracy"].iloc[-1]), "rounds": r, "bytes": b}
            per[name] = seeds
            finals = [s["final"] for s in seeds.values()]
            out.append({**dict(zip(CELL, key)), "method": name, "lr": float(g["lr"].iloc[0]),
                        "seeds": " ".join(map(str, sorted(seeds))), "target": target,
                        "final_accuracy": float(np.mean(finals)),
                        "final_accuracy_sd": float(np.std(finals, ddof=1)) if len(finals) > 1 else float("nan"),
                        "rounds_to_target": _mean([s["rounds"] for s in seeds.values()]),
                        "bytes_to_target": _mean([s["bytes"] for s in seeds.values()]),
                        "reached": f"{sum(math.isfinite(s['rounds']) for s in seeds.values())}/{len(seeds)}",
                        "hiso_minus_decomfl_accuracy": float("nan"), "decomfl_over_hiso_rounds": float("nan")})
        h, d = per.get("hiso"), per.get("decomfl")
        if h and d:
            both = sorted(set(h) & set(d))
            row = next(r for r in out[::-1] if r["method"] == "hiso" and tuple(r[c] for c in CELL) == key)
            row["hiso_minus_decomfl_accuracy"] = _mean([h[s]["final"] - d[s]["final"] for s in both])
            # a seed where DeComFL never reached the target counts as its last round (a lower bound)
            last = float(cell["round"].max())
            ratios = [(d[s]["rounds"] if math.isfinite(d[s]["rounds"]) else last) / h[s]["rounds"]
                      for s in both if math.isfinite(h[s]["rounds"]) and h[s]["rounds"] > 0]
            row["decomfl_over_hiso_rounds"] = _mean(ratios)
    return out


def by_factor(table: list[dict]) -> list[dict]:
    """HiSo's mean advantage per task and level of alpha, participation and q."""
    hiso = [r for r in table if r["method"] == "hiso" and math.isfinite(r["hiso_minus_decomfl_accuracy"])]
    out = []
    for factor in ("alpha", "participation_pct", "dropout"):
        for task in sorted({r["task"] for r in hiso}):
            for level in sorted({r[factor] for r in hiso if r["task"] == task}):
                sel = [r for r in hiso if r["task"] == task and r[factor] == level]
                out.append({"task": task, "factor": factor, "level": level, "cells": len(sel),
                            "hiso_minus_decomfl_accuracy": _mean([r["hiso_minus_decomfl_accuracy"] for r in sel]),
                            "decomfl_over_hiso_rounds": _mean([r["decomfl_over_hiso_rounds"] for r in sel])})
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "iid"
        return f"{v:.4g}"
    return str(v)


COLS = [("task", "task"), ("clients", "M"), ("sampled", "m"), ("participation_pct", "m/M %"),
        ("alpha", "alpha"), ("dropout", "q"), ("method", "method"), ("lr", "lr (dev)"),
        ("seeds", "seeds"), ("final_accuracy", "final acc"), ("final_accuracy_sd", "sd"),
        ("target", "target"), ("rounds_to_target", "rounds to target"), ("reached", "reached"),
        ("bytes_to_target", "bytes to target"),
        ("hiso_minus_decomfl_accuracy", "HiSo - DeComFL acc"),
        ("decomfl_over_hiso_rounds", "DeComFL/HiSo rounds")]
FACTOR_COLS = ["task", "factor", "level", "cells", "hiso_minus_decomfl_accuracy", "decomfl_over_hiso_rounds"]
CATCHUP_COLS = ["task", "method", "num_params", "rounds_away", "bytes_down", "model_bytes",
                "replay_seconds", "replay_seconds_per_round", "threads"]


def _csv_cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"  # empty: not applicable or never reached
    return str(v).replace(",", ";")


def _csv(header, body) -> str:
    return "\n".join([",".join(header)] + [",".join(map(_csv_cell, r)) for r in body]) + "\n"


def write_tables(table, factors, catchup, prefix: str, grid: str, tier) -> None:
    head = [h for _, h in COLS]
    body = [[r[c] for c, _ in COLS] for r in table]
    fbody = [[r[c] for c in FACTOR_COLS] for r in factors]
    title = f"Large federations ({grid} grid): HiSo vs DeComFL, FedAvg as reference"
    md = [f"# {title}", "",
          "Eval accuracy at the last round (mean over the report seeds); lr selected on the dev "
          "split on the selection seeds; rounds and bytes to the task's target accuracy are the "
          "mean over the seeds that reached it. DeComFL/HiSo rounds counts DeComFL's last round "
          "where it never reached the target (a lower bound).", "",
          markdown(head, body, _fmt), "", "## HiSo's advantage over DeComFL by factor (mean over cells)", "",
          markdown(FACTOR_COLS, fbody, _fmt), ""]
    tex = TexDoc(title)
    tex.table(title, head, body, _fmt)
    tex.table("HiSo's advantage over DeComFL by factor", FACTOR_COLS, fbody, _fmt)
    finish(md, tex, tier, f"{prefix}.md", f"{prefix}.csv", _csv([c for c, _ in COLS], body))
    if catchup is not None:
        cbody = [[r[c] for c in CATCHUP_COLS] for r in catchup]
        ctitle = "Catch-up cost of a client k rounds away (one HiSo run)"
        cmd = [f"# {ctitle}", "", "bytes_down: the ZO downlink carrying the missed rounds' seeds and "
               "scalars; model_bytes: the float32 model a vector method sends instead; replay "
               "seconds: median of `hiso catchup`'s repeats.", "",
               markdown(CATCHUP_COLS, cbody, _fmt), ""]
        ctex = TexDoc(ctitle)
        ctex.table(ctitle, CATCHUP_COLS, cbody, _fmt)
        finish(cmd, ctex, tier, f"{prefix}_catchup.md", f"{prefix}_catchup.csv", _csv(CATCHUP_COLS, cbody))


def draw_curves(df, x: str, out: str, grid: str) -> None:
    plt = style.pyplot()
    cells = list(df.groupby(CELL, sort=True).groups)
    ncol = min(4, len(cells))
    nrow = math.ceil(len(cells) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, cells):
        cell = df[(df[CELL] == list(key)).all(axis=1)]
        for name, g in cell.groupby("name", sort=True):
            mean = g.groupby("round")[["accuracy", "bytes_total"]].mean()
            xs = mean.index.to_numpy() if x == "round" else mean["bytes_total"].to_numpy()
            keep = xs > 0 if x != "round" else np.ones(len(xs), bool)
            lr = float(g["lr"].iloc[0])
            ax.plot(xs[keep], mean["accuracy"].to_numpy()[keep], label=f"{style.label(name)} (lr {lr:g})",
                    color=style.colour(name), dashes=style.dashes(name))
        if x != "round":
            ax.set_xscale("log")
        ax.set_title(cell_label(key), fontsize=7)
        ax.set_xlabel(style.ROUNDS if x == "round" else style.BYTES, fontsize=7)
        ax.set_ylabel("eval accuracy (mean over seeds)", fontsize=7)
        ax.legend(fontsize=6, loc="lower right")
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    fig.suptitle(f"Large federations ({grid} grid); lr selected on the dev split", fontsize=9)
    fig.tight_layout()
    style.save(fig, out)


def draw_catchup(catchup, out: str) -> None:
    plt = style.pyplot()
    k = [r["rounds_away"] for r in catchup]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    name = catchup[0]["method"]
    axes[0].plot(k, [r["bytes_down"] for r in catchup], marker=style.marker(name),
                 color=style.colour(name), label=f"{style.label(name)}: missed (seed, scalars)")
    axes[0].axhline(catchup[0]["model_bytes"], color="grey", linestyle=":", label="the float32 model")
    axes[0].set_ylabel("bytes down to catch up")
    axes[0].legend(fontsize=7)
    axes[1].plot(k, [r["replay_seconds"] for r in catchup], marker=style.marker(name), color=style.colour(name))
    axes[1].set_ylabel(f"replay seconds ({catchup[0]['threads']} thread(s))")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rounds away")
    fig.suptitle(f"Catch-up cost per client: {catchup[0]['task']}, {catchup[0]['num_params']} parameters",
                 fontsize=9)
    fig.tight_layout()
    style.save(fig, out)


def read_catchup(path) -> list[dict]:
    import pandas as pd

    if not Path(path).is_file():
        raise UserError(f"--catchup {path}: not found (write it with `hiso catchup`)")
    return pd.read_csv(path).to_dict("records")


def parse_reach(items) -> dict[str, float]:
    out = {}
    for it in items or []:
        task, sep, value = it.partition("=")
        try:
            out[task] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--reach {it}: expected TASK=ACCURACY")
    return out


def cmd_report(args) -> int:
    df = load(args.runs)
    catchup = read_catchup(args.catchup) if args.catchup else None
    table = rows(df, parse_reach(args.reach))
    write_tables(table, by_factor(table), catchup, args.tables, args.grid, args.tier)
    draw_curves(df, "round", f"{args.figures}_rounds.png", args.grid)
    draw_curves(df, "bytes_total", f"{args.figures}_bytes.png", args.grid)
    if catchup:
        draw_catchup(catchup, f"{args.figures}_catchup.png")
    return 0

