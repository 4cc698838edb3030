# Helpers shared by all rules: config checking, cells, per-rule parameters.
import json
import sys

from snakemake.utils import validate

from limiting_dynamics.config import (
    ConfigError,
    burn_in_steps,
    cell_id,
    cells_by_id,
    check_config,
)

SCHEMA = "workflow/schemas/config.schema.yaml"
try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as exc:
    sys.exit(f"Config error: {exc}")
validate(config, schema="../schemas/config.schema.yaml")

CELLS = cells_by_id(config)
DATASET = config["data"]["name"]
DEFAULT_CELL = cell_id(next(iter(CELLS.values())))


wildcard_constraints:
    cell="lr[^/]+",
    dataset="[a-z0-9_]+",
    linreg="mom[0-9.e-]+_(replacement|reshuffle)",
    linreg_figure="phase_space|frequency|theory|sampling",
    theory_figure="ou_currents|power_law",
    comparison_figure="theory_modes|phase_space|theory_msd|noise_curvature|loss_landscape",


def as_json(obj):
    """Parameters travel to the CLI as one JSON string (compared by Snakemake on reruns)."""
    return json.dumps(obj, sort_keys=True)


def gpus():
    """Declare a GPU only when running on GPUs is asked for."""
    return 1 if config["compute"]["device"] == "cuda" else 0


def data_params():
    return as_json(config["data"])


def numerics():
    """How training steps are computed (they change the numbers, so they are params)."""
    c = config["compute"]
    return {k: c[k] for k in ("channels_last", "autocast", "compile_model")}


def converge_params():
    return as_json(
        {
            "device": config["compute"]["device"],
            "numerics": numerics(),
            "model": config["model"],
            "converge": config["converge"],
        }
    )


def cell_params(wildcards):
    hp = CELLS[wildcards.cell]
    lim = config["limiting"]
    return as_json(
        {
            "cell": wildcards.cell,
            "hyperparameters": hp.as_dict(),
            "device": config["compute"]["device"],
            "numerics": numerics(),
            "model": config["model"],
            "steps": lim["steps"],
            "eval_every": lim["eval_every"],
            "tensor_every": lim["tensor_every"],
            "compile_recording": config["compute"]["compile_recording"],
            "sampling": lim["sampling"],
            "augment_shift": lim["augment_shift"],
            "burn_in_steps": burn_in_steps(hp, lim["burn_in"]),
            "phase_space": lim["phase_space"],
        }
    )


def records_modes():
    """Limiting runs project on Hessian eigenvectors (and so wait for the Hessian)."""
    return (
        config["hessian"]["enabled"] and config["limiting"]["phase_space"]["modes"] > 0
    )


def run_inputs(wildcards):
    inputs = {
        "data": f"results/data/{DATASET}.npz",
        "checkpoint": f"results/runs/{wildcards.cell}/theta0.pt",
    }
    if records_modes():
        inputs["hessian"] = f"results/hessian/{wildcards.cell}.nc"
    return inputs


def hessian_arg(wildcards, input):
    return f"--hessian {input.hessian}" if "hessian" in input.keys() else ""


def export_params(wildcards):
    return as_json(
        {
            "cell": wildcards.cell,
            "hyperparameters": CELLS[wildcards.cell].as_dict(),
            "dataset": DATASET,
            "model": config["model"],
            "sampling": config["limiting"]["sampling"],
            "augment_shift": config["limiting"]["augment_shift"],
        }
    )


def analysis_params():
    return as_json(config["analysis"])


def plot_params():
    return as_json({**config["plots"], "default": CELLS[DEFAULT_CELL].as_dict()})


def cell_files(pattern):
    return expand(pattern, cell=list(CELLS))


def figure(name):
    return f"results/figures/{name}.{config['plots']['format']}"


def hessian_params(wildcards):
    return as_json(
        {
            "cell": wildcards.cell,
            "cell_batch_size": CELLS[wildcards.cell].batch_size,
            "device": config["compute"]["device"],
            "model": config["model"],
            "hessian": config["hessian"],
        }
    )


def noise_files():
    return cell_files("results/noise/{cell}.nc")


def noise_inputs(wildcards):
    inputs = {
        "data": f"results/data/{DATASET}.npz",
        "checkpoint": f"results/runs/{wildcards.cell}/theta0.pt",
    }
    if config["hessian"]["enabled"]:
        inputs["hessian"] = f"results/hessian/{wildcards.cell}.nc"
    return inputs


def noise_params(wildcards):
    return as_json(
        {
            "device": config["compute"]["device"],
            "model": config["model"],
            "noise": config["noise"],
            "cell": wildcards.cell,
            "batch_size": CELLS[wildcards.cell].batch_size,
            "sampling": config["limiting"]["sampling"],
            "augment_shift": config["limiting"]["augment_shift"],
        }
    )


def compares():
    """Theory vs experiment needs both measurements at theta_0."""
    return config["hessian"]["enabled"] and config["noise"]["enabled"]


def predict_inputs(wildcards):
    inputs = {
        "trajectories": cell_files("results/trajectories/{cell}.nc"),
        "analyses": cell_files("results/analysis/cells/{cell}.json"),
        "noise": noise_files(),
    }
    if compares():
        inputs["comparisons"] = cell_files("results/analysis/theory/{cell}.nc")
    return inputs


def comparisons_arg(wildcards, input):
    return f"--comparisons {input.comparisons}" if compares() else ""


def landscape_params():
    return as_json(
        {
            "cell": DEFAULT_CELL,
            "device": config["compute"]["device"],
            "model": config["model"],
            "landscape": config["landscape"],
        }
    )


def comparison_figure_name(wildcards):
    return wildcards.comparison_figure.replace("_", "-")


def comparison_figure_inputs(wildcards):
    theory = cell_files("results/analysis/theory/{cell}.nc")
    return {
        "theory_modes": theory + ["results/analysis/predictions.csv"],
        "phase_space": [
            f"results/trajectories/{DEFAULT_CELL}.nc",
            f"results/analysis/theory/{DEFAULT_CELL}.nc",
        ],
        "theory_msd": theory,
        "noise_curvature": theory,
        "loss_landscape": ["results/landscape/landscape.nc"],
    }[wildcards.comparison_figure]


def noise_outputs():
    if not config["noise"]["enabled"]:
        return []
    out = [
        "results/analysis/predictions.csv",
        "results/analysis/modes.csv",
        "results/analysis/predictions.nc",
    ]
    if compares():
        out += [figure(f) for f in ("theory_msd", "noise_curvature")]
        if config["limiting"]["phase_space"]["modes"] > 0:
            out += [figure(f) for f in ("theory_modes", "phase_space")]
    return out


def hessian_outputs():
    if not config["hessian"]["enabled"]:
        return []
    out = cell_files("results/hessian/{cell}.nc") + [figure("hessian_spectrum")]
    if config["landscape"]["enabled"]:
        out.append(figure("loss_landscape"))
    return out


LINREG = config["linear_regression"]
LINREG_CELLS = {
    f"mom{m:g}_{s}": {"momentum": m, "sampling": s}
    for m in LINREG["momenta"]
    for s in LINREG["samplings"]
}


def linreg_params(wildcards):
    settings = {
        k: v for k, v in LINREG.items() if k not in ("enabled", "momenta", "samplings")
    }
    return as_json({**settings, **LINREG_CELLS[wildcards.linreg]})


def linreg_files():
    return expand("results/linear_regression/{linreg}.nc", linreg=list(LINREG_CELLS))


def linreg_figure_name(wildcards):
    name = wildcards.linreg_figure.replace("_", "-")
    return f"linreg-{name}"


def theory_figure_name(wildcards):
    return wildcards.theory_figure.replace("_", "-")


def linreg_outputs():
    if not LINREG["enabled"]:
        return []
    return [
        "results/linear_regression/comparison.csv",
        *(
            figure(f"linreg_{f}")
            for f in ("phase_space", "frequency", "theory", "sampling")
        ),
        *(figure(f"theory_{f}") for f in ("ou_currents", "power_law")),
    ]


def all_outputs():
    return (
        noise_outputs()
        + hessian_outputs()
        + linreg_outputs()
        + [
            "results/trajectories/all_cells.nc",
            "results/analysis/summary.csv",
            "results/analysis/summary.nc",
            figure("convergence"),
            figure("msd"),
            figure("local_displacement"),
            figure("scaling"),
            figure("metrics"),
        ]
    )
