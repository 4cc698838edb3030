rule analyze_cell:
    input:
        "results/trajectories/{cell}.nc",
    output:
        "results/analysis/cells/{cell}.json",
    log:
        "results/logs/analyze_cell/{cell}.log",
    benchmark:
        "results/benchmarks/analyze_cell/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    params:
        analysis=params_for("analyze_cell"),
    shell:
        "limiting-dynamics analyze-cell --trajectory {input} --params {params.analysis:q}"
        " --out {output} > {log} 2>&1"


rule results_tables:
    input:
        summary="results/analysis/summary.csv",
        predictions="results/analysis/predictions.csv",
        modes="results/analysis/modes.csv",
        matched="results/analysis/matched_exponents.csv",
    output:
        report(
            "results/analysis/results.md",
            caption="../report/results.rst",
            category="Summary",
        ),
    log:
        "results/logs/results_tables.log",
    benchmark:
        "results/benchmarks/results_tables.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    params:
        default=params_for("results_tables"),
    shell:
        "limiting-dynamics results-tables --summary {input.summary} --predictions {input.predictions}"
        " --modes {input.modes} --matched {input.matched} --params {params.default:q}"
        " --out {output} > {log} 2>&1"


rule matched_exponents:
    input:
        cell_files("results/trajectories/{cell}.nc"),
    output:
        report(
            "results/analysis/matched_exponents.csv",
            caption="../report/matched_exponents.rst",
            category="Summary",
        ),
    log:
        "results/logs/matched_exponents.log",
    benchmark:
        "results/benchmarks/matched_exponents.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    params:
        analysis=params_for("matched_exponents"),
    shell:
        "limiting-dynamics matched-exponents --inputs {input} --params {params.analysis:q}"
        " --out {output} > {log} 2>&1"


rule summarize:
    input:
        cell_files("results/analysis/cells/{cell}.json"),
    output:
        csv=report(
            "results/analysis/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        nc="results/analysis/summary.nc",
        replicates=report(
            "results/analysis/replicates.csv",
            caption="../report/replicates.rst",
            category="Summary",
        ),
    log:
        "results/logs/summarize.log",
    benchmark:
        "results/benchmarks/summarize.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    shell:
        "limiting-dynamics summarize --inputs {input} --out-csv {output.csv}"
        " --out-nc {output.nc} --out-replicates {output.replicates} > {log} 2>&1"
