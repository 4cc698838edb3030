# Helpers shared by all rules: config checking, cells, per-stage parameters, figures.
import json
import sys

from limiting_dynamics.config import (
    ConfigError,
    cell_id,
    cell_settings,
    cells_by_id,
    check_config,
    default_cell,
    burn_in_start,
    family,
    probed,
)
from limiting_dynamics.figures import FIGURES, figure_files, figures_requested

try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as exc:
    sys.exit(f"Config error: {exc}")

CELLS = cells_by_id(config)
PROBED = [c for c, hp in CELLS.items() if probed(hp, config)]
DATASET = config["data"]["name"]
DEFAULT_CELL = cell_id(default_cell(config["cells"]))
# the phase-space figure's run: the first of the quadratic family (its top modes oscillate), else the default cell
PHASE_CELL = next(
    (c for c, hp in CELLS.items() if family(hp, config) == "quadratic"), DEFAULT_CELL
)


wildcard_constraints:
    cell="lr[^/]+",
    dataset="[a-z0-9_]+",
    linreg="mom[0-9.e-]+_(replacement|reshuffle)",


def runtime_by_attempt(minutes):
    """A job's wall-clock limit (minutes) that grows with its attempt: a job
    retried after hitting the limit (``--retries``, the SLURM profile) gets
    ``minutes * attempt`` and resumes from its checkpoint with more time."""
    return lambda wildcards, attempt: minutes * attempt


def small_job(mem_mb=2000):
    """Resources of the jobs that read NetCDF files and tables or draw figures (one thread)."""
    return {"mem_mb": mem_mb, "runtime": runtime_by_attempt(10)}


def gpus():
    """Declare a GPU only when running on GPUs is asked for: the profile's
    scheduler then asks for one per job, and ``snakemake --resources gpu=N``
    runs at most N of these jobs at once (one per GPU of a workstation)."""
    return 1 if config["compute"]["device"] == "cuda" else 0


def hyperparameters(wildcards):
    """The cell a job's ``cell`` wildcard names; one line and exit for a cell not in the config."""
    try:
        return CELLS[wildcards.cell]
    except KeyError:
        sys.exit(
            f"Unknown cell {wildcards.cell!r}: it is not a cell of the config; configured cells: "
            + ", ".join(CELLS)
        )


# ------------------------------------------------------------- stage parameters
# Parameters travel to the CLI as one JSON string (sorted keys), which Snakemake
# compares on reruns and the stages keep in their checkpoints. A stage's JSON is a
# config section (or nothing) plus named values, most of them from FIELDS.


def section(name, without=()):
    return lambda w: {k: v for k, v in config[name].items() if k not in without}


def keys(name, *names):
    """These keys of a config section (the ones a rule's command reads)."""
    return lambda w: {k: config[name][k] for k in names}


def limiting(key):
    return lambda w: config["limiting"][key]


def cell_batch_size(w):
    return hyperparameters(w).batch_size


def setting(key):
    """A value that differs between the spherical and quadratic families (config.cell_settings)."""
    return lambda w: cell_settings(hyperparameters(w), config)[key]


FIELDS = {
    "cell": lambda w: w.cell,
    "hyperparameters": lambda w: hyperparameters(w).as_dict(),
    "default": lambda w: CELLS[DEFAULT_CELL].as_dict(),
    "default_cell": lambda w: {  # the default cell as the tables name the others after it (seeds aside)
        k: v for k, v in CELLS[DEFAULT_CELL].as_dict().items() if k != "seed"
    },
    "device": lambda w: config["compute"]["device"],
    "deterministic": lambda w: config["compute"]["deterministic"],
    "model": section("model"),
    # how training steps are computed (they change the numbers)
    "numerics": lambda w: {
        k: config["compute"][k] for k in ("channels_last", "autocast", "compile_model")
    },
    **{k: section(k) for k in ("converge", "noise", "landscape")},
    "steps": setting("steps"),
    **{
        k: limiting(k)
        for k in (
            "eval_every",
            "tensor_every",
            "sampling",
            "augment_shift",
            "label_noise",
            "phase_space",
        )
    },
}


def fields(*names, **getters):
    return {**{n: FIELDS[n] for n in names}, **getters}


BATCHES = ("sampling", "augment_shift", "label_noise")  # how a cell's batches are drawn
HESSIAN = fields(  # the loss the Hessian is taken of (and how the bulk-noise minibatches are drawn)
    "cell",
    "device",
    "deterministic",
    "model",
    "sampling",
    "augment_shift",
    "label_noise",
    cell_batch_size=cell_batch_size,
    hessian=section("hessian", without=("drift_steps", "drift_modes")),
)

STAGE_PARAMS = {  # rule: (config section the JSON starts from, or None; values added)
    "prepare_data": (section("data"), {}),
    "converge": (
        None,
        fields("device", "deterministic", "numerics", "model", "converge"),
    ),
    "burn_in": (  # what the burn-in reads: the cell, how its batches are drawn, how many steps
        None,
        fields(
            "cell",
            "hyperparameters",
            "device",
            "deterministic",
            "numerics",
            "model",
            *BATCHES,
            burn_in_steps=setting("burn_in_steps"),
        ),
    ),
    "limiting_run": (  # a cell's limiting run
        None,
        fields(
            "cell",
            "hyperparameters",
            "device",
            "deterministic",
            "numerics",
            "model",
            "steps",
            "eval_every",
            "tensor_every",
            *BATCHES,
            "phase_space",
            compile_recording=lambda w: config["compute"]["compile_recording"],
            noise_points=lambda w: (
                config["noise"]["points"] if config["noise"]["enabled"] else 1
            ),
            # the weights the eigenvector-drift stage takes the Hessian at, kept by the run
            drift_steps=lambda w: (
                setting("drift_steps")(w) if drifts() and w.cell in PROBED else []
            ),
        ),
    ),
    "export_trajectory": (
        None,
        fields(
            "cell",
            "hyperparameters",
            "model",
            *BATCHES,
            dataset=lambda w: DATASET,
            family=lambda w: family(hyperparameters(w), config),
        ),
    ),
    "analyze_cell": (
        keys(
            "analysis",
            "fit_window",
            "fit_points",
            "bootstrap_samples",
            "stationary_window",
            "stationary_batches",
            "stationarity_window",
            "seed",
        ),
        {},
    ),
    "matched_exponents": (
        keys("analysis", "fit_points", "bootstrap_samples", "seed"),
        {},
    ),
    "compare_cell": (  # with the cell family's mode window and spectrum segment
        keys("analysis", "fit_window", "stationary_window", "curvature_block"),
        {k: setting(k) for k in ("mode_window", "spectrum_segment")},
    ),
    "plot": (
        section("plots", without=("format",)),
        fields("default"),
    ),  # the format is in the file name
    "results_tables": (None, fields("default_cell")),
    "hessian": (None, HESSIAN),
    "eigenvector_drift": (  # the Hessian's loss at the weights the cell's run kept (its drift steps)
        None,
        {
            **{
                k: v for k, v in HESSIAN.items() if k != "sampling"
            },  # draws no minibatches
            **fields("hyperparameters"),  # the cell's, for the output's attributes
            "hessian": lambda w: {
                k: config["hessian"][k]
                for k in (
                    "n_samples",
                    "draws",
                    "batch_size",
                    "bn_mode",
                    "precision",
                    "reuse_graph",
                    "drift_modes",
                    "seed",
                )
            },
        },
    ),
    "gradient_noise": (
        None,
        fields(
            "cell",
            "device",
            "deterministic",
            "model",
            *BATCHES,
            noise=section(
                "noise", without=("enabled", "points")
            ),  # the points are the run's snapshots
            batch_size=cell_batch_size,
        ),
    ),
    "landscape": (
        None,
        fields(
            "device",
            "deterministic",
            "model",
            "landscape",
            cell=lambda w: DEFAULT_CELL,
        ),
    ),
    "linreg_cell": (
        section("linear_regression", without=("enabled", "momenta", "samplings")),
        {
            "momentum": lambda w: LINREG_CELLS[w.linreg]["momentum"],
            "sampling": lambda w: LINREG_CELLS[w.linreg]["sampling"],
        },
    ),
}


def params_for(rule):
    """A function of a job's wildcards: the parameters of ``rule`` (named after it) as JSON."""
    base, values = STAGE_PARAMS[rule]

    def params(wildcards):
        out = base(wildcards) if base else {}
        out.update({k: get(wildcards) for k, get in values.items()})
        return json.dumps(out, sort_keys=True)

    return params


# ------------------------------------------------------------- cells and inputs


def burn_in_checkpoint(wildcards):
    """The converged weights, or the theta_0 of the seed's default cell (chained burn-in)."""
    start = burn_in_start(hyperparameters(wildcards), config)
    if start is None:
        return "results/converge/converged.pt"
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


def cell_files(pattern):
    return expand(pattern, cell=list(CELLS))


def probed_files(pattern):
    return expand(pattern, cell=PROBED)


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


def noise_inputs(wildcards):
    """theta_0, the weights the limiting run kept, and the Hessian where there is one."""
    inputs = {
        "data": f"results/data/{DATASET}.npz",
        "checkpoint": f"results/runs/{wildcards.cell}/theta0.pt",
        "snapshots": f"results/runs/{wildcards.cell}/snapshots.pt",
    }
    if config["hessian"]["enabled"] and wildcards.cell in PROBED:
        inputs["hessian"] = f"results/hessian/{wildcards.cell}.nc"
    return inputs


def compares():
    """Theory vs experiment needs both measurements at theta_0."""
    return config["hessian"]["enabled"] and config["noise"]["enabled"]


def predict_inputs(wildcards):
    inputs = {
        "analyses": cell_files("results/analysis/cells/{cell}.json"),
        "noise": (
            cell_files("results/noise/{cell}.nc") if config["noise"]["enabled"] else []
        ),
    }
    if compares():
        inputs["comparisons"] = probed_files("results/analysis/theory/{cell}.nc")
    return inputs


def noise_arg(wildcards, input):
    return f"--noise {input.noise}" if config["noise"]["enabled"] else ""


def comparisons_arg(wildcards, input):
    return f"--comparisons {input.comparisons}" if compares() and PROBED else ""


LINREG = config["linear_regression"]
LINREG_CELLS = {
    f"mom{m:g}_{s}": {"momentum": m, "sampling": s}
    for m in LINREG["momenta"]
    for s in LINREG["samplings"]
}


def linreg_files():
    return expand("results/linear_regression/{linreg}.nc", linreg=list(LINREG_CELLS))


# ------------------------------------------------------------- figures
# Every figure (its inputs by role, report category, caption and plotting function)
# is an entry of FIGURES in src/limiting_dynamics/figures.py; here only what the
# registry's names mean for this config.


wildcard_constraints:
    figure="|".join(FIGURES),


def figure(name):
    return f"results/figures/{name}.{config['plots']['format']}"


def figure_context():
    """The cells the registry's input patterns run over (figures.CONTEXT)."""
    return {"probed": PROBED, "phase_cell": PHASE_CELL, "linreg": list(LINREG_CELLS)}


def figure_switches():
    """Which figures the default target asks for: a figure's `needs` must all be on (figures.SWITCHES)."""
    return {
        "hessian": config["hessian"]["enabled"],
        "drift": drifts(),
        "landscape": config["landscape"]["enabled"],
        "comparison": compares() and bool(PROBED),
        "modes": config["limiting"]["phase_space"]["modes"] > 0,
        "linear_regression": LINREG["enabled"],
    }


def figure_inputs(wildcards):
    """The figure's input files by role (the rule's named inputs)."""
    return figure_files(wildcards.figure, figure_context())


def figure_category(wildcards):
    return FIGURES[wildcards.figure].category


def figure_caption(wildcards, output):
    """The report caption (workflow/report/figure.rst). A function of the output, so
    Snakemake leaves it out of the parameters it compares: a new caption shows in the
    next report without redrawing the figure."""
    return FIGURES[wildcards.figure].caption


def figure_inputs_arg(wildcards, input):
    """ROLE=PATH for every input file; `none` for a figure that reads no file."""
    pairs = [
        f"{role}={path}"
        for role, paths in input.items()
        for path in ([paths] if isinstance(paths, str) else paths)
    ]
    return " ".join(pairs) or "none"


# ------------------------------------------------------------- targets


def prediction_outputs():
    return [
        "results/analysis/predictions.csv",
        "results/analysis/modes.csv",
        "results/analysis/predictions.nc",
    ]


def hessian_outputs():
    if not config["hessian"]["enabled"]:
        return []
    out = probed_files("results/hessian/{cell}.nc")
    if drifts():
        out += probed_files("results/drift/{cell}.nc")
    return out


def linreg_outputs():
    if not LINREG["enabled"]:
        return []
    return ["results/linear_regression/comparison.csv"]


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
        ]
        + [figure(f) for f in figures_requested(figure_switches())]
    )
