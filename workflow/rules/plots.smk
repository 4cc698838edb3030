# One rule per figure; all take their settings from the `plots` config section only,
# so changing a plot setting reruns plotting and nothing else.


rule plot_convergence:
    input:
        "results/converge/history.nc",
    output:
        report(
            figure("convergence"),
            caption="../report/convergence.rst",
            category="Convergence",
        ),
    log:
        "results/logs/plots/convergence.log",
    benchmark:
        "results/benchmarks/plots/convergence.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
    shell:
        "limiting-dynamics plot convergence --inputs {input} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"


rule plot_msd:
    input:
        "results/trajectories/all_cells.nc",
        "results/analysis/summary.csv",
    output:
        report(
            figure("msd"),
            caption="../report/msd.rst",
            category="Diffusion",
        ),
    log:
        "results/logs/plots/msd.log",
    benchmark:
        "results/benchmarks/plots/msd.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
    shell:
        "limiting-dynamics plot msd --inputs {input} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"


rule plot_rotation:
    input:
        "results/trajectories/all_cells.nc",
        "results/analysis/summary.csv",
    output:
        report(
            figure("rotation"),
            caption="../report/rotation.rst",
            category="Diffusion",
        ),
    log:
        "results/logs/plots/rotation.log",
    benchmark:
        "results/benchmarks/plots/rotation.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
    shell:
        "limiting-dynamics plot rotation --inputs {input} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"


rule plot_local_displacement:
    input:
        "results/trajectories/all_cells.nc",
        "results/analysis/summary.csv",
    output:
        report(
            figure("local_displacement"),
            caption="../report/local_displacement.rst",
            category="Diffusion",
        ),
    log:
        "results/logs/plots/local_displacement.log",
    benchmark:
        "results/benchmarks/plots/local_displacement.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
    shell:
        "limiting-dynamics plot local-displacement --inputs {input} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"


rule plot_scaling:
    input:
        "results/trajectories/all_cells.nc",
        "results/analysis/summary.csv",
    output:
        report(
            figure("scaling"),
            caption="../report/scaling.rst",
            category="Hyperparameters",
        ),
    log:
        "results/logs/plots/scaling.log",
    benchmark:
        "results/benchmarks/plots/scaling.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
    shell:
        "limiting-dynamics plot scaling --inputs {input} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"


rule plot_metrics:
    input:
        "results/trajectories/all_cells.nc",
    output:
        report(
            figure("metrics"),
            caption="../report/metrics.rst",
            category="Performance",
        ),
    log:
        "results/logs/plots/metrics.log",
    benchmark:
        "results/benchmarks/plots/metrics.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
    shell:
        "limiting-dynamics plot metrics --inputs {input} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"
