"""The digits check (the paper's Fig. 5 on CPU): figures and tables from its run directories.

Subcommands of ``hiso digits`` (the runs themselves: :mod:`hiso.digits_cli`):

``table speedup metrics.csv --baseline decomfl --out t.md --csv t.csv``
    rounds to reach the baseline's best accuracy (the paper's Table 2 metric) and rounds to a
    common target accuracy, per seed (paired by seed), with bytes.
``figure curves|ablation metrics.csv --out fig.png``        accuracy against rounds, forward passes
                                                            (scalar-only methods) and bytes.
``figure hessian RUN_DIR ... --out fig.png``               histogram of HiSo's learned H (H.npy).

``metrics.csv`` is ``hiso aggregate`` over the report runs; a run's variant is its config
``name``. Learning rates are selected on the dev split by ``hiso select`` (:mod:`hiso.report.selection`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

from .. import io
from ..errors import UserError
from . import style
from .tables import TexDoc, finish, markdown

METRIC = "accuracy"      # reported metric (eval split)


# -- tables ------------------------------------------------------------------------------------
def rounds_to_reach(rounds, values, target: float) -> float:
    """First evaluated round whose value is >= target (NaN when never)."""
    rounds, values = np.asarray(rounds), np.asarray(values, dtype=float)
    order = np.argsort(rounds, kind="stable")
    rounds, values = rounds[order], values[order]
    hit = np.flatnonzero(values >= target - 1e-12)
    return float(rounds[hit[0]]) if len(hit) else float("nan")


def _bytes_at(g, rnd: float) -> float:
    if not math.isfinite(rnd):
        return float("nan")
    return float(g.loc[g["round"] == rnd, "bytes_total"].iloc[0])


def _curves(df) -> dict:
    """{name: {seed: per-run frame sorted by round}}."""
    out: dict = {}
    for (name, seed), g in df.groupby(["name", "seed"], sort=True):
        out.setdefault(name, {})[int(seed)] = g.sort_values("round")
    return out


def common_target(df, names: list[str], fraction: float) -> float:
    """``fraction`` x the lowest, over ``names``, of the best seed-mean accuracy curve value."""
    bests = []
    for n in names:
        mean = df[df["name"] == n].groupby("round")[METRIC].mean()
        bests.append(float(mean.max()))
    return fraction * min(bests)


def speedup_rows(df, baseline: str, target: float) -> tuple[list[dict], list[dict]]:
    """Summary rows per variant and per-seed rows, both metrics, paired by seed.

    * Table-2 metric (the paper's): for seed s, target = the baseline's best eval accuracy on s;
      baseline rounds = the first round it reaches it; variant rounds = the first round the
      variant (same seed) reaches it. Speed-up = baseline rounds / variant rounds.
    * Symmetric: rounds of each to the same ``target`` accuracy; speed-up likewise.
    Not reached: NaN rounds and NaN speed-up (counted in ``reached``).
    """
    curves = _curves(df)
    if baseline not in curves:
        raise UserError(f"table speedup: baseline {baseline!r} not among {sorted(curves)}")
    base = curves[baseline]
    per_seed, summary = [], []
    for name in sorted(curves):
        runs = curves[name]
        seeds = sorted(set(runs) & set(base))
        if not seeds:
            raise UserError(f"table speedup: {name} shares no seed with {baseline}")
        rows = []
        for s in seeds:
            b, v = base[s], runs[s]
            t2 = float(b[METRIC].max())
            rb2 = rounds_to_reach(b["round"], b[METRIC], t2)
            rv2 = rounds_to_reach(v["round"], v[METRIC], t2)
            rbc = rounds_to_reach(b["round"], b[METRIC], target)
            rvc = rounds_to_reach(v["round"], v[METRIC], target)
            last_b = float(b["round"].max())
            rows.append({
                "name": name, "seed": s,
                "final_accuracy": float(v[METRIC].iloc[-1]), "best_accuracy": float(v[METRIC].max()),
                "t2_target": t2, "t2_rounds_baseline": rb2, "t2_rounds": rv2,
                "t2_speedup": _ratio(rb2, rv2),
                "t2_bytes_baseline": _bytes_at(b, rb2), "t2_bytes": _bytes_at(v, rv2),
                "ct_rounds_baseline": rbc, "ct_rounds": rvc, "ct_speedup": _ratio(rbc, rvc),
                "ct_bytes_baseline": _bytes_at(b, rbc), "ct_bytes": _bytes_at(v, rvc),
                # the baseline never reached the target but the variant did: the speed-up is
                # censored, at least (the baseline's last round) / (the variant's rounds)
                "ct_speedup_lower_bound": last_b / rvc if math.isnan(rbc) and math.isfinite(rvc) and rvc > 0
                else float("nan"),
            })
        per_seed += rows
        summary.append(_summarise(name, rows, target))
    return summary, per_seed


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return float("nan")
    return a / b


def _stat(vals, fn) -> float:
    v = np.asarray([x for x in vals if math.isfinite(x)], dtype=float)
    return float(fn(v)) if len(v) else float("nan")


def _summarise(name: str, rows: list[dict], target: float) -> dict:
    col = lambda k: [r[k] for r in rows]
    out = {"name": name, "seeds": len(rows),
           "final_accuracy_mean": _stat(col("final_accuracy"), np.mean),
           "final_accuracy_sd": _stat(col("final_accuracy"), lambda v: v.std(ddof=1) if len(v) > 1 else 0.0),
           "best_accuracy_mean": _stat(col("best_accuracy"), np.mean)}
    for p in ("t2", "ct"):
        sp = col(f"{p}_speedup")
        out.update({
            f"{p}_rounds_baseline_median": _stat(col(f"{p}_rounds_baseline"), np.median),
            f"{p}_rounds_median": _stat(col(f"{p}_rounds"), np.median),
            f"{p}_reached": f"{sum(math.isfinite(x) for x in col(f'{p}_rounds'))}/{len(rows)}",
            f"{p}_speedup_median": _stat(sp, np.median),
            f"{p}_speedup_min": _stat(sp, np.min),
            f"{p}_speedup_max": _stat(sp, np.max),
            f"{p}_bytes_baseline_median": _stat(col(f"{p}_bytes_baseline"), np.median),
            f"{p}_bytes_median": _stat(col(f"{p}_bytes"), np.median),
        })
    lbs = [f"> {r['ct_speedup_lower_bound']:.3g} (seed {r['seed']})" for r in rows
           if math.isfinite(r["ct_speedup_lower_bound"])]
    out["ct_censored"] = "; ".join(lbs) if lbs else ""
    out["ct_target"] = target
    out["t2_target_mean"] = _stat(col("t2_target"), np.mean)
    return out


def _run_params(df) -> dict:
    """{name: (method, lr, nu)} read from the runs' resolved configs."""
    out = {}
    for name, g in df.groupby("name"):
        cfg = yaml.safe_load((Path(g["run"].iloc[0]) / "config.yaml").read_text())
        m = cfg["method"]
        out[name] = (m["name"], m["lr"], m.get("nu"), m.get("h_convention"))
    return out


def _fmt(v, nd=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/r"
        if abs(v) >= 1e5:
            return f"{v:.3g}"
        return f"{v:.{nd}g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _md_table(header: list[str], rows: list[list]) -> str:
    return markdown(header, rows, _fmt)


def cmd_table(args) -> int:
    import pandas as pd

    if len(args.inputs) != 1:
        raise UserError("table speedup: expects one metrics.csv")
    path = Path(args.inputs[0])
    if not path.is_file():
        raise UserError(f"{path}: metrics CSV not found")
    df = pd.read_csv(path)
    params = _run_params(df) if "run" in df.columns and Path(df["run"].iloc[0]).is_dir() else {}
    zo = [n for n in sorted(df["name"].unique()) if params.get(n, ("decomfl",))[0] not in ("fedavg", "fedadam", "fedzo")]
    target = args.target if args.target is not None else common_target(df, zo, args.target_fraction)
    summary, per_seed = speedup_rows(df, args.baseline, target)
    for row in summary:
        method, lr, nu, conv = params.get(row["name"], (None, None, None, None))
        row.update(method=method, lr=lr, nu=nu)
    cols = ["name", "method", "nu", "lr"] + [k for k in summary[0] if k not in ("name", "method", "nu", "lr")]
    csv_text = pd.DataFrame(summary)[cols].to_csv(index=False)
    title = "Digits: rounds to accuracy, HiSo vs DeComFL (the paper's Fig. 5 setting, on CPU)"
    tex = TexDoc(title)

    def tab(caption: str, header: list[str], rows: list[list]) -> str:
        tex.table(caption, header, [[_fmt(c) for c in r] for r in rows])
        return _md_table(header, rows)

    others = [r for r in summary if r["name"] != args.baseline]
    target_how = ("given" if args.target is not None else
                  f"{args.target_fraction:g} x the lowest best seed-mean accuracy of the scalar-only variants")
    md = [
        f"# {title}",
        "",
        f"Eval-split accuracy; {len(per_seed) // max(len(summary), 1)} seeds per variant, each "
        f"variant at its learning rate selected on the dev split. Runs are paired by seed (same "
        f"initial model, client sampling and data partition). Speed-up = baseline rounds / "
        f"variant rounds; median [min, max] over seeds, over the seeds where both reached the "
        f"target (`reached`); n/r = not reached within the run. Bytes = uplink + downlink "
        f"counted from the encoded messages, at the round the target was reached (median).",
        "",
        f"**Table-2 metric (the paper's):** target = {args.baseline}'s best eval accuracy on the "
        f"same seed; rounds for {args.baseline} = the round of that best. By construction the "
        f"baseline is measured at its peak (a noisy maximum over evaluations), so this metric "
        f"favours neither side only when both curves are smooth.",
        "",
        tab(f"Digits, Table-2 metric: rounds to {args.baseline}'s best eval accuracy on the same seed",
            ["variant", "lr", "target (mean)", f"rounds {args.baseline}", "rounds", "reached",
                   "speed-up median [min, max]", f"bytes {args.baseline}", "bytes"],
                  [[r["name"], r["lr"], r["t2_target_mean"], r["t2_rounds_baseline_median"],
                    r["t2_rounds_median"], r["t2_reached"],
                    f"{_fmt(r['t2_speedup_median'])} [{_fmt(r['t2_speedup_min'])}, {_fmt(r['t2_speedup_max'])}]",
                    r["t2_bytes_baseline_median"], r["t2_bytes_median"]] for r in others]),
        "",
        f"**Symmetric metric:** rounds of each method to the common target accuracy "
        f"{target:.4f} ({target_how}); `reached` counts the variant's seeds; each rounds "
        f"median is over the seeds where that method reached the target, the speed-up range "
        f"over the seeds where both did; a seed where only the variant did gives a censored "
        f"lower bound (the baseline's last round / the variant's rounds).",
        "",
        tab(f"Digits, symmetric metric: rounds to the common target accuracy {target:.4f}",
            ["variant", "lr", f"rounds {args.baseline}", "rounds", "reached",
                   "speed-up median [min, max]", f"{args.baseline} n/r: speed-up", f"bytes {args.baseline}",
                   "bytes"],
                  [[r["name"], r["lr"], r["ct_rounds_baseline_median"], r["ct_rounds_median"], r["ct_reached"],
                    f"{_fmt(r['ct_speedup_median'])} [{_fmt(r['ct_speedup_min'])}, {_fmt(r['ct_speedup_max'])}]",
                    r["ct_censored"] or "-", r["ct_bytes_baseline_median"], r["ct_bytes_median"]]
                   for r in others]),
        "",
        "**Accuracy at equal rounds** (final evaluation, mean +- sd over seeds; best = mean of "
        "each seed's best evaluation):",
        "",
        tab("Digits: accuracy at equal rounds (final evaluation, mean +- sd over seeds)",
            ["variant", "method", "nu", "lr", "final accuracy", "best accuracy"],
                  [[r["name"], r["method"], r["nu"], r["lr"],
                    f"{r['final_accuracy_mean']:.4f} +- {r['final_accuracy_sd']:.4f}",
                    r["best_accuracy_mean"]] for r in summary]),
        "",
        "Per seed:",
        "",
        tab("Digits: per seed",
            ["variant", "seed", "final acc", "T2 target", f"T2 rounds {args.baseline}", "T2 rounds",
                   "T2 speed-up", f"CT rounds {args.baseline}", "CT rounds", "CT speed-up"],
                  [[r["name"], r["seed"], r["final_accuracy"], r["t2_target"], r["t2_rounds_baseline"],
                    r["t2_rounds"], r["t2_speedup"], r["ct_rounds_baseline"], r["ct_rounds"],
                    r["ct_speedup"]] for r in per_seed if r["name"] != args.baseline]),
        "",
    ]
    finish(md, tex, args.tier, args.out, args.csv, csv_text)
    return 0


# -- figures -----------------------------------------------------------------------------------
def _band(df, name: str, x: str = "round"):
    """Per round: mean, min, max of accuracy over seeds and the mean of ``x``."""
    g = df[df["name"] == name].groupby("round")
    return g[x].mean().to_numpy(), g[METRIC].mean().to_numpy(), g[METRIC].min().to_numpy(), g[METRIC].max().to_numpy()


def _names(df, wanted):
    have = list(dict.fromkeys(sorted(df["name"].unique())))
    if not wanted:
        return have
    missing = [n for n in wanted if n not in have]
    if missing:
        raise UserError(f"figure: variants {missing} not in the metrics (have {have})")
    return list(wanted)


def _lrs(df) -> dict:
    """{name: lr} from the runs' resolved configs, when the run directories are at hand."""
    try:
        return {n: p[1] for n, p in _run_params(df).items()}
    except (OSError, KeyError, TypeError):
        return {}


def _plot_bands(ax, df, names, x: str, positive: bool = False):
    lrs = _lrs(df[df["name"].isin(names)])
    colours = style.palette(names)
    for n in names:
        xs, mean, lo, hi = _band(df, n, x)
        if positive:  # a log axis: drop round 0 (no bytes yet)
            keep = xs > 0
            xs, mean, lo, hi = xs[keep], mean[keep], lo[keep], hi[keep]
        seeds = df[df["name"] == n]["seed"].nunique()
        lr = f"lr {lrs[n]:g}, " if n in lrs else ""
        (line,) = ax.plot(xs, mean, label=f"{n} ({lr}{seeds} seeds)", color=colours[n],
                          dashes=style.dashes(n))
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def cmd_figure(args) -> int:
    plt = style.pyplot()
    if args.kind == "hessian":
        fig = _figure_hessian(plt, args.inputs)
    else:
        import pandas as pd

        df = pd.read_csv(args.inputs[0])
        names = _names(df, args.names)
        if args.kind == "curves":
            # forward passes only for the scalar-only methods (they log `forwards`): what a ZO
            # method pays per round differs (P+1, 2P, 2P+1 per step), so rounds alone flatter some
            zo = [n for n in names if "forwards" in df
                  and df.loc[df["name"] == n, "forwards"].notna().all()]
            panels = ["round"] + (["forwards"] if zo else []) + ["bytes_total"]
            fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
            for ax, x in zip(axes, panels):
                if x == "round":
                    _plot_bands(ax, df, names, "round")
                    ax.set_xlabel("rounds")
                elif x == "forwards":
                    _plot_bands(ax, df, zo, "forwards", positive=True)
                    ax.set_xscale("log")
                    ax.set_xlabel("cumulative forward passes (all sampled clients; scalar-only methods)")
                else:
                    _plot_bands(ax, df, names, "bytes_total", positive=True)
                    ax.set_xscale("log")
                    ax.set_xlabel("cumulative bytes (uplink + downlink, all clients; mean over seeds)")
                ax.set_ylabel("eval accuracy")
            axes[0].legend(loc="lower right", fontsize=7)
        else:  # ablation
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
            _plot_bands(axes[0], df, names, "round")
            axes[0].set_ylabel("eval accuracy")
            colours = style.palette(names)
            for n in names:
                g = df[df["name"] == n].groupby("round")["loss"].mean()
                axes[1].plot(g.index, g.to_numpy(), label=n, color=colours[n], dashes=style.dashes(n))
            axes[1].set_yscale("log")
            axes[1].set_ylabel("eval loss (mean over seeds)")
            for ax in axes:
                ax.set_xlabel("rounds")
            axes[0].legend(loc="lower right", fontsize=7)
        fig.suptitle(getattr(args, "title", None)
                     or "digits, 64 clients, Dirichlet alpha = 1; lr selected on the dev split "
                     "(legend); line: mean over seeds, band: min-max", fontsize=9)
    fig.tight_layout()
    style.save(fig, args.out)
    return 0


def load_h(run_dirs) -> dict:
    """{nu label: (H entries pooled over runs, layer labels, per-run count)} from H.npy files."""
    groups: dict = {}
    for p in run_dirs:
        d = io.run_dir(p)
        if not (d / "H.npy").exists():
            raise UserError(f"{d / 'H.npy'}: missing (run with eval.save_h: true, a HiSo method)")
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        h = np.load(d / "H.npy")
        layers = np.empty(len(h), dtype=object)
        data = d / "data.json"
        spans = json.loads(data.read_text()).get("layers", []) if data.exists() else []
        start = 0
        for span in spans:
            layers[start:start + span["size"]] = span["name"]
            start += span["size"]
        layers[start:] = "all" if not spans else "?"
        key = f"nu = {cfg['method'].get('nu')} ({cfg['method'].get('h_convention', '')})"
        hs, ls, n = groups.get(key, ([], [], 0))
        groups[key] = (hs + [h], ls + [layers], n + 1)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1]), v[2]) for k, v in sorted(groups.items())}


def _figure_hessian(plt, run_dirs):
    import matplotlib.ticker

    groups = load_h(run_dirs)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.4), squeeze=False)
    for ax, (key, (h, layers, n)) in zip(axes[0], groups.items()):
        bins = np.logspace(np.log10(h.min()), np.log10(h.max()), 40)
        names = list(dict.fromkeys(layers))
        ax.hist([h[layers == name] for name in names], bins=bins, stacked=True, label=names)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        q50, q99 = np.quantile(h, [0.5, 0.99])
        ax.set_title(f"{key}\n{n} runs; max/median = {h.max() / q50:.3g}, p99/median = {q99 / q50:.3g}",
                     fontsize=8)
        ax.set_xlabel("learned H diagonal entry (log scale)")
        ax.set_ylabel("count (log scale)")
        ax.legend(fontsize=6)
    return fig
