"""Reading run directories: one long table of every evaluation of every run.

``hiso aggregate RUN/summary.json ... --out metrics.csv`` writes it; every report that works on
evaluations reads that CSV back with :func:`read_metrics`.
"""

from __future__ import annotations

from pathlib import Path

from .. import io
from ..errors import UserError


def load_runs(paths) -> "pd.DataFrame":
    """One row per evaluation of every run, with the run's identity and final status."""
    import pandas as pd

    frames = []
    for path in paths:
        d, cfg, summary, recs = io.read_run(path)
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
    return pd.concat(frames, ignore_index=True)


def cmd_aggregate(args) -> int:
    df = load_runs(args.summaries)
    io.atomic_write_text(args.out, df.to_csv(index=False))
    return 0


def read_metrics(path):
    """An aggregated metrics CSV; a one-line error naming it when it is missing."""
    import pandas as pd

    if not Path(path).exists():
        raise UserError(f"{path}: metrics CSV not found")
    return pd.read_csv(path)


def mode(df) -> str:
    """'min' (lower is better: gaps, losses) or 'max' (accuracy, F1); older CSVs are 'min'."""
    return str(df["metric_mode"].iloc[0]) if "metric_mode" in df.columns else "min"
