# Every figure, by its name: its inputs, report category and plot command are looked
# up in common.smk (FIGURES, figure_inputs). All take their settings from the `plots`
# config section only, so changing a plot setting reruns plotting and nothing else.


rule plot:
    input:
        figure_inputs,
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
        plots=params_for("plots"),
        command=figure_command,
        inputs=figure_inputs_arg,
    shell:
        "limiting-dynamics plot {params.command} --inputs {params.inputs} --params {params.plots:q}"
        " --out {output} > {log} 2>&1"
