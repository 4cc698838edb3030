rule converge:
    input:
        data=f"results/data/{DATASET}.npz",
    output:
        checkpoint="results/converge/theta0.pt",
        history="results/converge/history.nc",
    log:
        "results/logs/converge.log",
    benchmark:
        "results/benchmarks/converge.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpus(),
    params:
        run=converge_params(),
    shell:
        "limiting-dynamics converge --data {input.data} --params {params.run:q}"
        " --out-checkpoint {output.checkpoint} --out-history {output.history}"
        " --threads {threads} > {log} 2>&1"


rule burn_in:
    input:
        data=f"results/data/{DATASET}.npz",
        checkpoint="results/converge/theta0.pt",
    output:
        "results/runs/{cell}/theta0.pt",
    log:
        "results/logs/burn_in/{cell}.log",
    benchmark:
        "results/benchmarks/burn_in/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpus(),
    params:
        run=cell_params,
        diverged="results/runs/{cell}/diverged.json",
    shell:
        "limiting-dynamics burn-in --data {input.data} --checkpoint {input.checkpoint}"
        " --params {params.run:q} --out {output} --diverged-record {params.diverged}"
        " --threads {threads} > {log} 2>&1"


rule limiting_run:
    input:
        unpack(run_inputs),
    output:
        "results/runs/{cell}/record.npz",
    log:
        "results/logs/limiting_run/{cell}.log",
    benchmark:
        "results/benchmarks/limiting_run/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpus(),
    params:
        run=cell_params,
        hessian=hessian_arg,
        diverged="results/runs/{cell}/diverged.json",
    shell:
        "limiting-dynamics run-cell --data {input.data} --checkpoint {input.checkpoint}"
        " {params.hessian} --params {params.run:q} --out {output}"
        " --diverged-record {params.diverged} --threads {threads} > {log} 2>&1"
