# The one pipeline: config -> runs -> per-run metrics -> aggregate -> figures and tables.
# Rules call the `hiso` command line; the science lives in the package.
#
#   snakemake reproduce-all --report report.html          # every figure and table, captioned
#
#   snakemake reproduce-all --cores 2                    # the CPU tier
#   snakemake reproduce-all --cores 2 --config tier=paper  (the GPU grid, where defined)
#   snakemake reproduce-all --cores 2 --config tier=pretrained  (+ SmolLM2-135M on CPU, no hub)

configfile: "configs/pipeline.yaml"

report: "workflow/report/workflow.rst"  # snakemake reproduce-all --report report.html

import json

include: "workflow/rules/common.smk"
include: "workflow/rules/quadratic.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/digits.smk"
include: "workflow/rules/lm.smk"
include: "workflow/rules/flower.smk"  # not in reproduce-all (needs the flower extra)
include: "workflow/rules/pretrained.smk"
include: "workflow/rules/diagnostics.smk"
include: "workflow/rules/large_federation.smk"  # not in reproduce-all (`snakemake large_federation`)
include: "workflow/rules/hiso_block.smk"  # issue 15; not in reproduce-all


rule reproduce_all:
    """Regenerate every figure and table of the selected tier; writes a manifest of them."""
    input:
        ALL_OUTPUTS,
    output:
        "reproduce-all",
    params:
        # {artefact: benchmark file of the rule that wrote it}: each one's wall and CPU seconds
        benchmarks=lambda w: json.dumps({f: BENCHMARKS[f] for f in map(str, ALL_OUTPUTS) if f in BENCHMARKS}),
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} manifest {input} --tier {TIER} --benchmarks {params.benchmarks:q} "
        "--benchmark-dir results --out {output}"
