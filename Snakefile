# The one pipeline: config -> runs -> per-run metrics -> aggregate -> figures and tables.
# Rules call the `hiso` command line; the science lives in the package.
#
#   snakemake reproduce-all --cores 2                    # the CPU tier
#   snakemake reproduce-all --cores 2 --config tier=paper  (the GPU grid, where defined)
#   snakemake reproduce-all --cores 2 --config tier=pretrained  (+ SmolLM2-135M on CPU, no hub)

configfile: "configs/pipeline.yaml"

include: "workflow/rules/common.smk"
include: "workflow/rules/quadratic.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/digits.smk"
include: "workflow/rules/lm.smk"
include: "workflow/rules/flower.smk"  # not in reproduce-all (needs the flower extra)
include: "workflow/rules/pretrained.smk"
include: "workflow/rules/diagnostics.smk"


rule reproduce_all:
    """Regenerate every figure and table of the selected tier; writes a manifest of them."""
    input:
        ALL_OUTPUTS,
    output:
        "reproduce-all",
    shell:
        "{HISO} manifest {input} --tier {TIER} --out {output}"
