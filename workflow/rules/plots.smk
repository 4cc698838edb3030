# Every figure, by its name: its inputs by role, report category, caption and
# plotting function are its entry in src/limiting_dynamics/figures.py (read through
# common.smk). All take their settings from the `plots` config section only, so
# changing a plot setting reruns plotting and nothing else.


rule plot:
    input:
        unpack(figure_inputs),
    output:
        report(
            figure("{figure}"),
            caption="../report/figure.rst",
            category=figure_category,
        ),
    log:
        "results/logs/plots/{figure}.log",
    benchmark:
        "results/benchmarks/plots/{figure}.tsv"
    conda:
        "../envs/limiting-dynamics.yaml"
    resources:
        **small_job(),
    params:
        plots=params_for("plot"),
        inputs=figure_inputs_arg,
        caption=figure_caption,
    shell:
        "limiting-dynamics plot {wildcards.figure} --inputs {params.inputs} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"
