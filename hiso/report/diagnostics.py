"""HiSo's preconditioner beside its accuracy: ``hiso figure-diagnostics metrics.csv --out fig.png``.

Every evaluation record of a run with a preconditioner H carries ``h_mean/min/max`` and the
effective step size ``lr_eff_mean/min/max`` = lr / H (see ``ScalarOptimizer.diagnostics``).
The figure draws, against rounds and one line per run: the run's metric, H (mean, band min-max)
and lr / H (mean, band min-max), so a late collapse can be read against the step size it
happened at. Runs without H (DeComFL, FedAvg ...) are left out.
"""

from __future__ import annotations

from ..errors import UserError

H_COLUMNS = ("h_mean", "h_min", "h_max", "lr_eff_mean", "lr_eff_min", "lr_eff_max")


def runs_with_h(df, methods=None):
    """The rows of runs that logged H, optionally of ``methods`` only."""
    missing = [c for c in H_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"no H diagnostics in the metrics (columns {', '.join(missing)} absent): "
                        f"runs of a method with a preconditioner (hiso) log them")
    rows = df[df["h_mean"].notna()]
    if methods:
        rows = rows[rows["method"].isin(methods)]
    if not len(rows):
        raise UserError("no run with H diagnostics" + (f" among {', '.join(methods)}" if methods else ""))
    return rows


def cmd_figure_diagnostics(args) -> int:
    import seaborn as sns

    from . import style
    from .runs import read_metrics

    plt = style.pyplot()
    df = runs_with_h(read_metrics(args.metrics), args.methods)
    metric = df["metric"].iloc[0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    colours = dict(zip(sorted(df["run"].unique()), sns.color_palette(n_colors=df["run"].nunique())))
    for run, r in df.groupby("run", sort=True):
        r = r.sort_values("round")
        c, label = colours[run], f"{r['method'].iloc[0]} seed {r['seed'].iloc[0]}"
        axes[0].plot(r["round"], r[metric], color=c, marker="o", ms=3, label=label)
        for ax, key in ((axes[1], "h"), (axes[2], "lr_eff")):
            ax.plot(r["round"], r[f"{key}_mean"], color=c)
            ax.fill_between(r["round"], r[f"{key}_min"], r[f"{key}_max"], color=c, alpha=0.15, lw=0)
    axes[0].set_ylabel(f"{metric} (eval split)")
    axes[1].set_ylabel("H: mean (line), min-max (band)")
    axes[2].set_ylabel("effective step lr / H: mean, min-max")
    for ax in axes:
        ax.set_xlabel("rounds")
    for ax in axes[1:]:
        ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    style.save(fig, args.out)
    return 0
