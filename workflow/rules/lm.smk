# Language-model fine-tuning (issue #4). Settings: configs/pipeline.yaml, section `lm`.
#
#   CPU tier (always): a tiny random OPT built locally (no hub) learns the synthetic task;
#     HiSo and DeComFL at lrs selected on the dev split (grid on the selection seeds, `hiso
#     select`; a selection at a grid edge grows the grid, workflow/rules/common.smk), FedZO and
#     FedAvg at fixed lrs -> figures/lm_smoke_convergence.png,
#     paper_tables/lm_smoke.md/.csv, paper_tables/lm_smoke_lr_selection.md/.csv
#   Paper grid (`--config tier=paper`, GPUs + hub or a populated HF_HOME): OPT-125M..2.7B x
#     {SST-2, QQP, SQuAD} x {HiSo, DeComFL, MeZO, FedZO, FedAvg, FedAdam}, DeComFL's SuperGLUE
#     tasks on OPT-125M/1.3B, and the reviewers' newer small models, at the authors' settings;
#     every method's lr selected on the dev split as in the CPU tier; one figure and two tables
#     per (model, task): figures/lm_{model}_{task}.png, paper_tables/lm_{model}_{task}.md/.csv
#     (the published values of reference/paper_values.csv beside ours) and
#     paper_tables/lm_{model}_{task}_lr_selection.md/.csv
#     `snakemake reproduce-all --config tier=paper -n` lists every job offline: building the DAG
#     reads only configs, never the hub.
import json
import re

import yaml

LM = config["lm"]
LM_SMOKE = LM["smoke"]
LM_PAPER = LM["paper"]
PAPER_VALUES = "reference/paper_values.csv"  # the published numbers, printed beside ours
LM_TINY = f"{shlex.quote(sys.executable)} -m hiso.models tiny"

wildcard_constraints:
    lm_variant="[A-Za-z0-9_.-]+",
    # only the configured keys: "lm_smoke_lr_selection.md" is no (model, task) pair
    lm_model="|".join(re.escape(m) for m in LM_PAPER["models"]),
    lm_task="|".join(re.escape(t) for t in LM_PAPER["tasks"]),
    lm_seed="[0-9]+",
    lm_lr="[0-9.e+-]+",


def lm_method_sets(spec):
    """--set flags: the whole method mapping (JSON is YAML flow style), then extra overrides."""
    return sets([f"method={json.dumps(spec['method'], sort_keys=True)}", *spec.get("set", [])])


# -- CPU tier ---------------------------------------------------------------------------------
LM_SMOKE_DIR = LM_SMOKE["model_dir"]
LM_SMOKE_RUNS = [f"results/lm_smoke/{v}/seed{s}/summary.json"
                 for v, spec in LM_SMOKE["runs"].items() for s in spec["seeds"]]
# variants whose lr is selected on the dev split (the others run at their config's lr)
LM_SMOKE_GRID = {v: [f"{float(lr):g}" for lr in spec["lrs"]]
                 for v, spec in LM_SMOKE["runs"].items() if "lrs" in spec}


def lm_smoke_selected(variant):
    return [f"results/lm_smoke/selected/{variant}.json"] if variant in LM_SMOKE_GRID else []


rule lm_smoke_model:
    """The tiny random OPT + word-level tokenizer (the hub's stand-in on the CPU tier)."""
    output:
        f"{LM_SMOKE_DIR}/config.json",
    params:
        out=LM_SMOKE_DIR,
        args=" ".join(f"--{k.replace('_', '-')} {v}" for k, v in LM_SMOKE["tiny"].items()),
    benchmark:
        "results/benchmarks/lm_smoke_model.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{LM_TINY} --out {params.out} --task synthetic {params.args}"


rule lm_smoke_grid:
    """One lr of a variant's grid on one selection seed (all runs of a variant share its name)."""
    input:
        f"{LM_SMOKE_DIR}/config.json",
    output:
        "results/lm_smoke/grid/{lm_variant}/lr{lm_lr}/seed{lm_seed}/summary.json",
    params:
        sets=lambda w: lm_method_sets(LM_SMOKE["runs"][w.lm_variant])
        + " " + sets([f"method.lr={w.lm_lr}", f"seed={w.lm_seed}", f"name=lm-smoke-{w.lm_variant}",
                      f"task.model={LM_SMOKE_DIR}"]),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        "results/benchmarks/lm_smoke_grid/{lm_variant}_lr{lm_lr}_seed{lm_seed}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=30,
    shell:
        "{HISO} run {LM_SMOKE[config]} --out {params.out} {params.sets} --no-progress --failed-ok"


def lm_smoke_grid_runs(w, rounds=None):
    """A variant's grid runs after ``rounds`` selection rounds (None: all; workflow/rules/common.smk)."""
    lrs = grid_lrs(checkpoints.lm_smoke_select_round, LM_SMOKE_GRID[w.lm_variant], rounds,
                   lm_variant=w.lm_variant)
    return expand("results/lm_smoke/grid/{v}/lr{lr}/seed{s}/summary.json", v=w.lm_variant, lr=lrs,
                  s=LM_SMOKE["selection_seeds"])


def lm_smoke_select_args(w):
    return select_args(LM_SMOKE_GRID[w.lm_variant], LM_SMOKE["select_last"],
                       LM_SMOKE.get("max_extensions", 2))


checkpoint lm_smoke_select_round:
    """One selection round on the dev split; its `extend` asks for one more lr beyond an edge."""
    input:
        lambda w: lm_smoke_grid_runs(w, int(w.sel_round)),
    output:
        "results/lm_smoke/select/{lm_variant}/round{sel_round}.json",
    params:
        args=lm_smoke_select_args,
    benchmark:
        "results/benchmarks/lm_smoke_select/{lm_variant}_round{sel_round}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule lm_smoke_select:
    """The selection over the grid as grown by its rounds."""
    input:
        lm_smoke_grid_runs,
    output:
        "results/lm_smoke/selected/{lm_variant}.json",
    params:
        args=lm_smoke_select_args,
    benchmark:
        "results/benchmarks/lm_smoke_select/{lm_variant}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule lm_smoke_run:
    input:
        model=f"{LM_SMOKE_DIR}/config.json",
        selected=lambda w: lm_smoke_selected(w.lm_variant),
    output:
        "results/lm_smoke/{lm_variant}/seed{lm_seed}/summary.json",
    params:
        sets=lambda w: lm_method_sets(LM_SMOKE["runs"][w.lm_variant])
        + " " + sets([f"seed={w.lm_seed}", f"name=lm-smoke-{w.lm_variant}-seed{w.lm_seed}",
                      f"task.model={LM_SMOKE_DIR}"]),
        lr_from=lambda w: " ".join(f"--lr-from {shlex.quote(p)}" for p in lm_smoke_selected(w.lm_variant)),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        "results/benchmarks/lm_smoke_run/{lm_variant}_seed{lm_seed}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=30,
    shell:
        "{HISO} run {LM_SMOKE[config]} --out {params.out} {params.sets} {params.lr_from} --no-progress --failed-ok"


rule lm_smoke_aggregate:
    input:
        LM_SMOKE_RUNS,
    output:
        "results/lm_smoke/metrics.csv",
    benchmark:
        "results/benchmarks/lm_smoke_aggregate.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule lm_smoke_report:
    input:
        metrics="results/lm_smoke/metrics.csv",
        selected=[f"results/lm_smoke/selected/{v}.json" for v in LM_SMOKE_GRID],
    output:
        fig=in_report("figures/lm_smoke_convergence.png", "LM", "lm_smoke_figure", "figure", "smoke tier"),
        fig_pdf="figures/lm_smoke_convergence.pdf",
        md="paper_tables/lm_smoke.md",
        csv=in_report("paper_tables/lm_smoke.csv", "LM", "lm_smoke_table", "table", "smoke tier"),
        tex="paper_tables/lm_smoke.tex",
        sel_md="paper_tables/lm_smoke_lr_selection.md",
        sel_csv=in_report("paper_tables/lm_smoke_lr_selection.csv", "LM", "lm_smoke_table", "table", "smoke tier"),
        sel_tex="paper_tables/lm_smoke_lr_selection.tex",
    params:
        title="LM smoke tier: tiny random OPT on the synthetic task (CPU); "
        + ", ".join(LM_SMOKE_GRID) + " at lrs selected on the dev split (lm_smoke_lr_selection.md), "
        + ", ".join(v for v in LM_SMOKE["runs"] if v not in LM_SMOKE_GRID) + " at fixed lrs",
        sel_title="LM smoke tier: learning-rate selection on the dev split",
    benchmark:
        "results/benchmarks/lm_smoke_report.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} figure convergence {input.metrics} --out {output.fig} && "
        "{HISO} table convergence {input.metrics} --out {output.md} --csv {output.csv} "
        "--title {params.title:q} --reach {LM_SMOKE[reach]} --reference {LM_SMOKE[reference]} --tier {TIER} && "
        "{HISO} table selection {input.selected} --out {output.sel_md} --csv {output.sel_csv} "
        "--title {params.sel_title:q} --tier {TIER}"


ALL_OUTPUTS += publish(rules.lm_smoke_report)


# -- paper grid -------------------------------------------------------------------------------
# Per (model, task, method) of the grids: the method's lr grid on the selection seeds, `hiso
# select` on the dev split, the report seeds at the selected lr; per (model, task): a figure, a
# table with the published values beside ours, and the selection table.
LM_PAPER_RES = LM_PAPER["results"]
LM_PAPER_COST = LM_PAPER["cost"]
with open(LM_PAPER["config"]) as _fh:
    LM_PAPER_BASE = yaml.safe_load(_fh)
# Per-job resources for a cluster (profiles/slurm): the GPU memory from the model's parameter
# count and the forward dtype, the time limit from `hiso plan`'s estimate (twice it, plus half an
# hour). Pure functions of the configs, no torch.
from hiso import plan as _plan

LM_GPU_THREADS = 4  # CPU threads per GPU job (data loading, tokenising); torch honours them


def lm_paper_cfg(w):
    spec = LM_PAPER["methods"][w.lm_variant]
    return _plan.resolve(LM_PAPER_BASE, [f"method={json.dumps(spec['method'])}", *spec.get("set", []),
                                         *LM_PAPER["tasks"][w.lm_task]])


def lm_gpu_mem_mb(w):
    cfg = lm_paper_cfg(w)
    return _plan.gpu_memory_mb(float(LM_PAPER_COST["params"][w.lm_model]),
                               cfg.get("runtime", {}).get("forward_dtype", "float32"),
                               cfg["method"]["name"])


def lm_runtime_min(w):
    seconds = _plan.gpu_seconds(lm_paper_cfg(w), float(LM_PAPER_COST["forward_seconds"][w.lm_model]))
    return int(2 * seconds / 60) + 30


LM_GPU_RESOURCES = {
    "gpu": 1,
    "gpu_mem_mb": lm_gpu_mem_mb,
    "mem_mb": lambda w: max(16000, 2 * lm_gpu_mem_mb(w)),  # host copy of the weights, loading
    "runtime": lm_runtime_min,
}


def lm_paper_triples():
    """(model, task, method) of every paper-grid cell, each once, in config order."""
    out = []
    for grid in LM_PAPER["grids"].values():
        for m in grid["models"]:
            for t in grid["tasks"]:
                for v in grid["methods"]:
                    if (m, t, v) not in out:
                        out.append((m, t, v))
    return out


LM_PAPER_TRIPLES = lm_paper_triples()
LM_PAPER_PAIRS = sorted({(m, t) for m, t, _ in LM_PAPER_TRIPLES})


def lm_paper_lrs(model, variant):
    """A method's lr grid for a model (``lrs``: a list, or per model key with a default)."""
    lrs = LM_PAPER["methods"][variant]["lrs"]
    if isinstance(lrs, dict):
        lrs = lrs.get(model, lrs["default"])
    return [f"{float(lr):g}" for lr in lrs]


def lm_paper_sets(w, *extra):
    """--set flags of a paper run: the method, its own overrides, the model and the task."""
    return (lm_method_sets(LM_PAPER["methods"][w.lm_variant]) + " "
            + sets([f"task.model={LM_PAPER['models'][w.lm_model]}", f"task.dataset={w.lm_task}",
                    *LM_PAPER["tasks"][w.lm_task], *extra]))


def lm_pair_runs(w):
    return [f"{LM_PAPER_RES}/{m}/{t}/report/{v}/seed{s}/summary.json"
            for m, t, v in LM_PAPER_TRIPLES if (m, t) == (w.lm_model, w.lm_task)
            for s in LM_PAPER["report_seeds"]]


def lm_pair_selections(w):
    return [f"{LM_PAPER_RES}/{m}/{t}/selected/{v}.json"
            for m, t, v in LM_PAPER_TRIPLES if (m, t) == (w.lm_model, w.lm_task)]


rule lm_paper_grid:
    """One lr of a method's grid on one selection seed (every run of a cell shares its name)."""
    output:
        LM_PAPER_RES + "/{lm_model}/{lm_task}/grid/{lm_variant}/lr{lm_lr}/seed{lm_seed}/summary.json",
    params:
        sets=lambda w: lm_paper_sets(w, f"method.lr={w.lm_lr}", f"seed={w.lm_seed}",
                                     f"name=lm-{w.lm_model}-{w.lm_task}-{w.lm_variant}"),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        LM_PAPER_RES + "/benchmarks/grid/{lm_model}_{lm_task}_{lm_variant}_lr{lm_lr}_seed{lm_seed}.tsv"
    threads: LM_GPU_THREADS
    resources:
        **LM_GPU_RESOURCES,
    shell:
        "{HISO} run {LM_PAPER[config]} --out {params.out} {params.sets} "
        "--set runtime.threads={threads} --no-progress --failed-ok"


def lm_paper_grid_runs(w, rounds=None):
    """A cell's grid runs after ``rounds`` selection rounds (None: all; workflow/rules/common.smk)."""
    lrs = grid_lrs(checkpoints.lm_paper_select_round, lm_paper_lrs(w.lm_model, w.lm_variant), rounds,
                   lm_model=w.lm_model, lm_task=w.lm_task, lm_variant=w.lm_variant)
    return expand(LM_PAPER_RES + "/{m}/{t}/grid/{v}/lr{lr}/seed{s}/summary.json", m=w.lm_model,
                  t=w.lm_task, v=w.lm_variant, lr=lrs, s=LM_PAPER["selection_seeds"])


def lm_paper_select_args(w):
    return select_args(lm_paper_lrs(w.lm_model, w.lm_variant), LM_PAPER["select_last"],
                       LM_PAPER.get("max_extensions", 2))


checkpoint lm_paper_select_round:
    """One selection round on the dev split; its `extend` asks for one more lr beyond an edge."""
    input:
        lambda w: lm_paper_grid_runs(w, int(w.sel_round)),
    output:
        LM_PAPER_RES + "/{lm_model}/{lm_task}/select/{lm_variant}/round{sel_round}.json",
    params:
        args=lm_paper_select_args,
    benchmark:
        LM_PAPER_RES + "/benchmarks/select/{lm_model}_{lm_task}_{lm_variant}_round{sel_round}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule lm_paper_select:
    """The selection over the grid as grown by its rounds."""
    input:
        lm_paper_grid_runs,
    output:
        LM_PAPER_RES + "/{lm_model}/{lm_task}/selected/{lm_variant}.json",
    params:
        args=lm_paper_select_args,
    benchmark:
        LM_PAPER_RES + "/benchmarks/select/{lm_model}_{lm_task}_{lm_variant}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule lm_paper_run:
    """A report seed at the lr selected on the dev split."""
    input:
        selected=LM_PAPER_RES + "/{lm_model}/{lm_task}/selected/{lm_variant}.json",
    output:
        LM_PAPER_RES + "/{lm_model}/{lm_task}/report/{lm_variant}/seed{lm_seed}/summary.json",
    params:
        sets=lambda w: lm_paper_sets(w, f"seed={w.lm_seed}",
                                     f"name=lm-{w.lm_model}-{w.lm_task}-{w.lm_variant}-seed{w.lm_seed}"),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        LM_PAPER_RES + "/benchmarks/report/{lm_model}_{lm_task}_{lm_variant}_seed{lm_seed}.tsv"
    threads: LM_GPU_THREADS
    resources:
        **LM_GPU_RESOURCES,
    shell:
        "{HISO} run {LM_PAPER[config]} --out {params.out} {params.sets} "
        "--lr-from {input.selected} --set runtime.threads={threads} --no-progress --failed-ok"


rule lm_paper_aggregate:
    input:
        lm_pair_runs,
    output:
        LM_PAPER_RES + "/{lm_model}/{lm_task}/metrics.csv",
    benchmark:
        LM_PAPER_RES + "/benchmarks/aggregate/{lm_model}_{lm_task}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule lm_paper_report:
    input:
        metrics=LM_PAPER_RES + "/{lm_model}/{lm_task}/metrics.csv",
        selected=lm_pair_selections,
        paper=PAPER_VALUES,
    output:
        fig=in_report("figures/lm_{lm_model}_{lm_task}.png", "LM", "lm_paper_figure", "figure", "{lm_model} {lm_task}"),
        fig_pdf="figures/lm_{lm_model}_{lm_task}.pdf",
        md="paper_tables/lm_{lm_model}_{lm_task}.md",
        csv=in_report("paper_tables/lm_{lm_model}_{lm_task}.csv", "LM", "lm_paper_table", "table", "{lm_model} {lm_task}"),
        tex="paper_tables/lm_{lm_model}_{lm_task}.tex",
        sel_md="paper_tables/lm_{lm_model}_{lm_task}_lr_selection.md",
        sel_csv=in_report("paper_tables/lm_{lm_model}_{lm_task}_lr_selection.csv", "LM", "lm_paper_table", "table", "{lm_model} {lm_task}"),
        sel_tex="paper_tables/lm_{lm_model}_{lm_task}_lr_selection.tex",
    params:
        title=lambda w: f"{LM_PAPER['models'][w.lm_model]} on {w.lm_task} (paper grid; every "
        "method at its lr selected on the dev split)",
        sel_title=lambda w: f"{LM_PAPER['models'][w.lm_model]} on {w.lm_task}: "
        "learning-rate selection on the dev split",
        reference=lambda w: (f"--reference {LM_PAPER['reference']}"
                             if (w.lm_model, w.lm_task, LM_PAPER["reference"]) in LM_PAPER_TRIPLES
                             else ""),
    benchmark:
        LM_PAPER_RES + "/benchmarks/report_tables/{lm_model}_{lm_task}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} figure convergence {input.metrics} --out {output.fig} && "
        "{HISO} table convergence {input.metrics} --out {output.md} --csv {output.csv} "
        "--title {params.title:q} {params.reference} --paper {input.paper} "
        "--paper-model {wildcards.lm_model} --paper-task {wildcards.lm_task} --tier {TIER} && "
        "{HISO} table selection {input.selected} --out {output.sel_md} --csv {output.sel_csv} "
        "--title {params.sel_title:q} --tier {TIER}"


rule lm_paper_all:
    """Every paper-grid figure and table (also part of reproduce-all with --config tier=paper)."""
    input:
        [f"paper_tables/lm_{m}_{t}{s}.{e}" for m, t in LM_PAPER_PAIRS for s in ("", "_lr_selection")
         for e in ("md", "csv", "tex")],
        [f"figures/lm_{m}_{t}.{e}" for m, t in LM_PAPER_PAIRS for e in ("png", "pdf")],


if TIER == "paper":
    ALL_OUTPUTS += [f for m, t in LM_PAPER_PAIRS
                    for f in publish(rules.lm_paper_report, lm_model=m, lm_task=t)]
