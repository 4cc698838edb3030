rule prepare_data:
    output:
        "results/data/{dataset}.npz",
    log:
        "results/logs/prepare_data/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        data=data_params(),
    shell:
        "limiting-dynamics prepare-data --params {params.data:q} --out {output} > {log} 2>&1"
