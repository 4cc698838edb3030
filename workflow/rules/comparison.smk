# Theory vs experiment per cell (no fitted constants), the predictions tables, the
# loss landscape of the default cell (their figures: plots.smk).


rule compare_cell:
    input:
        unpack(compare_inputs),
    output:
        "results/analysis/theory/{cell}.nc",
    log:
        "results/logs/compare_cell/{cell}.log",
    benchmark:
        "results/benchmarks/compare_cell/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    params:
        analysis=params_for("compare_cell"),
        drift=drift_arg,
    shell:
        "limiting-dynamics compare-cell --trajectory {input.trajectory} --hessian {input.hessian}"
        " --noise {input.noise} {params.drift} --params {params.analysis:q} --out {output} > {log} 2>&1"


rule predict:
    input:
        unpack(predict_inputs),
    output:
        csv=report(
            "results/analysis/predictions.csv",
            caption="../report/predictions.rst",
            category="Summary",
        ),
        modes=report(
            "results/analysis/modes.csv",
            caption="../report/modes.rst",
            category="Summary",
        ),
        nc="results/analysis/predictions.nc",
    log:
        "results/logs/predict.log",
    benchmark:
        "results/benchmarks/predict.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    params:
        noise=noise_arg,
        comparisons=comparisons_arg,
    shell:
        "limiting-dynamics predict --analyses {input.analyses}"
        " {params.noise} {params.comparisons} --out-csv {output.csv}"
        " --out-modes {output.modes} --out-nc {output.nc} > {log} 2>&1"


rule landscape:
    input:
        data=f"results/data/{DATASET}.npz",
        checkpoint=f"results/runs/{DEFAULT_CELL}/theta0.pt",
        hessian=f"results/hessian/{DEFAULT_CELL}.nc",
        trajectory=f"results/trajectories/{DEFAULT_CELL}.nc",
    output:
        "results/landscape/landscape.nc",
    log:
        "results/logs/landscape.log",
    benchmark:
        "results/benchmarks/landscape.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    threads: config["compute"]["threads"]
    resources:
        mem_mb=config["compute"]["mem_mb"],
        runtime=runtime_by_attempt(60),
        gpu=gpus(),
    params:
        run=params_for("landscape"),
        resume=f"results/runs/{DEFAULT_CELL}/landscape_resume.pt",
    shell:
        "limiting-dynamics landscape --data {input.data} --checkpoint {input.checkpoint}"
        " --hessian {input.hessian} --trajectory {input.trajectory} --params {params.run:q}"
        " --out {output} --resume {params.resume} --checkpoint-every 1 --threads {threads} > {log} 2>&1"
