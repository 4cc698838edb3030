rule prepare_data:
    output:
        "results/data/{dataset}.npz",
    log:
        "results/logs/prepare_data/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]  # images are decoded on this many threads (ImageNet)
    resources:
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(120),
    params:
        data=params_for("prepare_data"),
    shell:
        "limiting-dynamics prepare-data --params {params.data:q} --out {output}"
        " --threads {threads} > {log} 2>&1"
