# Gradient noise of independent minibatches (the cell's batch size, sampling, augmentation and label
# noise) at theta_0 and at the points of the limiting run the run kept the weights of.


rule gradient_noise:
    input:
        unpack(noise_inputs),
    output:
        "results/noise/{cell}.nc",
    log:
        "results/logs/noise/{cell}.log",
    benchmark:
        "results/benchmarks/noise/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(60),
        gpu=gpus(),
    params:
        run=params_for("gradient_noise"),
        hessian=hessian_arg,
    shell:
        "limiting-dynamics gradient-noise --data {input.data} --checkpoint {input.checkpoint}"
        " --snapshots {input.snapshots} {params.hessian} --params {params.run:q} --out {output}"
        " --threads {threads} > {log} 2>&1"
