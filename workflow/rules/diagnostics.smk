# HiSo's preconditioner over a run (issue #10, item 7): H (mean, min-max) and the effective step
# lr / H beside the accuracy, one line per HiSo run, from the aggregated metrics of the LM smoke
# tier (workflow/rules/lm.smk). The pretrained tier draws its own in workflow/rules/pretrained.smk.


rule lm_smoke_h_figure:
    input:
        "results/lm_smoke/metrics.csv",
    output:
        png=in_report("figures/lm_smoke_h.png", "LM", "lm_smoke_figure", "figure", "smoke tier"),
        pdf="figures/lm_smoke_h.pdf",
    benchmark:
        "results/benchmarks/lm_smoke_h_figure.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} figure-diagnostics {input} --out {output.png}"


ALL_OUTPUTS += publish(rules.lm_smoke_h_figure)
