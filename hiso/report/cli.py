"""The reporting subcommands of ``hiso``: their arguments, and which module does the work.

Handlers are imported when a command runs, so that ``hiso --help`` and the engine's own
commands do not load pandas or matplotlib.
"""

from __future__ import annotations

import importlib


def _lazy(module: str, name: str):
    def handler(args) -> int:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(args)

    return handler


def add_commands(sub) -> None:
    a = sub.add_parser("aggregate", help="collect runs' metrics.jsonl into one CSV")
    a.add_argument("summaries", nargs="+", help="summary.json files (or run directories)")
    a.add_argument("--out", required=True)
    a.set_defaults(handler=_lazy("runs", "cmd_aggregate"))

    f = sub.add_parser("figure", help="draw a figure from aggregated metrics")
    f.add_argument("kind", choices=["convergence"])
    f.add_argument("metrics")
    f.add_argument("--out", required=True)
    f.set_defaults(handler=_lazy("convergence", "cmd_figure"))

    t = sub.add_parser("table", help="write a table (Markdown + CSV + LaTeX): convergence from aggregated "
                                     "metrics, or selection from `hiso select` JSONs")
    t.add_argument("kind", choices=["convergence", "selection"])
    t.add_argument("inputs", nargs="+", help="metrics.csv (convergence) or selection JSONs (selection)")
    t.add_argument("--out", required=True, help="Markdown file (the LaTeX table: same name, .tex)")
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
    t.add_argument("--tier", default=None,
                   help="the pipeline tier: named with the commit in the tables' footer, and in "
                        "cells this tier did not run (default: no footer)")
    t.set_defaults(handler=_lazy("convergence", "cmd_table"))

    m = sub.add_parser("manifest", help="list artefacts with their sha256")
    m.add_argument("files", nargs="+")
    m.add_argument("--out", required=True)
    m.add_argument("--tier", default=None, help="the pipeline tier, recorded in the header")
    m.add_argument("--benchmarks", default=None, metavar="JSON",
                   help="{artefact: benchmark TSV of the rule that wrote it} (inline or a file): "
                        "each artefact's wall and CPU seconds")
    m.add_argument("--benchmark-dir", action="append", default=[], metavar="DIR",
                   help="total wall and CPU seconds of every benchmark TSV under DIR (repeatable)")
    m.set_defaults(handler=_lazy("manifest", "cmd_manifest"))

    s = sub.add_parser("select", help="choose a variant's lr on the dev split from its grid runs")
    s.add_argument("runs", nargs="+", help="run directories (or their summary.json)")
    s.add_argument("--out", required=True, help="selection JSON")
    s.add_argument("--last", type=int, default=3,
                   help="evaluations averaged per run (default 3; 0: all, the area under the curve)")
    s.add_argument("--base-lrs", type=float, nargs="+", default=None, metavar="LR",
                   help="the configured grid: a best lr at an edge of the runs' grid then asks for "
                        "one more lr one log-step beyond it (written as 'extend' in the JSON)")
    s.add_argument("--max-extensions", type=int, default=2, metavar="K",
                   help="with --base-lrs: at most K lrs added beyond the base grid (default 2)")
    s.set_defaults(handler=_lazy("selection", "cmd_select"))

    p = sub.add_parser("figure-diagnostics",
                       help="draw H and the effective step lr/H beside the metric, per run")
    p.add_argument("metrics", help="aggregated metrics CSV (hiso aggregate)")
    p.add_argument("--out", required=True)
    p.add_argument("--methods", nargs="+", default=None,
                   help="only these methods (default: every method that logged H)")
    p.set_defaults(handler=_lazy("diagnostics", "cmd_figure_diagnostics"))

    lf = sub.add_parser("largefed", help="the large-federation study's tables and figures")
    lsub = lf.add_subparsers(dest="largefed_command", required=True)
    r = lsub.add_parser("report", help="tables and figures from the report run directories")
    r.add_argument("runs", nargs="+", help="run directories (or their summary.json)")
    r.add_argument("--catchup", default=None, help="the CSV written by `hiso catchup`")
    r.add_argument("--reach", nargs="*", default=[], metavar="TASK=ACC",
                   help="target eval accuracy per task, for rounds and bytes to target")
    r.add_argument("--grid", default="reduced", help="the grid's name, for the titles")
    r.add_argument("--figures", required=True, help="figure prefix (_rounds, _bytes, _catchup: .png + .pdf)")
    r.add_argument("--tables", required=True, help="table prefix (.md/.csv/.tex, and _catchup.*)")
    r.add_argument("--tier", default=None, help="the pipeline tier, named in the tables' footer")
    r.set_defaults(handler=_lazy("large_federation", "cmd_report"))


def add_digits_commands(dsub) -> None:
    """``hiso digits table|figure`` (``hiso digits run``: :mod:`hiso.digits_cli`)."""
    t = dsub.add_parser("table", help="write a digits table (Markdown + CSV + LaTeX)")
    t.add_argument("kind", choices=["speedup"])
    t.add_argument("inputs", nargs="+", help="metrics.csv")
    t.add_argument("--out", required=True)
    t.add_argument("--csv", required=True)
    t.add_argument("--baseline", default="decomfl")
    t.add_argument("--target", type=float, default=None,
                   help="common target accuracy (default: --target-fraction x the lowest best "
                        "mean accuracy among the scalar-only variants)")
    t.add_argument("--target-fraction", type=float, default=0.95)
    t.add_argument("--tier", default=None,
                   help="the pipeline tier: named with the commit in the tables' footer, and in "
                        "cells this tier did not run (default: no footer)")
    t.set_defaults(handler=_lazy("digits", "cmd_table"))

    f = dsub.add_parser("figure", help="draw a digits figure")
    f.add_argument("kind", choices=["curves", "ablation", "hessian"])
    f.add_argument("inputs", nargs="+", help="metrics.csv (curves, ablation) or HiSo run dirs (hessian)")
    f.add_argument("--out", required=True)
    f.add_argument("--names", nargs="*", default=None, help="variants to draw (default: all)")
    f.add_argument("--title", default=None, help="the figure's title (default: the digits task's)")
    f.set_defaults(handler=_lazy("digits", "cmd_figure"))
