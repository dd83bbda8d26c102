"""Convergence figures and tables: a metric against rounds and bytes, per method.

``hiso figure convergence metrics.csv --out fig.png``   metric vs rounds and vs bytes
``hiso table convergence metrics.csv --out t.md --csv t.csv [--paper CSV ...]``
    per method: final / best metric, rounds (and bytes) to a target, bytes exchanged; with
    ``--paper``, the published values beside ours (:mod:`hiso.report.published`).

``metrics.csv`` is ``hiso aggregate`` over the runs (:mod:`hiso.report.runs`).
"""

from __future__ import annotations

import numpy as np

from .. import io
from ..errors import UserError
from . import style
from .runs import mode as _mode
from .runs import read_metrics as _read_metrics
from .tables import markdown_frame as markdown_table


def convergence_table(df, target: float, reach: float | None = None, reference: str | None = None):
    """Per method: final metric, reduction, rounds to reach target x initial, bytes.

    Max-mode metrics (accuracy, F1) get their own columns: final and best value, and the first
    evaluated round (and the bytes spent by then) at which the run reaches ``reach`` and the
    ``reference`` method's best (median over its runs), as in the paper's rounds-to-accuracy
    table.
    """
    import pandas as pd

    metric = df["metric"].iloc[0]
    if _mode(df) == "max":
        return _max_table(df, metric, reach, reference)
    rows = []
    for method, g in df.groupby("method", sort=True):
        per_run = []
        for _, r in g.groupby("run"):
            r = r.sort_values("round")
            init, final = r[metric].iloc[0], r[metric].iloc[-1]
            hit = r[r[metric] <= target * init]["round"]
            per_round = r["bytes_up"].iloc[-1] / max(int(r["round"].iloc[-1]), 1)
            per_run.append((final, init / final if final > 0 else np.inf,
                            hit.iloc[0] if len(hit) else np.nan, r["bytes_up"].iloc[-1],
                            r["bytes_down"].iloc[-1], per_round, r["status"].iloc[-1]))
        a = pd.DataFrame(per_run, columns=["final", "reduction", "rounds_to_target", "bytes_up",
                                           "bytes_down", "bytes_up_per_round", "status"])
        rows.append({
            "method": method, "runs": len(a),
            f"final_{metric}_median": float(a["final"].median()),
            "reduction_median": float(a["reduction"].median()),
            "reduction_min": float(a["reduction"].min()),
            f"rounds_to_{target:g}x_median": float(a["rounds_to_target"].median()),
            "bytes_up_median": float(a["bytes_up"].median()),
            "bytes_down_median": float(a["bytes_down"].median()),
            "bytes_up_per_round": float(a["bytes_up_per_round"].median()),
            "statuses": ",".join(sorted(set(a["status"]))),
        })
    return pd.DataFrame(rows)


def _first_reach(r, metric: str, level: float) -> tuple[float, float]:
    """(round, bytes up + down) of the first evaluation with metric >= level; NaN if none."""
    hit = r[r[metric] >= level]
    if not len(hit):
        return np.nan, np.nan
    return float(hit["round"].iloc[0]), float(hit["bytes_total"].iloc[0])


def _max_table(df, metric: str, reach: float | None, reference: str | None):
    import pandas as pd

    ref_best = None
    if reference is not None:
        ref = df[df["method"] == reference]
        if not len(ref):
            raise UserError(f"--reference {reference}: no run of that method in the metrics")
        ref_best = float(ref.groupby("run")[metric].max().median())
    rows = []
    for method, g in df.groupby("method", sort=True):
        per_run = []
        for _, r in g.groupby("run"):
            r = r.sort_values("round")
            rounds = max(int(r["round"].iloc[-1]), 1)
            row = {"initial": r[metric].iloc[0], "final": r[metric].iloc[-1], "best": r[metric].max(),
                   "bytes_up": r["bytes_up"].iloc[-1], "bytes_down": r["bytes_down"].iloc[-1],
                   "bytes_up_per_round": r["bytes_up"].iloc[-1] / rounds, "status": r["status"].iloc[-1]}
            if reach is not None:
                row["reach_round"], row["reach_bytes"] = _first_reach(r, metric, reach)
            if ref_best is not None:
                row["ref_round"], row["ref_bytes"] = _first_reach(r, metric, ref_best)
            per_run.append(row)
        a = pd.DataFrame(per_run)
        out = {"method": method, "runs": len(a),
               f"initial_{metric}_median": float(a["initial"].median()),
               f"final_{metric}_median": float(a["final"].median()),
               f"best_{metric}_median": float(a["best"].median()),
               f"final_{metric}_min": float(a["final"].min())}
        if reach is not None:
            out[f"rounds_to_{reach:g}_median"] = float(a["reach_round"].median())
            out[f"runs_reaching_{reach:g}"] = int(a["reach_round"].notna().sum())
            out[f"bytes_to_{reach:g}_median"] = float(a["reach_bytes"].median())
        if ref_best is not None:
            out[f"rounds_to_{reference}_best_median"] = float(a["ref_round"].median())
            out[f"bytes_to_{reference}_best_median"] = float(a["ref_bytes"].median())
        out.update({"bytes_up_median": float(a["bytes_up"].median()),
                    "bytes_down_median": float(a["bytes_down"].median()),
                    "bytes_up_per_round": float(a["bytes_up_per_round"].median()),
                    "statuses": ",".join(sorted(set(a["status"])))})
        rows.append(out)
    table = pd.DataFrame(rows)
    table.attrs["reference_best"] = ref_best
    return table


def cmd_table(args) -> int:
    if args.kind == "selection":
        from .selection import write_table

        return write_table(args.inputs, args.out, args.csv,
                           args.title or "Learning-rate selection on the dev split")
    if len(args.inputs) != 1:
        raise UserError(f"table convergence: expects one metrics CSV, got {len(args.inputs)} files")
    df = _read_metrics(args.inputs[0])
    table = convergence_table(df, args.target, args.reach, args.reference)
    metric = df["metric"].iloc[0]
    if _mode(df) == "max":
        parts = [f"Median over runs (seeds) of the eval-split {metric}, evaluated every few rounds"]
        if args.reach is not None:
            parts.append(f"rounds to reach {metric} >= {args.reach:g} (first evaluation at or "
                         f"above it; median over the runs that reached it, counted in "
                         f"runs_reaching; NaN: none did) and the bytes exchanged by then")
        if args.reference is not None:
            parts.append(f"rounds to reach {args.reference}'s best {metric} "
                         f"({table.attrs['reference_best']:.4g}, median over its runs)")
        text = "; ".join(parts) + (". Bytes are counted from the encoded messages (ledger), "
                                   "uplink and downlink totals per run.")
    else:
        text = (f"Median over runs; reduction = initial / final {metric}; rounds to reach "
                f"{args.target:g} x the initial {metric} (NaN: not reached). Bytes are counted from "
                f"the encoded messages (ledger), uplink and downlink totals per run.")
    md = [f"# {args.title}" if args.title else f"# Convergence: {', '.join(sorted(df['task'].unique()))}",
          "",
          text,
          "", markdown_table(table), ""]
    if args.paper:
        from .published import beside_paper

        md += beside_paper(args, table, metric, _mode(df))
    io.atomic_write_text(args.csv, table.to_csv(index=False))  # both only once nothing can fail
    io.atomic_write_text(args.out, "\n".join(md))
    return 0


def cmd_figure(args) -> int:
    plt = style.pyplot()
    import seaborn as sns

    df = _read_metrics(args.metrics)
    metric = df["metric"].iloc[0]
    higher_better = _mode(df) == "max"
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, x, label in ((axes[0], "round", "rounds"), (axes[1], "bytes_total", "bytes exchanged (up + down)")):
        if higher_better and x == "bytes_total":
            # seeds differ in bytes (catch-up downlinks depend on who was sampled): a median
            # across seeds at equal x would zigzag, so draw every run
            sns.lineplot(df, x=x, y=metric, hue="method", units="run", estimator=None, lw=0.8, ax=ax)
            ax.set_ylabel(f"{metric} (one line per run)")
        else:
            sns.lineplot(df, x=x, y=metric, hue="method", estimator=np.median, errorbar=("pi", 100),
                         ax=ax)
            ax.set_ylabel(f"{metric} (median, band: min-max over seeds)")
        if not higher_better:  # gaps and losses span decades; accuracies do not
            ax.set_yscale("log")
        ax.set_xlabel(label)
    axes[1].set_xscale("log")
    fig.tight_layout()
    style.save(fig, args.out)
    return 0
