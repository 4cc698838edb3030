rule converge:
    input:
        data=f"results/data/{DATASET}.npz",
    output:
        checkpoint="results/converge/converged.pt",
        history="results/converge/history.nc",
    log:
        "results/logs/converge.log",
    benchmark:
        "results/benchmarks/converge.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(120),
        gpu=gpus(),
        checkpoint_every=config["compute"]["checkpoint_epochs"],
    params:
        run=params_for("converge"),
        resume="results/converge/resume.pt",
    shell:
        "limiting-dynamics converge --data {input.data} --params {params.run:q}"
        " --out-checkpoint {output.checkpoint} --out-history {output.history}"
        " --resume {params.resume} --checkpoint-every {resources.checkpoint_every}"
        " --threads {threads} > {log} 2>&1"


rule burn_in:
    input:
        data=f"results/data/{DATASET}.npz",
        checkpoint=burn_in_checkpoint,
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
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(120),
        gpu=gpus(),
        checkpoint_every=config["compute"]["checkpoint_steps"],
    params:
        run=params_for("burn_in"),
        diverged="results/runs/{cell}/diverged.json",
        resume="results/runs/{cell}/burn_in_resume.pt",
    shell:
        "limiting-dynamics burn-in --data {input.data} --checkpoint {input.checkpoint}"
        " --params {params.run:q} --out {output} --diverged-record {params.diverged}"
        " --resume {params.resume} --checkpoint-every {resources.checkpoint_every}"
        " --threads {threads} > {log} 2>&1"


rule limiting_run:
    input:
        unpack(run_inputs),
    output:
        record="results/runs/{cell}/record.npz",
        snapshots="results/runs/{cell}/snapshots.pt",
    log:
        "results/logs/limiting_run/{cell}.log",
    benchmark:
        "results/benchmarks/limiting_run/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(240),
        gpu=gpus(),
        checkpoint_every=config["compute"]["checkpoint_steps"],
    params:
        run=params_for("limiting_run"),
        hessian=hessian_arg,
        diverged="results/runs/{cell}/diverged.json",
        resume="results/runs/{cell}/resume.pt",
    shell:
        "limiting-dynamics limiting-run --data {input.data} --checkpoint {input.checkpoint}"
        " {params.hessian} --params {params.run:q} --out {output.record} --out-snapshots {output.snapshots}"
        " --diverged-record {params.diverged} --resume {params.resume}"
        " --checkpoint-every {resources.checkpoint_every} --threads {threads} > {log} 2>&1"
