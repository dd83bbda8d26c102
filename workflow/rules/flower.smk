# Bytes on the wire on a real (loopback) Flower deployment: HiSo and FedAvg on the digits CNN.
# Needs the flower extra; not part of reproduce-all:  snakemake flower_bytes --cores 1
FLOWER_METHODS = {"hiso": ["method.name=hiso"],
                  "fedavg": ["method={name: fedavg, lr: 0.05}"]}
FLOWER_PORTS = {"hiso": 19301, "fedavg": 19302}  # one SuperLink per job: jobs may run at once


rule flower_bytes_run:
    output:
        "results/flower_bytes/{method}/summary.json",
    params:
        sets=lambda w: sets(FLOWER_METHODS[w.method]
                            + [f"federation.flower.superlink=127.0.0.1:{FLOWER_PORTS[w.method]}"]),
        out=lambda w, output: os.path.dirname(output[0]),
    threads: 2
    resources:
        mem_mb=4000, runtime=60,
    shell:
        "{HISO} flower local configs/flower_digits.yaml --out {params.out} {params.sets}"


rule flower_bytes:
    input:
        expand("results/flower_bytes/{method}/summary.json", method=list(FLOWER_METHODS)),
    output:
        md="paper_tables/flower_bytes.md",
        csv="paper_tables/flower_bytes.csv",
    threads: 1
    resources:
        mem_mb=2000, runtime=15,
    shell:
        "{HISO} flower table {input} --out {output.md} --csv {output.csv}"
