# The exactly solvable experiment: SGD with momentum on least squares over the digits
# pixels, simulated in many chains per cell and compared with the theory engine.


rule linreg_cell:
    output:
        "results/linear_regression/{linreg}.nc",
    log:
        "results/logs/linear_regression/{linreg}.log",
    benchmark:
        "results/benchmarks/linear_regression/{linreg}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        linreg=linreg_params,
    shell:
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"
        " limiting-dynamics linreg-cell --params {params.linreg:q} --out {output} > {log} 2>&1"


rule linreg_summary:
    input:
        linreg_files(),
    output:
        csv=report(
            "results/linear_regression/comparison.csv",
            caption="../report/linreg_comparison.rst",
            category="Linear regression",
        ),
        continuous="results/linear_regression/discrete_vs_continuous.csv",
    log:
        "results/logs/linear_regression/summary.log",
    benchmark:
        "results/benchmarks/linear_regression/summary.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "limiting-dynamics linreg-summary --inputs {input} --out-csv {output.csv}"
        " --out-continuous {output.continuous} > {log} 2>&1"


rule plot_linreg:
    input:
        linreg_files(),
        "results/linear_regression/comparison.csv",
        "results/linear_regression/discrete_vs_continuous.csv",
    output:
        report(
            figure("linreg_{linreg_figure}"),
            caption="../report/linreg_figure.rst",
            category="Linear regression",
        ),
    log:
        "results/logs/plots/linreg_{linreg_figure}.log",
    benchmark:
        "results/benchmarks/plots/linreg_{linreg_figure}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
        name=linreg_figure_name,
    shell:
        "limiting-dynamics plot {params.name} --inputs {input} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"


rule plot_theory:
    output:
        report(
            figure("theory_{theory_figure}"),
            caption="../report/theory_figure.rst",
            category="Theory",
        ),
    log:
        "results/logs/plots/theory_{theory_figure}.log",
    benchmark:
        "results/benchmarks/plots/theory_{theory_figure}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=plot_params(),
        name=theory_figure_name,
    shell:
        "limiting-dynamics plot {params.name} --inputs none --params {params.plots:q}"
        " --out {output} > {log} 2>&1"
