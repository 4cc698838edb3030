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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        run=export_params,
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
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cells=list(CELLS),
    shell:
        "limiting-dynamics combine --inputs {input} --cells {params.cells} --out {output} > {log} 2>&1"
