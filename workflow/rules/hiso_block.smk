# issue #15: hiso_block against HiSo, hiso_scalar and DeComFL (configs/pipeline.yaml `hiso_block`).
#   quadratics: the block experiment in the engine (theory.smk, `theory_blocks`) and its reduced
#               simulation at d up to 1e5 (`hiso theory run blocks_scale`, hiso/experiments/blocks_scale.py)
#   digits:     the digits check's machinery (grid on the selection seeds, `hiso select` on the
#               dev split, report seeds at the selected lr) on a shorter budget
#   outputs:    paper_tables/hiso_block_digits.md/.csv/.tex, figures/hiso_block_digits.png,
#               paper_tables/theory_blocks.md/.csv/.tex (every PASS/FAIL row)
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


rule hiso_block_report:
    """Issue #15's verdict table (every PASS/FAIL row: reduced block quadratics up to d = 1e5,
    digits per round and per forward pass) and figures."""
    input:
        cfg=TH_CFG,
        scale=TH_RES + "/blocks_scale",
        digits=HBD_RES + "/metrics.csv",
    output:
        md="paper_tables/hiso_block.md",
        csv="paper_tables/hiso_block.csv",
        tex="paper_tables/hiso_block.tex",
        scale_fig="figures/hiso_block_scale.png",
        scale_pdf="figures/hiso_block_scale.pdf",
        digits_fig="figures/hiso_block_digits.png",
        digits_pdf="figures/hiso_block_digits.pdf",
    params:
        names=" ".join(HBD["variants"]),
    benchmark:
        "results/benchmarks/hiso_block_report.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} theory block-report --config {input.cfg} --scale {input.scale} "
        "--compare digits {input.digits} {HBD[baseline]} --md {output.md} --csv {output.csv} "
        "--figure {output.scale_fig} --tier {TIER} && "
        "{HISO} digits figure curves {input.digits} --names {params.names} --out {output.digits_fig}"


rule hiso_block_all:
    """Issue #15: `snakemake hiso_block_all --cores 2` (the engine's block experiment, ~90 min,
    has its own target: `snakemake theory_blocks`)."""
    input:
        rules.hiso_block_report.output,
