# Gradient noise at each cell's theta_0 (its batch size, sampling and augmentation),
# and the parameter-free prediction of the stationary local displacement of every cell.


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
        mem_mb=4000,
        runtime=60,
        gpu=gpus(),
    params:
        run=noise_params,
        hessian=hessian_arg,
    shell:
        "limiting-dynamics gradient-noise --data {input.data} --checkpoint {input.checkpoint}"
        " {params.hessian} --params {params.run:q} --out {output} --threads {threads} > {log} 2>&1"


rule predict:
    input:
        trajectories=cell_files("results/trajectories/{cell}.nc"),
        analyses=cell_files("results/analysis/cells/{cell}.json"),
        noise=noise_files(),
    output:
        report(
            "results/analysis/predictions.csv",
            caption="../report/predictions.rst",
            category="Summary",
        ),
    log:
        "results/logs/predict.log",
    benchmark:
        "results/benchmarks/predict.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "limiting-dynamics predict --trajectories {input.trajectories} --analyses {input.analyses}"
        " --noise {input.noise} --out-csv {output} > {log} 2>&1"
