"""Aggregation, figures and tables: the pipeline's last steps, as subcommands of ``hiso``.

``hiso aggregate RUN/summary.json ... --out metrics.csv``  long table of every evaluation
``hiso figure convergence metrics.csv --out fig.png``   metric vs rounds and vs bytes
``hiso table convergence metrics.csv --out t.md --csv t.csv``
``hiso manifest FILE ... --out reproduce-all``            sha256 of every regenerated artefact
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from . import io
from .errors import UserError


def add_commands(sub) -> None:
    a = sub.add_parser("aggregate", help="collect runs' metrics.jsonl into one CSV")
    a.add_argument("summaries", nargs="+", help="summary.json files (or run directories)")
    a.add_argument("--out", required=True)
    a.set_defaults(handler=cmd_aggregate)

    f = sub.add_parser("figure", help="draw a figure from aggregated metrics")
    f.add_argument("kind", choices=["convergence"])
    f.add_argument("metrics")
    f.add_argument("--out", required=True)
    f.set_defaults(handler=cmd_figure)

    t = sub.add_parser("table", help="write a table (Markdown + CSV): convergence from aggregated "
                                     "metrics, or selection from `hiso select` JSONs")
    t.add_argument("kind", choices=["convergence", "selection"])
    t.add_argument("inputs", nargs="+", help="metrics.csv (convergence) or selection JSONs (selection)")
    t.add_argument("--out", required=True, help="Markdown file")
    t.add_argument("--csv", required=True, help="CSV file")
    t.add_argument("--target", type=float, default=1e-2,
                   help="relative reduction of the metric counted as reached (default 1e-2)")
    t.add_argument("--title", default=None, help="Markdown heading (default: the task names, or "
                                                    "'Learning-rate selection on the dev split')")
    t.add_argument("--reach", type=float, default=None,
                   help="max-mode metrics (accuracy, F1): also count rounds and bytes to reach "
                        "this value")
    t.add_argument("--reference", default=None,
                   help="max-mode metrics: also count rounds to reach this method's best "
                        "(median over its runs; the paper's Table 2)")
    t.add_argument("--paper", default=None, metavar="CSV",
                   help="max-mode metrics: print the published values of --paper-model / "
                        "--paper-task from this CSV (reference/paper_values.csv) beside ours")
    t.add_argument("--paper-model", default=None, help="model key in the CSV, e.g. opt-125m")
    t.add_argument("--paper-task", default=None, help="task key in the CSV, e.g. sst2")
    t.set_defaults(handler=cmd_table)

    m = sub.add_parser("manifest", help="list artefacts with their sha256")
    m.add_argument("files", nargs="+")
    m.add_argument("--out", required=True)
    m.set_defaults(handler=cmd_manifest)


def load_runs(paths) -> "pd.DataFrame":
    """One row per evaluation of every run, with the run's identity and final status."""
    import pandas as pd

    frames = []
    for path in paths:
        d, cfg, summary, recs = io.read_run(path)
        if not recs and summary.get("status") == "failed":
            print(f"hiso: note: {d}: failed before its first evaluation ({summary.get('error')}); "
                  f"left out", file=sys.stderr)
            continue
        if not recs:
            raise UserError(f"{d / 'metrics.jsonl'}: no evaluations")
        df = pd.DataFrame(recs)
        df.insert(0, "run", str(d))
        df.insert(1, "name", cfg.get("name"))
        df.insert(2, "method", summary["method"])
        df.insert(3, "task", summary["task"])
        df.insert(4, "seed", summary["seed"])
        df["status"] = summary["status"]
        df["metric"] = summary["metric"]
        df["metric_mode"] = summary.get("metric_mode", "min")
        df["bytes_total"] = df["bytes_up"] + df["bytes_down"]
        frames.append(df)
    if not frames:
        raise UserError("no run with an evaluation among the inputs")
    return pd.concat(frames, ignore_index=True)


def cmd_aggregate(args) -> int:
    df = load_runs(args.summaries)
    io.atomic_write_text(args.out, df.to_csv(index=False))
    return 0


def _read_metrics(path):
    import pandas as pd

    if not Path(path).exists():
        raise UserError(f"{path}: metrics CSV not found")
    return pd.read_csv(path)


def cmd_figure(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = _read_metrics(args.metrics)
    metric = df["metric"].iloc[0]
    higher_better = _mode(df) == "max"
    sns.set_theme(style="whitegrid", context="paper")
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
    _save_fig(fig, args.out)
    return 0


def _save_fig(fig, out) -> None:
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format=Path(out).suffix.lstrip(".") or "png", dpi=150)
    io.atomic_write_bytes(out, buf.getvalue())


def _mode(df) -> str:
    """'min' (lower is better: gaps, losses) or 'max' (accuracy, F1); older CSVs are 'min'."""
    return str(df["metric_mode"].iloc[0]) if "metric_mode" in df.columns else "min"


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
        md += _beside_paper(args, table, metric, _mode(df))
    io.atomic_write_text(args.csv, table.to_csv(index=False))  # both only once nothing can fail
    io.atomic_write_text(args.out, "\n".join(md))
    return 0


def _beside_paper(args, table, metric: str, mode: str) -> list[str]:
    from . import paper

    if mode != "max":
        raise UserError("--paper: published values exist for accuracy / F1 tables only")
    if not (args.paper_model and args.paper_task):
        raise UserError("--paper needs --paper-model and --paper-task")
    rows = paper.published(paper.load(args.paper), args.paper_model, args.paper_task)
    head = [f"## Beside the published values ({args.paper_model}, {args.paper_task})", ""]
    if not len(rows):
        return head + [f"No published values for {args.paper_model} on {args.paper_task} in "
                       f"{args.paper}.", ""]
    side = paper.beside(table, rows, metric, args.reference)
    return head + [
        f"From {args.paper}. Accuracy / F1 rows: our final eval-split value (median over seeds; "
        f"ours_best: the median of each run's best evaluation) against the printed one, in "
        f"percentage points. Rounds rows (the paper's Table 2): rounds to reach "
        f"{args.reference or 'the reference'}'s best, ours against the printed count. Our "
        f"bytes are uplink totals counted from the encoded messages; the paper's communication "
        f"is quoted as printed. `secondhand` values were quoted by reviewers and may be off. "
        f"A difference is reported, not tuned away.", "", markdown_table(side), ""]


def markdown_table(df) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "NaN" if np.isnan(v) else f"{v:.4g}"
        return str(v)

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def cmd_manifest(args) -> int:
    lines = ["# Artefacts regenerated by `snakemake reproduce-all` (sha256, bytes, path)"]
    for f in args.files:
        p = Path(f)
        if not p.is_file():
            raise UserError(f"{f}: artefact missing")
        lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.stat().st_size:>9}  {f}")
    io.atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 0
