# issue #15: hiso_block against HiSo, hiso_scalar and DeComFL (configs/pipeline.yaml `hiso_block`).
#   quadratics: the block experiment in the engine (theory.smk, `theory_blocks`) and its reduced
#               simulation at d up to 1e5 (`hiso theory run blocks_scale`, hiso/experiments/blocks_scale.py)
#   digits:     the digits check's machinery (grid on the selection seeds, `hiso select` on the
#               dev split, report seeds at the selected lr) on a shorter budget
#   lm:         the same on the LM smoke task (lm.smoke's tiny OPT), `hiso run` per run
#   pretrained: hiso_block as an extra variant of the pretrained tier (its rules run it), against
#               that tier's HiSo and DeComFL: `snakemake hiso_block_pretrained` (own table and figure)
#   outputs:    paper_tables/hiso_block.md/.csv/.tex (every PASS/FAIL row and each part's rows),
#               figures/hiso_block_scale.png, figures/hiso_block_digits.png, figures/hiso_block_lm.png
# `snakemake hiso_block_all --cores 2`; not in reproduce-all (over the CPU tier's budget).
HB = config["hiso_block"]
HBD = HB["digits"]
HBD_RES = HBD["results"]
HBD_GRID = {v: [f"{float(lr):g}" for lr in spec["lrs"]] for v, spec in HBD["variants"].items()}

wildcard_constraints:
    hb_variant="[A-Za-z0-9_.]+",
    hb_lr="[0-9.e+-]+",


def hb_sets(variant):
    return sets(HBD["variants"][variant]["set"] + HBD.get("set", []))


rule hb_digits_grid:
    output:
        expand(HBD_RES + "/grid/{{hb_variant}}/lr{{hb_lr}}/seed{seed}/summary.json", seed=HBD["selection_seeds"]),
    params:
        sets=lambda w: hb_sets(w.hb_variant),
        out=lambda w: shlex.quote(f"{HBD_RES}/grid/{w.hb_variant}/lr{w.hb_lr}/seed{{seed}}"),
        seeds=" ".join(str(s) for s in HBD["selection_seeds"]),
    benchmark:
        "results/benchmarks/hb_digits_grid/{hb_variant}_lr{hb_lr}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=60,
    shell:
        "{HISO} digits run {HBD[config]} --name {wildcards.hb_variant} --lr {wildcards.hb_lr} "
        "--seeds {params.seeds} --out {params.out} {params.sets} --failed-ok"


rule hb_digits_select:
    input:
        lambda w: expand(HBD_RES + "/grid/{v}/lr{lr}/seed{seed}/summary.json", v=w.hb_variant,
                         lr=HBD_GRID[w.hb_variant], seed=HBD["selection_seeds"]),
    output:
        HBD_RES + "/selected/{hb_variant}.json",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output}"


rule hb_digits_report_runs:
    input:
        HBD_RES + "/selected/{hb_variant}.json",
    output:
        expand(HBD_RES + "/report/{{hb_variant}}/seed{seed}/summary.json", seed=HBD["report_seeds"]),
    params:
        sets=lambda w: hb_sets(w.hb_variant),
        out=lambda w: shlex.quote(f"{HBD_RES}/report/{w.hb_variant}/seed{{seed}}"),
        seeds=" ".join(str(s) for s in HBD["report_seeds"]),
    benchmark:
        "results/benchmarks/hb_digits_report_runs/{hb_variant}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=120,
    shell:
        "{HISO} digits run {HBD[config]} --name {wildcards.hb_variant} --lr-from {input} "
        "--lr-variant {wildcards.hb_variant} --seeds {params.seeds} --out {params.out} {params.sets} --failed-ok"


rule hb_digits_aggregate:
    input:
        expand(HBD_RES + "/report/{v}/seed{seed}/summary.json", v=list(HBD["variants"]), seed=HBD["report_seeds"]),
    output:
        HBD_RES + "/metrics.csv",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


# -- the LM smoke task (lm.smoke's tiny OPT; `hiso run`, one process per run) -----------------
HBL = HB["lm"]
HBL_RES = HBL["results"]
HBL_GRID = {v: [f"{float(lr):g}" for lr in spec["lrs"]] for v, spec in HBL["variants"].items()}


def hbl_sets(variant, *extra):
    """The variant's whole method mapping, the budget cuts, the model; the run's name is the
    variant (the comparison groups by it)."""
    return (lm_method_sets(HBL["variants"][variant]) + " "
            + sets([*HBL.get("set", []), f"task.model={HBL['model_dir']}", f"name={variant}", *extra]))


rule hb_lm_grid:
    input:
        f"{HBL['model_dir']}/config.json",
    output:
        HBL_RES + "/grid/{hb_variant}/lr{hb_lr}/seed{lm_seed}/summary.json",
    params:
        sets=lambda w: hbl_sets(w.hb_variant, f"method.lr={w.hb_lr}", f"seed={w.lm_seed}"),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        "results/benchmarks/hb_lm_grid/{hb_variant}_lr{hb_lr}_seed{lm_seed}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=30,
    shell:
        "{HISO} run {HBL[config]} --out {params.out} {params.sets} --no-progress --failed-ok"


rule hb_lm_select:
    input:
        lambda w: expand(HBL_RES + "/grid/{v}/lr{lr}/seed{s}/summary.json", v=w.hb_variant,
                         lr=HBL_GRID[w.hb_variant], s=HBL["selection_seeds"]),
    output:
        HBL_RES + "/selected/{hb_variant}.json",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} select {input} --out {output} --last {HBL[select_last]}"


rule hb_lm_run:
    input:
        model=f"{HBL['model_dir']}/config.json",
        selected=HBL_RES + "/selected/{hb_variant}.json",
    output:
        HBL_RES + "/report/{hb_variant}/seed{lm_seed}/summary.json",
    params:
        sets=lambda w: hbl_sets(w.hb_variant, f"seed={w.lm_seed}"),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        "results/benchmarks/hb_lm_run/{hb_variant}_seed{lm_seed}.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=30,
    shell:
        "{HISO} run {HBL[config]} --out {params.out} {params.sets} --lr-from {input.selected} "
        "--no-progress --failed-ok"


rule hb_lm_aggregate:
    input:
        expand(HBL_RES + "/report/{v}/seed{s}/summary.json", v=list(HBL["variants"]), s=HBL["report_seeds"]),
    output:
        HBL_RES + "/metrics.csv",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule hiso_block_report:
    """Issue #15's verdict table (every PASS/FAIL row: reduced block quadratics up to d = 1e5,
    digits per round and per forward pass) and figures."""
    input:
        cfg=TH_CFG,
        scale=TH_RES + "/blocks_scale",
        digits=HBD_RES + "/metrics.csv",
        lm=HBL_RES + "/metrics.csv",
    output:
        md="paper_tables/hiso_block.md",
        csv="paper_tables/hiso_block.csv",
        tex="paper_tables/hiso_block.tex",
        scale_fig="figures/hiso_block_scale.png",
        scale_pdf="figures/hiso_block_scale.pdf",
        digits_fig="figures/hiso_block_digits.png",
        digits_pdf="figures/hiso_block_digits.pdf",
        lm_fig="figures/hiso_block_lm.png",
        lm_pdf="figures/hiso_block_lm.pdf",
    params:
        names=" ".join(HBD["variants"]),
        lm_names=" ".join(HBL["variants"]),
    benchmark:
        "results/benchmarks/hiso_block_report.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} theory block-report --config {input.cfg} --scale {input.scale} "
        "--compare digits {input.digits} {HBD[baseline]} --compare lm_smoke {input.lm} {HBL[baseline]} "
        "--md {output.md} --csv {output.csv} --figure {output.scale_fig} --tier {TIER} && "
        "{HISO} digits figure curves {input.digits} --names {params.names} --out {output.digits_fig} && "
        "{HISO} digits figure curves {input.lm} --names {params.lm_names} --out {output.lm_fig} "
        "--title 'LM smoke task (tiny OPT), 6 clients, Dirichlet alpha = 1; lr selected on the dev "
        "split (legend); line: mean over seeds, band: min-max'"


rule hiso_block_all:
    """Issue #15: `snakemake hiso_block_all --cores 2` (the engine's block experiment, ~90 min,
    has its own target: `snakemake theory_blocks`)."""
    input:
        rules.hiso_block_report.output,



# -- the pretrained tier's SmolLM2-135M (pretrained.smk runs hiso_block as an extra variant) ------
HBP = HB["pretrained"]


rule hb_pretrained_aggregate:
    input:
        [f"{PT_RES}/{v}/seed{s}/summary.json" for v in HBP["variants"] for s in PT["report_seeds"]],
    output:
        HBP["results"] + "/metrics.csv",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule hiso_block_pretrained:
    """Issue #15 on a pretrained LM: hiso_block against HiSo and DeComFL on the pretrained tier's
    model and task, per round and per forward pass (`snakemake hiso_block_pretrained --cores 2`)."""
    input:
        cfg=TH_CFG,
        metrics=HBP["results"] + "/metrics.csv",
    output:
        md="paper_tables/hiso_block_pretrained.md",
        csv="paper_tables/hiso_block_pretrained.csv",
        tex="paper_tables/hiso_block_pretrained.tex",
        fig="figures/hiso_block_pretrained.png",
        pdf="figures/hiso_block_pretrained.pdf",
    params:
        names=" ".join(HBP["variants"]),
    benchmark:
        "results/benchmarks/hiso_block_pretrained.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} theory block-report --config {input.cfg} --compare pretrained {input.metrics} {HBP[baseline]} "
        "--md {output.md} --csv {output.csv} --tier pretrained && "
        "{HISO} digits figure curves {input.metrics} --names {params.names} --out {output.fig} "
        "--title 'Pretrained tier: SmolLM2-135M on the reviews task, 6 clients, Dirichlet alpha = 1; "
        "lr selected on the dev split (legend); line: mean over seeds, band: min-max'"
