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
TH_SIMPLE = ["dsweep", "zsweep", "noise", "local", "blocks"]
TH_PARTS = list(_TH["illcond"]["parts"])
TH_FIGURES = ["theory_dsweep.png", "theory_zeta.png", "theory_convergence.png",
              "theory_learned_zeta.png", "theory_noise.png", "theory_spectrum.png", "theory_local.png"]


def th_section(*keys):
    """The config sections a job depends on, as a param: editing them (and only them) reruns it."""
    return json.dumps({k: _TH[k] for k in ("common", *keys)}, sort_keys=True)


wildcard_constraints:
    th_simple="|".join(TH_SIMPLE),
    th_part="[A-Za-z0-9_]+",


rule theory_experiment:
    output:
        directory(TH_RES + "/{th_simple}"),
    params:
        section=lambda w: th_section(w.th_simple),
    benchmark:
        TH_RES + "/_benchmarks/{th_simple}.tsv"
    priority: 5
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
    shell:
        "{HISO} theory run illcond --part {wildcards.th_part} --config {TH_CFG} --out {output}"


rule theory_report:
    input:
        cfg=TH_CFG,
        runs=expand(TH_RES + "/{e}", e=TH_SIMPLE + [f"illcond_{p}" for p in TH_PARTS]),
    output:
        md="paper_tables/theory_checks.md",
        csv="paper_tables/theory_checks.csv",
        figures=expand("figures/{f}", f=TH_FIGURES),
    benchmark:
        TH_RES + "/_benchmarks/report.tsv"
    shell:
        "{HISO} theory report --config {input.cfg} --results {TH_RES} --md {output.md} "
        "--csv {output.csv} --figures figures"


rule theory_blocks:
    # issue #15 on its own: the block-quadratic runs and their table and figure, without
    # re-running the other theory experiments (the full table also carries these rows)
    input:
        cfg=TH_CFG,
        runs=TH_RES + "/blocks",
    output:
        md="paper_tables/theory_blocks.md",
        csv="paper_tables/theory_blocks.csv",
        figure="figures/theory_blocks.png",
    shell:
        "{HISO} theory block-report --config {input.cfg} --results {input.runs} --md {output.md} "
        "--csv {output.csv} --figure {output.figure}"


rule theory_all:
    input:
        rules.theory_report.output,
        rules.theory_blocks.output,


ALL_OUTPUTS += rules.theory_report.output
ALL_OUTPUTS += rules.theory_blocks.output
