# The Hessian of the training loss at each cell's theta_0 (after its burn-in):
# top eigenpairs, spectral density, trace.


rule hessian:
    input:
        data=f"results/data/{DATASET}.npz",
        checkpoint="results/runs/{cell}/theta0.pt",
    output:
        "results/hessian/{cell}.nc",
    log:
        "results/logs/hessian/{cell}.log",
    benchmark:
        "results/benchmarks/hessian/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(120),
        gpu=gpus(),
        checkpoint_every=config["compute"]["checkpoint_steps"],
    params:
        run=params_for("hessian"),
        resume="results/runs/{cell}/hessian_resume.pt",
    shell:
        "limiting-dynamics hessian --data {input.data} --checkpoint {input.checkpoint}"
        " --params {params.run:q} --out {output} --resume {params.resume}"
        " --checkpoint-every {resources.checkpoint_every} --threads {threads} > {log} 2>&1"


rule eigenvector_drift:
    input:
        data=f"results/data/{DATASET}.npz",
        checkpoint="results/runs/{cell}/theta0.pt",
        snapshots="results/runs/{cell}/snapshots.pt",
        hessian="results/hessian/{cell}.nc",
    output:
        "results/drift/{cell}.nc",
    log:
        "results/logs/eigenvector_drift/{cell}.log",
    benchmark:
        "results/benchmarks/eigenvector_drift/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(120),
        gpu=gpus(),
    params:
        run=params_for("eigenvector_drift"),
    shell:
        "limiting-dynamics eigenvector-drift --data {input.data} --checkpoint {input.checkpoint}"
        " --snapshots {input.snapshots} --hessian {input.hessian} --params {params.run:q} --out {output} --threads {threads} > {log} 2>&1"
