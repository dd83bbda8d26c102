"""The theory table (Markdown + CSV) and figures, from the experiments' run directories.

One row per claim: the measured number, its 95% bootstrap interval, the issue's threshold (from
configs/theory.yaml ``checks``), PASS / FAIL (INFO where the issue sets no threshold) and the
evidence. Nothing is typed: every number is computed here from the run files, or (spectral
illustration) from ``hiso.theory``.
"""

from __future__ import annotations

import csv
import math
import io as _io
from pathlib import Path

from .. import io
from ..experiments import blocks, dsweep, illcond, local, noise, spectrum, zsweep
from ..experiments.runs import read_index
from ..experiments.stats import Check, fmt, median
from . import theory_figures as figures
from .tables import TexDoc, finish, latex, markdown

FIGURES = ("theory_dsweep.png", "theory_zeta.png", "theory_convergence.png",
           "theory_learned_zeta.png", "theory_noise.png", "theory_spectrum.png", "theory_local.png")
COLUMNS = ["id", "experiment", "claim", "measured", "ci_lo", "ci_hi", "threshold", "verdict",
           "explanation"]


def illcond_dirs(cfg: dict, results: Path) -> list[Path]:
    return [results / f"illcond_{p}" for p in cfg["illcond"]["parts"]]


def analyse_all(cfg: dict, results: Path) -> dict:
    common, checks = cfg["common"], cfg["checks"]
    return {
        "dsweep": dsweep.analyse(cfg["dsweep"], common, results / "dsweep", checks),
        "zsweep": zsweep.analyse(cfg["zsweep"], common, results / "zsweep", checks),
        "illcond": illcond.analyse(cfg["illcond"], common, illcond_dirs(cfg, results), checks),
        "noise": noise.analyse(cfg["noise"], common, results / "noise", checks),
        "local": local.analyse(cfg["local"], common, results / "local", checks),
        "spectrum": spectrum.analyse(cfg["spectrum"], common, checks),
    }


def checks_csv(checks: list[Check]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for c in checks:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in c.as_row().items()})
    return buf.getvalue()


CHECKS_HEADER = ["#", "Claim", "Measured", "95% CI", "Threshold", "Verdict", "Evidence / explanation"]


def checks_rows(checks: list[Check]) -> list[list]:
    return [[i, c.claim, fmt(c.measured), f"[{fmt(c.ci_lo)}, {fmt(c.ci_hi)}]", c.threshold,
             f"**{c.verdict}**" if c.verdict != "INFO" else c.verdict, c.explanation]
            for i, c in enumerate(checks, 1)]


def checks_markdown(checks: list[Check]) -> str:
    return markdown(CHECKS_HEADER, checks_rows(checks))


ILLCOND_HEADER = ["case", "rotated", "method", "median rounds", "selected k (step = theory x 2^k)",
                  "step", "at grid edge", "final zeta(H)", "final Spearman(H, Diag A)"]


def illcond_rows(res: dict) -> list[list[str]]:
    rows = []
    for (case, m), e in sorted(res["rep"].items()):
        sel = e["selection"] or {}
        k = f"{sel.get('k')}" + (f" (from {sel['lr_from']})" if sel.get("lr_from") else "")
        rows.append([case, e["rotate"], m, fmt(e["median"]), k, fmt(sel.get("lr", float("nan"))),
                     sel.get("edge"), fmt(median(e["zeta"])), fmt(median(e["spearman"]))])
    return rows


def illcond_markdown(res: dict) -> str:
    return markdown(ILLCOND_HEADER, illcond_rows(res))


def run_totals(cfg: dict, results: Path) -> str:
    """How much was run: runs, rounds and the runs' own wall time, per experiment."""
    import json

    rows = []
    dirs = [results / n for n in ("dsweep", "zsweep", "noise", "local")] + illcond_dirs(cfg, results)
    for d in dirs:
        idx = read_index(d)
        n = rounds = 0
        wall = 0.0
        for e in idx["runs"]:
            s = io.load_json(d / e["dir"] / "summary.json")
            n += 1
            rounds += int(s["rounds"])
            wall += float(s["wall_seconds"])
        rows.append([d.name, n, rounds, f"{wall:.0f}"])
    return markdown(["experiment", "runs", "rounds", "run wall time (s, sum)"], rows)


def build(cfg: dict, results: Path, md: Path, csv_path: Path, figdir: Path,
          tier: str | None = None) -> list[Check]:
    res = analyse_all(cfg, results)
    checks = [c for key in ("dsweep", "zsweep", "illcond", "noise", "local", "spectrum")
              for c in res[key]["checks"]]
    common = cfg["common"]
    target = float(common["target"])
    ic = cfg["illcond"]
    # figures
    figures.dsweep(res["dsweep"], target, figdir / "theory_dsweep.png")
    figures.zsweep(res["zsweep"], target, figdir / "theory_zeta.png")
    conv_cases = [c for c in (ic["speedup_case"], ic["speedup_rotated_case"],
                              *[n for n, s in ic["cases"].items() if s.get("family") == "illustration"])]
    figures.convergence(res["illcond"], conv_cases, figdir / "theory_convergence.png")
    figures.learned_zeta(res["illcond"], ic["speedup_case"], figdir / "theory_learned_zeta.png")
    figures.noise(res["noise"], figdir / "theory_noise.png")
    illus = [(n, illcond.task_for(s, ic)) for n, s in ic["cases"].items()
             if s.get("family") == "illustration"]
    figures.spectrum(res["spectrum"], cfg["spectrum"], figdir / "theory_spectrum.png",
                     illus[0] if illus else None)
    figures.local(res["local"], figdir / "theory_local.png")
    # tables
    n_pass = sum(c.verdict == "PASS" for c in checks)
    n_fail = sum(c.verdict == "FAIL" for c in checks)
    text = [
        "# Theory checks (issue #3): HiSo's claims as experiments with verdicts",
        "",
        "Generated by `hiso theory report` from the run directories under `results/theory/` "
        "(`snakemake reproduce-all`); do not edit. Configuration: `configs/theory.yaml`; designs, "
        "step sizes and statistics are documented in `hiso/experiments/`.",
        "",
        f"Rounds to target = first evaluated round with f - f* <= {target:g} (f(x0) - f*), median over "
        f"seeds {common['seeds']}; runs that hit their round cap or diverge count as censored "
        f"(> cap). Intervals: 95% percentile bootstrap over seeds ({common['n_boot']} resamples). "
        f"Verdicts compare the point estimate with the issue's threshold; INFO rows have no "
        f"threshold in the issue. A FAIL is a result, reported with its evidence.",
        "",
        f"**{n_pass} PASS, {n_fail} FAIL, {len(checks) - n_pass - n_fail} INFO.**",
        "",
        checks_markdown(checks),
        "",
        "## Ill-conditioned quadratics (d = 200): every case and method",
        "",
        f"Steps selected on seeds {ic['tune_seeds']} (median rounds over them, factor-2 grid "
        f"around the theory step), reported on seeds {common['seeds']}. Learned-H variants other "
        f"than nu = {ic['learned']['tune_nu']:g} use its step.",
        "",
        illcond_markdown(res["illcond"]),
        "",
        "## What was run",
        "",
        run_totals(cfg, results),
        "",
        "Figures: " + ", ".join(f"`figures/{f}`" for f in FIGURES) + ".",
        "",
    ]
    title = "Theory checks: HiSo's claims as experiments with verdicts"
    tex = TexDoc(title)
    tex.table(f"{title} ({n_pass} PASS, {n_fail} FAIL, {len(checks) - n_pass - n_fail} INFO)",
              CHECKS_HEADER, checks_rows(checks))
    tex.table("Ill-conditioned quadratics (d = 200): every case and method", ILLCOND_HEADER,
              illcond_rows(res["illcond"]))
    finish(text, tex, tier, md, csv_path, checks_csv(checks))
    return checks


BLOCKS_HEADER = ["design", "method", "d", "median rounds", "rounds per seed", "step (k)",
                 "Spearman(h_b, a_b)", "zeta ratio"]


def blocks_rows(res: dict) -> list[list[str]]:
    """The engine experiment's run groups, one row per (design, method, d)."""
    rows = []
    for (design, method), by_d in sorted(res["rep"].items()):
        for d, e in sorted(by_d.items()):
            per = ", ".join(fmt(v) if math.isfinite(v) else f">{e['cap']}" for v in e["rounds"])
            rows.append([design, method, d, blocks.rounds_text(e), per, f"{fmt(e['lr'])} ({e['k']})",
                         fmt(median(e["spearman"])) if e["spearman"] else "-",
                         fmt(median(e["zeta_ratio"])) if e["zeta_ratio"] else "-"])
    return rows


def blocks_markdown(res: dict) -> str:
    return markdown(BLOCKS_HEADER, blocks_rows(res))


def write_blocks_table(cfg: dict, common: dict, out: Path | None, checks_cfg: dict, md: Path,
                       csv_path: Path, figure: Path | None, scale: tuple[dict, Path] | None = None,
                       compare: list[tuple[str, Path, str]] = (), tier: str | None = None) -> list:
    """Issue #15's table: every PASS/FAIL row of the block experiment in the engine (``out``),
    of its reduced simulation at large d (``scale``: its config section and directory) and of
    the real-task comparisons (``compare``: (task, metrics.csv, baseline variant); hiso_block
    against the baseline, every variant in the table), then each part's own rows; .md, .csv and
    .tex (tables.finish)."""
    import pandas as pd

    from ..experiments import blocks_scale
    from . import block_compare

    checks, parts = [], []
    title = "hiso_block (issue #15): block quadratics and real tasks, with verdicts"
    tex = TexDoc(title)
    if out is not None:
        res = blocks.analyse(cfg, common, out, checks_cfg)
        checks += res["checks"]
        if figure is not None:
            figures.blocks(res, figure)
        parts += [f"## Block quadratics in the engine (`{out}`, design in `hiso/experiments/blocks.py`)",
                  "", blocks_markdown(res), ""]
        tex.table("Block quadratics in the engine: every run group", BLOCKS_HEADER, blocks_rows(res))
    if scale is not None:
        scfg, sdir = scale
        sres = blocks_scale.analyse(scfg, common, sdir, checks_cfg)
        checks += sres["checks"]
        header, rows = blocks_scale.markdown_rows(sres, float(scfg["eps"]))
        parts += [f"## Block quadratics at large d: exact reduced simulation (`{sdir}`, "
                  "`hiso/experiments/blocks_scale.py`)", "", markdown(header, rows), ""]
        tex.table("Block quadratics, reduced simulation: every (design, method, d)", header, rows)
        if figure is not None and out is None:
            figures.blocks_scale(sres, figure)
    for task, path, baseline in compare:
        df = pd.read_csv(path)
        cres = block_compare.compare(df, task, "hiso_block", baseline, sorted(set(df["name"])),
                                     checks_cfg.get("hiso_block", {}))
        checks += cres["checks"]
        parts += [f"## {task}: every variant (report seeds; mean [95% t interval]; `{path}`)", "",
                  markdown(cres["header"], cres["rows"]), ""]
        tex.table(f"{task}: hiso_block against the other scalar-only methods", cres["header"], cres["rows"])
    n_pass = sum(c.verdict == "PASS" for c in checks)
    n_fail = sum(c.verdict == "FAIL" for c in checks)
    tex.parts.insert(0, latex(CHECKS_HEADER, checks_rows(checks), f"{title} ({n_pass} PASS, {n_fail} FAIL)"))
    text = [f"# {title}", "",
            "Generated by `hiso theory block-report` (configuration `configs/theory.yaml`, sections "
            "`blocks`, `blocks_scale`, `checks.blocks`, `checks.hiso_block`).", "",
            f"{n_pass} PASS, {n_fail} FAIL, {len(checks) - n_pass - n_fail} INFO.", "",
            checks_markdown(checks), "", *parts]
    finish(text, tex, tier, md, csv_path, checks_csv(checks))
    return checks
