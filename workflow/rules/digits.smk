# The real-data check (issue #5, the paper's Fig. 5 on CPU): a small CNN on handwritten digits over
# 64 Dirichlet(1) clients. HiSo (nu in {0.9, 0.95, 0.99}) vs DeComFL vs FedAvg (first order).
#   grid:    every variant with `lrs` x lr on the selection seeds   results/digits/grid/...
#   select:  lr per variant on the dev split (code reading the grid runs); a best lr at a grid
#            edge grows the grid beyond it (rounds in results/digits/select/, common.smk)
#   report:  every variant at its selected lr (or its `lr_from` variant's) on the report seeds
#            (disjoint from the selection seeds)
#   outputs: figures/digits_*.png, paper_tables/digits_*.md/.csv
#   checks:  `snakemake digits_checks`: dev-only side checks (not in reproduce-all)
# Several seeds run in one process (`hiso digits run`), each in its own normal run directory.
DG = config["digits"]
DG_RES = DG.get("results", "results/digits")
DG_PREFIX = DG.get("prefix", "digits")
DG_VARIANTS = DG["variants"]
DG_CHECKS = DG.get("checks", {})  # dev-only side checks: grid + selection, no report runs
DG_ALL = {**DG_VARIANTS, **DG_CHECKS}
# a variant either has its own lr grid (`lrs`) or runs at another variant's selected lr
# (`lr_from`, the nu ablation: only nu changes)
DG_GRID = {v: [f"{float(lr):g}" for lr in spec["lrs"]] for v, spec in DG_ALL.items() if "lrs" in spec}
DG_LR_FROM = {v: spec.get("lr_from", v) for v, spec in DG_ALL.items()}
DG_HISO = [v for v, spec in DG_VARIANTS.items() if "method.name=hiso" in spec["set"]]

wildcard_constraints:
    dg_variant="[A-Za-z0-9_.]+",
    dg_lr="[0-9.e+-]+",


def dg_seeds(seeds):
    return " ".join(str(s) for s in seeds)


rule digits_grid:
    output:
        expand(DG_RES + "/grid/{{dg_variant}}/lr{{dg_lr}}/seed{seed}/summary.json", seed=DG["selection_seeds"]),
    params:
        sets=lambda w: sets(DG_ALL[w.dg_variant]["set"]),
        out=lambda w: shlex.quote(f"{DG_RES}/grid/{w.dg_variant}/lr{w.dg_lr}/seed{{seed}}"),
        seeds=dg_seeds(DG["selection_seeds"]),
    benchmark:
        "results/benchmarks/digits_grid/{dg_variant}_lr{dg_lr}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=60,
    shell:
        "{HISO} digits run {DG[config]} --name {wildcards.dg_variant} --lr {wildcards.dg_lr} "
        "--seeds {params.seeds} --out {params.out} {params.sets} --failed-ok"


def dg_grid_runs(w, rounds=None):
    """A variant's grid runs after ``rounds`` selection rounds (None: all; workflow/rules/common.smk)."""
    lrs = grid_lrs(checkpoints.digits_select_round, DG_GRID[w.dg_variant], rounds, dg_variant=w.dg_variant)
    return expand(DG_RES + "/grid/{v}/lr{lr}/seed{seed}/summary.json", v=w.dg_variant, lr=lrs,
                  seed=DG["selection_seeds"])


def dg_select_args(w):
    return select_args(DG_GRID[w.dg_variant], DG.get("select_last", 3), DG.get("max_extensions", 2))


checkpoint digits_select_round:
    """One selection round on the dev split; its `extend` asks for one more lr beyond an edge."""
    input:
        lambda w: dg_grid_runs(w, int(w.sel_round)),
    output:
        DG_RES + "/select/{dg_variant}/round{sel_round}.json",
    params:
        args=dg_select_args,
    benchmark:
        "results/benchmarks/digits_select/{dg_variant}_round{sel_round}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule digits_select:
    """The selection over the grid as grown by its rounds."""
    input:
        dg_grid_runs,
    output:
        DG_RES + "/selected/{dg_variant}.json",
    params:
        args=dg_select_args,
    benchmark:
        "results/benchmarks/digits_select/{dg_variant}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule digits_report_runs:
    input:
        lambda w: f"{DG_RES}/selected/{DG_LR_FROM[w.dg_variant]}.json",
    output:
        expand(DG_RES + "/report/{{dg_variant}}/seed{seed}/summary.json", seed=DG["report_seeds"]),
    params:
        sets=lambda w: sets(DG_VARIANTS[w.dg_variant]["set"]),
        out=lambda w: shlex.quote(f"{DG_RES}/report/{w.dg_variant}/seed{{seed}}"),
        seeds=dg_seeds(DG["report_seeds"]),
        lr_variant=lambda w: DG_LR_FROM[w.dg_variant],
    benchmark:
        "results/benchmarks/digits_report_runs/{dg_variant}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=120,
    shell:
        "{HISO} digits run {DG[config]} --name {wildcards.dg_variant} --lr-from {input} "
        "--lr-variant {params.lr_variant} --seeds {params.seeds} --out {params.out} {params.sets} --failed-ok"


rule digits_aggregate:
    input:
        expand(DG_RES + "/report/{v}/seed{seed}/summary.json", v=list(DG_VARIANTS), seed=DG["report_seeds"]),
    output:
        DG_RES + "/metrics.csv",
    benchmark:
        "results/benchmarks/digits_aggregate.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule digits_report:
    input:
        metrics=DG_RES + "/metrics.csv",
        selected=expand(DG_RES + "/selected/{v}.json", v=[v for v in DG_VARIANTS if v in DG_GRID]),
        hiso=expand(DG_RES + "/report/{v}/seed{seed}/summary.json", v=DG_HISO, seed=DG["report_seeds"]),
    output:
        curves=in_report(f"figures/{DG_PREFIX}_accuracy.png", "Real data", "digits_figure", "figure"),
        ablation=in_report(f"figures/{DG_PREFIX}_nu_ablation.png", "Real data", "digits_figure", "figure"),
        hessian=in_report(f"figures/{DG_PREFIX}_hessian.png", "Real data", "digits_figure", "figure"),
        pdfs=[f"figures/{DG_PREFIX}_{f}.pdf" for f in ("accuracy", "nu_ablation", "hessian")],
        md=f"paper_tables/{DG_PREFIX}_speedup.md",
        csv=in_report(f"paper_tables/{DG_PREFIX}_speedup.csv", "Real data", "digits_table", "table"),
        tex=f"paper_tables/{DG_PREFIX}_speedup.tex",
        sel_md=f"paper_tables/{DG_PREFIX}_lr_selection.md",
        sel_csv=in_report(f"paper_tables/{DG_PREFIX}_lr_selection.csv", "Real data", "digits_table", "table"),
        sel_tex=f"paper_tables/{DG_PREFIX}_lr_selection.tex",
    params:
        curves=" ".join(DG["figure_curves"]),
        ablation=" ".join(DG["figure_ablation"]),
    benchmark:
        "results/benchmarks/digits_report.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} digits figure curves {input.metrics} --names {params.curves} --out {output.curves} && "
        "{HISO} digits figure ablation {input.metrics} --names {params.ablation} --out {output.ablation} && "
        "{HISO} digits figure hessian {input.hiso} --out {output.hessian} && "
        "{HISO} digits table speedup {input.metrics} --baseline {DG[baseline]} --out {output.md} --csv {output.csv} --tier {TIER} && "
        "{HISO} table selection {input.selected} --out {output.sel_md} --csv {output.sel_csv} --title 'Digits: learning-rate selection on the dev split' --tier {TIER}"


rule digits_checks:
    """Side checks on the dev split (selection seeds only; not part of reproduce-all): a finer
    DeComFL lr grid, the other nu convention, a larger eps. `snakemake digits_checks --cores 2`."""
    input:
        expand(DG_RES + "/selected/{v}.json", v=DG.get("checks_table", list(DG_CHECKS))),
    output:
        md=f"paper_tables/{DG_PREFIX}_checks.md",
        csv=f"paper_tables/{DG_PREFIX}_checks.csv",
        tex=f"paper_tables/{DG_PREFIX}_checks.tex",
    benchmark:
        "results/benchmarks/digits_checks.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} table selection {input} --out {output.md} --csv {output.csv} "
        "--title 'Digits: side checks on the dev split (why is HiSo faster?)' --tier {TIER}"


rule digits_all:
    """Every digits figure and table (the check alone: `snakemake digits_all --cores 2`)."""
    input:
        rules.digits_report.output,


ALL_OUTPUTS += publish(rules.digits_report)
