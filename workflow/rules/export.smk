rule export_trajectory:
    input:
        "results/runs/{cell}/record.npz",
    output:
        "results/trajectories/{cell}.nc",
    log:
        "results/logs/export_trajectory/{cell}.log",
    benchmark:
        "results/benchmarks/export_trajectory/{cell}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    params:
        run=params_for("export_trajectory"),
    shell:
        "limiting-dynamics export-trajectory --raw {input} --params {params.run:q}"
        " --out {output} > {log} 2>&1"


rule combine_trajectories:
    input:
        cell_files("results/trajectories/{cell}.nc"),
    output:
        "results/trajectories/all_cells.nc",
    log:
        "results/logs/combine_trajectories.log",
    benchmark:
        "results/benchmarks/combine_trajectories.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(mem_mb=4000),
    params:
        cells=list(CELLS),
    shell:
        "limiting-dynamics combine-trajectories --inputs {input} --cells {params.cells} --out {output} > {log} 2>&1"
