"""The published numbers (``reference/paper_values.csv``) printed beside our own.

The file holds, per (source, model, task, method, metric): the value as printed (accuracy or F1
in percent, or rounds) and the total communication as printed, with a confidence flag
(``paper``: transcribed from the paper's tables; ``secondhand``: quoted by reviewers). Sources:
``hiso_table3`` (final accuracy / F1), ``hiso_table2`` (rounds to reach DeComFL's best accuracy,
the paper's Table 2), ``decomfl_table`` (DeComFL paper). Nothing here is tuned to it: the
comparison only prints both and their difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .tables import markdown_frame as markdown_table

COLUMNS = ("source", "model", "task", "method", "metric", "value", "comm", "confidence")


def load(path: str | Path):
    """The published-values table; a one-line UserError naming the file if it is unusable."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: published-values CSV not found")
    try:
        df = pd.read_csv(p, comment="#", dtype={"comm": str}, keep_default_na=False,
                         na_values={"value": [""]})
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{p}: not a readable CSV ({exc})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{p}: missing column(s) {', '.join(missing)}")
    return df


def published(paper, model: str, task: str):
    """Rows for one (model, task): method, source, metric, value, comm, confidence."""
    sel = paper[(paper["model"] == model) & (paper["task"] == task)]
    return sel.sort_values(["method", "source"]).reset_index(drop=True)


def beside(table, paper_rows, metric: str, reference: str | None):
    """One row per published (method, source): our medians next to the printed value.

    Accuracy / F1 rows compare our final eval value (median over seeds; the best evaluation is
    shown too) with the printed one, in percentage points.
    ``table`` is :func:`hiso.report.convergence.convergence_table`'s max-mode table (our metric in [0, 1];
    the paper prints percent). Rounds rows (Table 2) sit beside our rounds to ``reference``'s
    best, which is the same definition.
    """
    import pandas as pd

    ours = table.set_index("method")
    rounds_col = f"rounds_to_{reference}_best_median" if reference else None
    rows = []
    for _, p in paper_rows.iterrows():
        m = p["method"]
        have = m in ours.index
        row = {"method": m, "source": p["source"], "confidence": p["confidence"]}
        if p["metric"] == "rounds":
            mine = float(ours.loc[m, rounds_col]) if have and rounds_col in ours.columns else np.nan
            row.update({"quantity": f"rounds to {reference or 'decomfl'}'s best", "ours": mine,
                        "ours_best": np.nan, "paper": float(p["value"]),
                        "ours_minus_paper": mine - float(p["value"])})
        elif p["metric"] == metric:
            final = 100.0 * float(ours.loc[m, f"final_{metric}_median"]) if have else np.nan
            best = 100.0 * float(ours.loc[m, f"best_{metric}_median"]) if have else np.nan
            row.update({"quantity": f"final {metric} (%)", "ours": final, "ours_best": best,
                        "paper": float(p["value"]), "ours_minus_paper": final - float(p["value"])})
        else:  # a published metric this run does not measure
            continue
        row["ours_bytes_up"] = float(ours.loc[m, "bytes_up_median"]) if have else np.nan
        row["paper_comm"] = p["comm"] or "-"
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "quantity", "ours", "ours_best", "paper", "ours_minus_paper",
                                       "ours_bytes_up", "paper_comm", "source", "confidence"])


def beside_paper(args, table, metric: str, mode: str) -> list[str]:
    """The Markdown section printing the published values of --paper-model / --paper-task."""
    if mode != "max":
        raise UserError("--paper: published values exist for accuracy / F1 tables only")
    if not (args.paper_model and args.paper_task):
        raise UserError("--paper needs --paper-model and --paper-task")
    rows = published(load(args.paper), args.paper_model, args.paper_task)
    head = [f"## Beside the published values ({args.paper_model}, {args.paper_task})", ""]
    if not len(rows):
        return head + [f"No published values for {args.paper_model} on {args.paper_task} in "
                       f"{args.paper}.", ""]
    side = beside(table, rows, metric, args.reference)
    return head + [
        f"From {args.paper}. Accuracy / F1 rows: our final eval-split value (median over seeds; "
        f"ours_best: the median of each run's best evaluation) against the printed one, in "
        f"percentage points. Rounds rows (the paper's Table 2): rounds to reach "
        f"{args.reference or 'the reference'}'s best, ours against the printed count. Our "
        f"bytes are uplink totals counted from the encoded messages; the paper's communication "
        f"is quoted as printed. `secondhand` values were quoted by reviewers and may be off. "
        f"A difference is reported, not tuned away.", "", markdown_table(side), ""]
