# Limiting dynamics of SGD: dataset prep -> convergence -> limiting run per
# hyperparameter cell (burn-in -> Hessian and gradient noise at its theta_0 ->
# recorded run) -> NetCDF trajectories -> diffusion analysis -> theory vs
# experiment -> figures.
# Config: config/config.yaml (documented in config/README.md).
import time
from pathlib import Path

from snakemake.utils import min_version

RUN_START = time.time()  # the results page counts as this run's if written after this

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/linear_regression.smk"
include: "workflow/rules/hessian.smk"
include: "workflow/rules/noise.smk"
include: "workflow/rules/comparison.smk"


# Small jobs (reading NetCDF, tables, figures; resources from small_job() in common.smk)
# run on the submitting machine under a cluster executor; only data, training, Hessian,
# noise, landscape and linear-regression jobs are submitted.
localrules:
    all,
    export_trajectory,
    combine_trajectories,
    analyze_cell,
    summarize,
    matched_exponents,
    results_tables,
    compare_cell,
    predict,
    linreg_summary,
    plot,


rule all:
    default_target: True
    input:
        all_outputs(),


# At the end of a successful run: the targets table of the results page (when this
# run wrote it), where the figures are and how to build the HTML report.
onsuccess:
    from limiting_dynamics.results_tables import RESULTS_PAGE, after_run

    page = Path(RESULTS_PAGE)
    print(after_run(page.is_file() and page.stat().st_mtime >= RUN_START))
