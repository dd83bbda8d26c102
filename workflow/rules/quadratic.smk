# Engine demo: DeComFL and HiSo on a quadratic, a few seeds; one figure, one table.
QD = config["quadratic_demo"]
QD_RUNS = expand("results/quadratic_demo/{method}/seed{seed}/summary.json",
                 method=list(QD["methods"]), seed=QD["seeds"])


rule quadratic_demo_run:
    output:
        "results/quadratic_demo/{method}/seed{seed}/summary.json",
    params:
        sets=lambda w: sets([f"method.name={w.method}", f"seed={w.seed}", f"name={w.method}-seed{w.seed}"]
                            + QD["methods"][w.method]),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        "results/benchmarks/quadratic_demo_run/{method}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=1000, runtime=10,
    shell:
        "{HISO} run {QD[config]} --out {params.out} {params.sets} --no-progress --failed-ok"


rule quadratic_demo_aggregate:
    input:
        QD_RUNS,
    output:
        "results/quadratic_demo/metrics.csv",
    benchmark:
        "results/benchmarks/quadratic_demo_aggregate.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule quadratic_demo_report:
    input:
        "results/quadratic_demo/metrics.csv",
    output:
        fig=in_report("figures/quadratic_convergence.png", "Engine", "quadratic_figure", "figure"),
        fig_pdf="figures/quadratic_convergence.pdf",
        md="paper_tables/quadratic_demo.md",
        csv=in_report("paper_tables/quadratic_demo.csv", "Engine", "quadratic_table", "table"),
        tex="paper_tables/quadratic_demo.tex",
    benchmark:
        "results/benchmarks/quadratic_demo_report.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} figure convergence {input} --out {output.fig} && "
        "{HISO} table convergence {input} --out {output.md} --csv {output.csv} --tier {TIER}"


ALL_OUTPUTS += publish(rules.quadratic_demo_report)


# A run made to diverge (configs/pipeline.yaml, `divergence_check`): its table cell says
# "diverged" and the pipeline goes on.
DC = config["divergence_check"]


rule divergence_check_run:
    output:
        "results/divergence_check/{dc_run}/summary.json",
    params:
        sets=lambda w: sets([*DC["set"], *DC["runs"][w.dc_run], f"seed={DC['seed']}",
                             f"name=divergence-check-{w.dc_run}"]),
        out=lambda w, output: os.path.dirname(output[0]),
    benchmark:
        "results/benchmarks/divergence_check_run/{dc_run}.tsv"
    threads: 1
    resources:
        mem_mb=1000, runtime=10,
    shell:
        "{HISO} run {DC[config]} --out {params.out} {params.sets} --no-progress --failed-ok"


rule divergence_check_aggregate:
    input:
        expand("results/divergence_check/{run}/summary.json", run=list(DC["runs"])),
    output:
        "results/divergence_check/metrics.csv",
    benchmark:
        "results/benchmarks/divergence_check_aggregate.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} aggregate {input} --out {output}"


rule divergence_check_report:
    input:
        "results/divergence_check/metrics.csv",
    output:
        md="paper_tables/divergence_check.md",
        csv=in_report("paper_tables/divergence_check.csv", "Engine", "divergence_check_table", "table"),
        tex="paper_tables/divergence_check.tex",
    params:
        title="Divergence check on the demo quadratic: "
        + "; ".join(f"{r} ({', '.join(o)})" for r, o in DC["runs"].items()),
    benchmark:
        "results/benchmarks/divergence_check_report.tsv"
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} table convergence {input} --out {output.md} --csv {output.csv} "
        "--title {params.title:q} --tier {TIER}"


ALL_OUTPUTS += publish(rules.divergence_check_report)
