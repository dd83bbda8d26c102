# Large federations (issue #14; not in reproduce-all): `snakemake large_federation --cores 2`.
# Cells (task, M clients, participation m/M, Dirichlet alpha, straggler probability q) from
# configs/pipeline.yaml `large_federation.grids[grid]` (`medium` by default; `--config
# lf_grid=study` for the full grid). Per cell and method:
#   grid:    the method's lrs on the selection seeds        results/large_federation/grid/...
#   select:  lr on the dev split (`hiso select`)
#   report:  the report seeds at the selected lr
# then one report over every cell: accuracy vs rounds and vs bytes, rounds to the task's target
# accuracy, the lr selection table, and the catch-up cost (`hiso catchup`) of one HiSo run.
import itertools

LF = config["large_federation"]
LF_RES = LF.get("results", "results/large_federation")
LF_GRID_NAME = config.get("lf_grid", LF.get("grid", "medium"))
LF_GRID = LF["grids"][LF_GRID_NAME]


def lf_cells():
    """{cell name: (task, --set overrides)} of the grid."""
    out = {}
    for block in LF_GRID["cells"]:
        task = block["task"]
        for M, p, a, q in itertools.product(block["clients"], block["participation"],
                                            block["alpha"], block["dropout"]):
            m = max(1, round(p * M))
            name = f"{task}-M{M}-p{p * 100:g}-a{a:g}-q{q:g}"
            out[name] = (task, [f"federation.clients={M}", f"federation.sampled={m}",
                                f"task.alpha={a}", f"federation.dropout={q}",
                                f"federation.rounds={LF_GRID['rounds'][task]}"])
    return out


LF_CELLS = lf_cells()
LF_METHODS = list(LF["methods"])


def lf_lrs(cell, method):
    return [f"{float(lr):g}" for lr in LF_GRID["lrs"][LF_CELLS[cell][0]][method]]


def lf_sets(cell, method):
    return sets(LF_CELLS[cell][1] + LF["methods"][method]["set"])


def lf_config(cell):
    return LF["tasks"][LF_CELLS[cell][0]]["config"]


LF_REPORT = [f"{LF_RES}/report/{c}/{m}/seed{s}/summary.json"
             for c in LF_CELLS for m in LF_METHODS for s in LF_GRID["report_seeds"]]
LF_SELECTED = [f"{LF_RES}/selected/{c}/{m}.json" for c in LF_CELLS for m in LF_METHODS]
# the catch-up measurement: HiSo's first report run in the grid's first cell of the last task
LF_CATCHUP_RUN = next(f"{LF_RES}/report/{c}/hiso/seed{LF_GRID['report_seeds'][0]}"
                      for c in reversed(list(LF_CELLS)))

wildcard_constraints:
    lf_cell="[A-Za-z0-9_.+-]+",
    lf_method="[A-Za-z0-9_]+",
    lf_lr="[0-9.e+-]+",


rule lf_grid:
    output:
        expand(LF_RES + "/grid/{{lf_cell}}/{{lf_method}}/lr{{lf_lr}}/seed{seed}/summary.json",
               seed=LF_GRID["selection_seeds"]),
    params:
        config=lambda w: lf_config(w.lf_cell),
        sets=lambda w: lf_sets(w.lf_cell, w.lf_method),
        out=lambda w: shlex.quote(f"{LF_RES}/grid/{w.lf_cell}/{w.lf_method}/lr{w.lf_lr}/seed{{seed}}"),
        seeds=" ".join(map(str, LF_GRID["selection_seeds"])),
    benchmark:
        "results/benchmarks/lf_grid/{lf_cell}_{lf_method}_lr{lf_lr}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=120,
    shell:
        "{HISO} digits run {params.config} --name {wildcards.lf_method} --lr {wildcards.lf_lr} "
        "--seeds {params.seeds} --out {params.out} {params.sets} --failed-ok"


rule lf_select:
    input:
        lambda w: expand(LF_RES + "/grid/{c}/{m}/lr{lr}/seed{seed}/summary.json", c=w.lf_cell,
                         m=w.lf_method, lr=lf_lrs(w.lf_cell, w.lf_method), seed=LF_GRID["selection_seeds"]),
    output:
        LF_RES + "/selected/{lf_cell}/{lf_method}.json",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output}"


rule lf_report_runs:
    input:
        LF_RES + "/selected/{lf_cell}/{lf_method}.json",
    output:
        expand(LF_RES + "/report/{{lf_cell}}/{{lf_method}}/seed{seed}/summary.json", seed=LF_GRID["report_seeds"]),
    params:
        config=lambda w: lf_config(w.lf_cell),
        sets=lambda w: lf_sets(w.lf_cell, w.lf_method),
        out=lambda w: shlex.quote(f"{LF_RES}/report/{w.lf_cell}/{w.lf_method}/seed{{seed}}"),
        seeds=" ".join(map(str, LF_GRID["report_seeds"])),
    benchmark:
        "results/benchmarks/lf_report_runs/{lf_cell}_{lf_method}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=240,
    shell:
        "{HISO} digits run {params.config} --name {wildcards.lf_method} --lr-from {input} "
        "--seeds {params.seeds} --out {params.out} {params.sets} --failed-ok"


rule lf_catchup:
    input:
        LF_CATCHUP_RUN + "/summary.json",
    output:
        LF_RES + "/catchup.csv",
    params:
        ks=" ".join(map(str, LF["catchup_rounds_away"])),
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} catchup {LF_CATCHUP_RUN} --rounds-away {params.ks} --out {output}"


rule large_federation:
    """Every large-federation figure and table of the chosen grid."""
    input:
        runs=LF_REPORT,
        selected=LF_SELECTED,
        catchup=LF_RES + "/catchup.csv",
    output:
        figures=[f"figures/large_federation_{k}.{e}" for k in ("rounds", "bytes", "catchup") for e in ("png", "pdf")],
        tables=[f"paper_tables/large_federation{k}.{e}" for k in ("", "_catchup", "_lr_selection")
                for e in ("md", "csv", "tex")],
    params:
        reach=" ".join(f"{t}={spec['reach']}" for t, spec in LF["tasks"].items()),
    benchmark:
        "results/benchmarks/large_federation_report.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} largefed report {input.runs} --catchup {input.catchup} --reach {params.reach} "
        "--grid {LF_GRID_NAME} --figures figures/large_federation --tables paper_tables/large_federation "
        "--tier {TIER} && "
        "{HISO} table selection {input.selected} --out paper_tables/large_federation_lr_selection.md "
        "--csv paper_tables/large_federation_lr_selection.csv "
        "--title 'Large federations: learning-rate selection on the dev split' --tier {TIER}"
