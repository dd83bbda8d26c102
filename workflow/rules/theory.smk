# Theory checks (issue #3): HiSo's claims as experiments with numbers and PASS/FAIL verdicts.
#   experiments: one job each (illcond: one job per part), every run of the experiment in one
#                process through the engine, each run in a normal run directory;
#                results/theory/<experiment>/index.json lists them
#   report:      the verdict table and the figures, computed from those run directories
# Designs, step sizes and statistics: configs/theory.yaml and hiso/experiments/.
import json

import yaml

TH = config["theory"]
TH_CFG = TH["config"]
TH_RES = TH.get("results", "results/theory")
with open(TH_CFG) as _fh:
    _TH = yaml.safe_load(_fh)
TH_SIMPLE = ["dsweep", "zsweep", "noise", "local"]
# issue #15's block quadratics: about 90 min on 2 shared cores, over the CPU tier's budget, so
# not in reproduce-all; `snakemake theory_blocks` runs them and writes their own table;
# blocks_scale (their reduced simulation up to d = 1e5) feeds `snakemake hiso_block_all`
TH_EXTRA = ["blocks", "blocks_scale"]
TH_PARTS = list(_TH["illcond"]["parts"])
TH_FIGURES = ["theory_dsweep.png", "theory_zeta.png", "theory_convergence.png",
              "theory_learned_zeta.png", "theory_noise.png", "theory_spectrum.png", "theory_local.png"]


def th_section(*keys):
    """The config sections a job depends on, as a param: editing them (and only them) reruns it."""
    return json.dumps({k: _TH[k] for k in ("common", *keys)}, sort_keys=True)


wildcard_constraints:
    th_simple="|".join(TH_SIMPLE + TH_EXTRA),
    th_part="[A-Za-z0-9_]+",


rule theory_experiment:
    output:
        directory(TH_RES + "/{th_simple}"),
    params:
        section=lambda w: th_section(w.th_simple),
    benchmark:
        TH_RES + "/_benchmarks/{th_simple}.tsv"
    priority: 5
    threads: 1
    resources:
        mem_mb=2000, runtime=240,
    shell:
        "{HISO} theory run {wildcards.th_simple} --config {TH_CFG} --out {output}"


rule theory_illcond:
    output:
        directory(TH_RES + "/illcond_{th_part}"),
    params:
        section=lambda w: th_section("illcond"),
    benchmark:
        TH_RES + "/_benchmarks/illcond_{th_part}.tsv"
    priority: 10
    threads: 1
    resources:
        mem_mb=2000, runtime=240,
    shell:
        "{HISO} theory run illcond --part {wildcards.th_part} --config {TH_CFG} --out {output}"


rule theory_report:
    input:
        cfg=TH_CFG,
        runs=expand(TH_RES + "/{e}", e=TH_SIMPLE + [f"illcond_{p}" for p in TH_PARTS]),
    output:
        md="paper_tables/theory_checks.md",
        csv=in_report("paper_tables/theory_checks.csv", "Theory", "theory_table", "table"),
        tex="paper_tables/theory_checks.tex",
        figures=[in_report(f"figures/{f}", "Theory", "theory_figure", "figure") for f in TH_FIGURES],
        pdfs=expand("figures/{f}", f=[f.replace(".png", ".pdf") for f in TH_FIGURES]),
    benchmark:
        TH_RES + "/_benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=4000, runtime=30,
    shell:
        "{HISO} theory report --config {input.cfg} --results {TH_RES} --md {output.md} "
        "--csv {output.csv} --figures figures --tier {TIER}"


rule theory_blocks:
    # issue #15 on its own: the block-quadratic runs and their table and figure (PASS/FAIL rows
    # as in theory_checks.md); not in reproduce-all (see TH_EXTRA)
    input:
        cfg=TH_CFG,
        runs=TH_RES + "/blocks",
    output:
        md="paper_tables/theory_blocks.md",
        csv="paper_tables/theory_blocks.csv",
        tex="paper_tables/theory_blocks.tex",
        figure="figures/theory_blocks.png",
    shell:
        "{HISO} theory block-report --config {input.cfg} --results {input.runs} --md {output.md} "
        "--csv {output.csv} --figure {output.figure} --tier {TIER}"


rule theory_all:
    input:
        rules.theory_report.output,


ALL_OUTPUTS += publish(rules.theory_report)
