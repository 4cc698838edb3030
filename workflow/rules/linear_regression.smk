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
        runtime=runtime_by_attempt(30),
    params:
        linreg=params_for("linreg_cell"),
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
    resources:
        **small_job(),
    shell:
        "limiting-dynamics linreg-summary --inputs {input} --out-csv {output.csv}"
        " --out-continuous {output.continuous} > {log} 2>&1"
