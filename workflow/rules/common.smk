# Helpers shared by all rules: config checking, cells, per-rule parameters.
import json
import sys

from snakemake.utils import validate

from limiting_dynamics.config import (
    ConfigError,
    burn_in_start,
    burn_in_steps,
    cell_id,
    cells_by_id,
    check_config,
    default_cell,
    probed,
)

SCHEMA = "workflow/schemas/config.schema.yaml"
try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as exc:
    sys.exit(f"Config error: {exc}")
validate(config, schema="../schemas/config.schema.yaml")

CELLS = cells_by_id(config)
PROBED = [c for c, hp in CELLS.items() if probed(hp, config)]
DATASET = config["data"]["name"]
DEFAULT_CELL = cell_id(default_cell(config["cells"]))


wildcard_constraints:
    cell="lr[^/]+",
    dataset="[a-z0-9_]+",
    linreg="mom[0-9.e-]+_(replacement|reshuffle)",
    linreg_figure="phase_space|frequency|theory|sampling",
    theory_figure="ou_currents|power_law",
    comparison_figure="theory_modes|phase_space|theory_msd|noise_curvature|loss_landscape|eigenvector_drift",


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
            "label_noise": lim["label_noise"],
            "burn_in_steps": burn_in_steps(
                hp, lim["burn_in"], chained=burn_in_start(hp, config) is not None
            ),
            "phase_space": lim["phase_space"],
        }
    )


def burn_in_checkpoint(wildcards):
    """The converged weights, or the theta_0 of the seed's default cell (chained burn-in)."""
    start = burn_in_start(CELLS[wildcards.cell], config)
    if start is None:
        return "results/converge/theta0.pt"
    return f"results/runs/{cell_id(start)}/theta0.pt"


def records_modes(cell):
    """Limiting runs of probed cells project on Hessian eigenvectors (and so wait for the Hessian)."""
    return (
        config["hessian"]["enabled"]
        and config["limiting"]["phase_space"]["modes"] > 0
        and cell in PROBED
    )


def run_inputs(wildcards):
    inputs = {
        "data": f"results/data/{DATASET}.npz",
        "checkpoint": f"results/runs/{wildcards.cell}/theta0.pt",
    }
    if records_modes(wildcards.cell):
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
            "label_noise": config["limiting"]["label_noise"],
        }
    )


def analysis_params():
    return as_json(config["analysis"])


def plot_params():
    return as_json({**config["plots"], "default": CELLS[DEFAULT_CELL].as_dict()})


def default_cell_params():
    return as_json({"default": CELLS[DEFAULT_CELL].as_dict()})


def cell_files(pattern):
    return expand(pattern, cell=list(CELLS))


def probed_files(pattern):
    return expand(pattern, cell=PROBED)


def figure(name):
    return f"results/figures/{name}.{config['plots']['format']}"


def hessian_settings(wildcards, with_drift=False):
    """The loss the Hessian is taken of (the drift keys only where they are used)."""
    hess = {
        k: v
        for k, v in config["hessian"].items()
        if with_drift or not k.startswith("drift_")
    }
    return {
        "cell": wildcards.cell,
        "cell_batch_size": CELLS[wildcards.cell].batch_size,
        "device": config["compute"]["device"],
        "model": config["model"],
        "hessian": hess,
        "augment_shift": config["limiting"]["augment_shift"],
        "label_noise": config["limiting"]["label_noise"],
    }


def hessian_params(wildcards):
    return as_json(hessian_settings(wildcards))


def drift_params(wildcards):
    """The Hessian's settings and the cell's run (replayed to the drift steps)."""
    return as_json(
        {
            **hessian_settings(wildcards, with_drift=True),
            "hyperparameters": CELLS[wildcards.cell].as_dict(),
            "sampling": config["limiting"]["sampling"],
            "numerics": numerics(),
        }
    )


def drifts():
    """The eigenvector-drift stage runs where there is a Hessian and drift steps."""
    return config["hessian"]["enabled"] and bool(config["hessian"]["drift_steps"])


def compare_inputs(wildcards):
    inputs = {
        "trajectory": f"results/trajectories/{wildcards.cell}.nc",
        "hessian": f"results/hessian/{wildcards.cell}.nc",
        "noise": f"results/noise/{wildcards.cell}.nc",
    }
    if drifts():
        inputs["drift"] = f"results/drift/{wildcards.cell}.nc"
    return inputs


def drift_arg(wildcards, input):
    return f"--drift {input.drift}" if "drift" in input.keys() else ""


def noise_files():
    return probed_files("results/noise/{cell}.nc")


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
            "label_noise": config["limiting"]["label_noise"],
        }
    )


def compares():
    """Theory vs experiment needs both measurements at theta_0."""
    return config["hessian"]["enabled"] and config["noise"]["enabled"]


def predict_inputs(wildcards):
    inputs = {
        "analyses": cell_files("results/analysis/cells/{cell}.json"),
        "noise": noise_files() if config["noise"]["enabled"] else [],
    }
    if compares():
        inputs["comparisons"] = probed_files("results/analysis/theory/{cell}.nc")
    return inputs


def noise_arg(wildcards, input):
    return f"--noise {input.noise}" if config["noise"]["enabled"] and PROBED else ""


def comparisons_arg(wildcards, input):
    return f"--comparisons {input.comparisons}" if compares() and PROBED else ""


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
    theory = probed_files("results/analysis/theory/{cell}.nc")
    return {
        "theory_modes": theory + ["results/analysis/predictions.csv"],
        "phase_space": [
            f"results/trajectories/{DEFAULT_CELL}.nc",
            f"results/analysis/theory/{DEFAULT_CELL}.nc",
        ],
        "theory_msd": theory,
        "noise_curvature": theory,
        "loss_landscape": ["results/landscape/landscape.nc"],
        "eigenvector_drift": probed_files("results/drift/{cell}.nc"),
    }[wildcards.comparison_figure]


def prediction_outputs():
    out = [
        "results/analysis/predictions.csv",
        "results/analysis/modes.csv",
        "results/analysis/predictions.nc",
    ]
    if compares() and PROBED:
        out += [figure(f) for f in ("theory_msd", "noise_curvature")]
        if config["limiting"]["phase_space"]["modes"] > 0:
            out += [figure(f) for f in ("theory_modes", "phase_space")]
    return out


def hessian_outputs():
    if not config["hessian"]["enabled"]:
        return []
    out = probed_files("results/hessian/{cell}.nc") + [figure("hessian_spectrum")]
    if drifts():
        out += probed_files("results/drift/{cell}.nc") + [figure("eigenvector_drift")]
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
        prediction_outputs()
        + hessian_outputs()
        + linreg_outputs()
        + [
            "results/trajectories/all_cells.nc",
            "results/analysis/summary.csv",
            "results/analysis/summary.nc",
            "results/analysis/results.md",
            figure("convergence"),
            figure("msd"),
            figure("rotation"),
            figure("local_displacement"),
            figure("scaling"),
            figure("metrics"),
        ]
    )
