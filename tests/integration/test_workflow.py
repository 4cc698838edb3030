"""The real Snakemake workflow on the tiny config (tests/tiny_config.yaml): one run,
checked stage by stage, then reruns, targets, bad configs and divergence."""

from __future__ import annotations

import collections
import copy
import functools
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from cf_checker import KINDS, check_cf
from conftest import SCHEMA, TINY, Workflow

from limiting_dynamics import table_columns
from limiting_dynamics.figures import FIGURES
from limiting_dynamics.stages.common import PARAMS_READ_ENV

pytestmark = pytest.mark.integration

PLOT_RULES = {"plot"}  # one rule, a job per figure
DEFAULT = "lr0.05_bs32_mom0.9_wd0.005_seed0"
SWEPT = "lr0.02_bs32_mom0.9_wd0.005_seed0"
QUAD = "lr0.001_bs32_mom0.99_wd0.0005_seed0"  # the quadratic family (cells.quadratic)


def executed(proc) -> collections.Counter:
    """Rules that finished in a real run, with job counts (from Snakemake's log)."""
    text = proc.stdout + proc.stderr
    return collections.Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text)) - collections.Counter(
        {"all": 10**6}
    )


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    w = Workflow(tmp_path_factory.mktemp("wf"), copy.deepcopy(TINY))
    w.env[PARAMS_READ_ENV] = str(w.path("params_read"))  # every job records the settings it read
    w.first = w.run()
    w.env.clear()
    return w


# Settings a rule is given that no job of the tiny run reads, each with the
# condition under which its command reads it.
READ_ONLY_WHEN = {
    "prepare_data": {"loader"},  # ImageNet only: stream (subset files) or memory
    "matched_exponents": {"fit_points", "bootstrap_samples"},  # when a family's matched window spans a decade
}


def test_every_rule_is_given_exactly_the_settings_its_command_reads(wf):
    """Each job recorded what it was given (--params) and what it read; over all
    jobs of a rule the two agree, so a changed setting reruns only the rules
    that read it (and, through their outputs, what depends on them)."""
    given, read = collections.defaultdict(set), collections.defaultdict(set)
    for f in wf.path("params_read").glob("*.json"):
        record = json.loads(f.read_text())
        given[record["rule"]].update(record["given"])
        read[record["rule"]].update(record["read"])
    assert set(given) >= {"burn_in", "limiting_run", "hessian", "gradient_noise", "plot", "results_tables"}
    unread = {rule: sorted(given[rule] - read[rule]) for rule in given if given[rule] - read[rule]}
    assert unread == {rule: sorted(keys) for rule, keys in READ_ONLY_WHEN.items()}


def test_training_stages_record_every_step(wf):
    ran = executed(wf.first)
    assert ran["limiting_run"] == 3 and ran["export_trajectory"] == 3 and ran["converge"] == 1
    ds = xr.load_dataset(wf.path(f"results/trajectories/{DEFAULT}.nc"))
    for v in ("train_loss", "sq_dist_from_start", "sq_step", "sq_velocity", "sq_param_norm"):
        assert ds[v].sizes["step"] == TINY["limiting"]["steps"]
    assert ds.attrs["lr"] == 0.05 and ds.attrs["dataset"] == "digits"


def test_every_result_carries_its_provenance(wf):
    for f in (
        f"results/trajectories/{DEFAULT}.nc",
        f"results/hessian/{DEFAULT}.nc",
        f"results/noise/{DEFAULT}.nc",
        "results/converge/history.nc",
    ):
        attrs = xr.load_dataset(wf.path(f)).attrs
        assert len(attrs["config_sha256"]) == 64 and attrs["device"] == "cpu" and attrs["precision"] == "float32", f
        assert attrs["git_revision"] and attrs["torch_version"].startswith("2.") and attrs["limiting_dynamics_version"]
        assert attrs["Conventions"] == "CF-1.10" and re.match(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ created by ", attrs["history"]
        )
    from PIL import Image

    made_by = Image.open(wf.path("results/figures/msd.png")).text["Software"]
    assert made_by.startswith("limiting-dynamics ") and "git " in made_by and "torch 2." in made_by


def test_combine_stacks_the_cells(wf):
    comb = xr.load_dataset(wf.path("results/trajectories/all_cells.nc"))
    assert set(comb["cell"].values) == {DEFAULT, SWEPT, QUAD}
    assert sorted(comb["lr"].values.tolist()) == [0.001, 0.02, 0.05]


def test_summary_and_spread_between_seeds(wf):
    summary = pd.read_csv(wf.path("results/analysis/summary.csv"), index_col="cell")
    assert set(summary.index) == {DEFAULT, SWEPT, QUAD}
    assert summary.loc[QUAD, "family"] == "quadratic" and summary.loc[DEFAULT, "family"] == "spherical"
    assert np.all(np.isfinite(summary["c"])) and np.all(summary["c_low"] <= summary["c_high"])
    assert xr.load_dataset(wf.path("results/analysis/summary.nc")).sizes["cell"] == 3
    assert np.all(summary["stationarity_ratio"] >= 1) and set(summary["small_angle_fit"]) <= {0, 1}
    reps = pd.read_csv(wf.path("results/analysis/replicates.csv"))
    assert len(reps) == 3 and set(reps["n_seeds"]) == {1} and "c_mean" in reps.columns


def test_linear_regression_stages(wf):
    ran = executed(wf.first)
    assert ran["linreg_cell"] == 4
    lin = xr.load_dataset(wf.path("results/linear_regression/mom0.99_reshuffle.nc"))
    assert lin.sizes["step"] == 41 and lin.attrs["sampling"] == "reshuffle" and lin.attrs["momentum"] == 0.99
    assert set(lin.start.values) == {"theta_star", "displaced"} and lin.sizes["mode"] == 3
    table = pd.read_csv(wf.path("results/linear_regression/comparison.csv"))
    assert len(table) > 0 and np.isfinite(table["z_discrete"]).all()


def test_predictions_per_cell(wf):
    pred = pd.read_csv(wf.path("results/analysis/predictions.csv"), index_col="cell")
    assert set(pred.index) == {DEFAULT, SWEPT, QUAD}
    for col in (
        "lr",
        "batch_size",
        "momentum",
        "weight_decay",
        "sq_step_measured",
        "sq_step_in_run_check",
        "sq_step_equilibrium_check",
        "sq_step_predicted",
        "stationarity_ratio",
        "noise_curvature_slope",
        "c_sq_dist_measured",
        "c_lag_msd_sketch",
        "c_lag_msd_predicted",
    ):
        assert col in pred.columns and np.all(np.isfinite(pred[col])), col
    assert np.all(pred["sq_step_in_run_check"] > 0) and np.all(pred["sq_step_equilibrium_check"] > 0)
    # the snapshot prediction is lr^2 tr Cov(g_S) / (1 - beta^2) with the noise stage's trace
    trace = xr.load_dataset(wf.path(f"results/noise/{DEFAULT}.nc")).attrs["trace_cov"]
    assert pred.loc[DEFAULT, "sq_step_predicted"] == pytest.approx(0.05**2 * trace / (1 - 0.9**2), rel=1e-5)


def test_results_page(wf):
    page = wf.path("results/analysis/results.md").read_text()
    assert page.startswith("# Measured results") and "| default |" in page and "seed spread" in page


def test_gradient_noise_stage(wf):
    noise_nc = xr.load_dataset(wf.path(f"results/noise/{DEFAULT}.nc"))
    assert noise_nc.attrs["bn_mode"] == "train" and noise_nc.sizes["mode"] == 3 and noise_nc.attrs["cell"] == DEFAULT
    assert noise_nc.attrs["trace_cov"] > 0 and np.all(noise_nc.minibatch_var_along_eigenvector > 0)


def test_hessian_is_taken_at_each_cells_theta0(wf):
    hess = xr.load_dataset(wf.path(f"results/hessian/{DEFAULT}.nc"))
    other = xr.load_dataset(wf.path(f"results/hessian/{SWEPT}.nc"))
    assert hess.hessian_eigenvalues.dims == ("mode",) and hess.sizes["mode"] == 3
    assert np.all(np.diff(hess.hessian_eigenvalues.values) <= 0)
    assert hess.hessian_eigenvectors.shape[1] == hess.attrs["n_params"] and hess.attrs["bn_mode"] == "train"
    assert hess.attrs["chunk_size"] == 32 and hess.attrs["n_samples"] == 64 and hess.attrs["draws"] == 2
    assert hess.attrs["n_batches"] == 4 and hess.attrs["label_smoothing"] == TINY["limiting"]["label_noise"]
    assert not np.allclose(hess.hessian_eigenvalues, other.hessian_eigenvalues)


def test_phase_space_is_recorded_on_the_cells_eigenvectors(wf):
    ds = xr.load_dataset(wf.path(f"results/trajectories/{DEFAULT}.nc"))
    hess = xr.load_dataset(wf.path(f"results/hessian/{DEFAULT}.nc"))
    assert ds.mode_position.dims == ("step", "mode") and ds.sizes["mode"] == 3
    np.testing.assert_allclose(ds.hessian_eigenvalue, hess.hessian_eigenvalues)
    assert ds.sketch.shape == (TINY["limiting"]["steps"], TINY["limiting"]["phase_space"]["sketch_dim"])
    # orthonormal directions: the projections never hold more than the whole displacement
    assert np.all((ds.mode_position**2).sum("mode") <= ds.sq_dist_from_start * (1 + 1e-4))


def test_per_mode_comparisons(wf):
    modes = pd.read_csv(wf.path("results/analysis/modes.csv"))
    assert len(modes) == 3 * 3 and np.all(modes["position_var_in_run_check"] > 0)
    for col in (
        "position_var_measured_over_in_run_check",
        "oscillation_frequency_measured_over_predicted",
        "curvature_in_run_over_eigenvalue",
        "position_var_measured_over_predicted",
    ):
        assert np.all(np.isfinite(modes[col])), col
    pred = pd.read_csv(wf.path("results/analysis/predictions.csv"), index_col="cell")
    pnc = xr.load_dataset(wf.path("results/analysis/predictions.nc"))  # both tables, with provenance
    np.testing.assert_allclose(
        pnc["sq_step_in_run_check"].sel(cell=list(pred.index)), pred["sq_step_in_run_check"], rtol=1e-5
    )
    row = modes.iloc[-1]
    assert float(pnc["position_var_in_run_check"].sel(cell=row["cell"], mode=row["mode"])) == pytest.approx(
        row["position_var_in_run_check"], rel=1e-5
    )
    assert pnc["lr"].dims == ("cell",) and "git_revision" in pnc.attrs and "history" in pnc.attrs


def test_compare_cell_stage(wf):
    cmp = xr.load_dataset(wf.path(f"results/analysis/theory/{DEFAULT}.nc"))
    assert np.all(cmp.lag_msd_predicted >= cmp.lag_msd_predicted_top) and np.all(cmp.lag_msd_sketch > 0)


def test_landscape_grid_is_centred_on_theta0_and_covers_the_run(wf):
    land = xr.load_dataset(wf.path("results/landscape/landscape.nc"))
    assert land.train_loss.shape == (5, 5) and np.all(np.isfinite(land.test_loss))
    # theta_0 is the middle grid point, and the grid reaches past the run's projections
    assert land.alpha.values[2] == pytest.approx(0.0, abs=1e-12) and land.beta.values[2] == pytest.approx(
        0.0, abs=1e-12
    )
    np.testing.assert_allclose(land.alpha.values, -land.alpha.values[::-1], atol=1e-12)
    assert land.alpha.values[-1] >= np.abs(land.trajectory_a.values).max()
    assert land.beta.values[-1] >= np.abs(land.trajectory_b.values).max()


def test_every_figure_is_drawn(wf):
    """Each figure decodes as an image (at least 100 px a side at the tiny config's 60 dpi).
    This claims only that it was drawn: what a figure plots is checked where it is
    drawn, on data with a known answer (so far the scaling figure,
    tests/unit/test_plots_runs.py); a pixel count
    cannot tell data from an empty grid (empty whitegrid axes cover 3% of the image,
    the sparsest real figure 4.5%)."""
    import matplotlib.image

    for name in FIGURES:  # the tiny config turns every switch on
        image = matplotlib.image.imread(wf.path(f"results/figures/{name}.png"))
        assert image.ndim == 3 and min(image.shape[:2]) >= 100, (name, image.shape)


def test_nothing_half_written_is_left(wf):
    assert not list(wf.root.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_result_files_pass_the_cf_checker(wf, kind):
    files = sorted(wf.path("results").glob(KINDS[kind]))
    assert files, f"the tiny run made no {KINDS[kind]}"
    check_cf(files[0])


def test_every_result_file_is_of_a_checked_kind(wf):
    results = wf.path("results")
    known = {f for pattern in KINDS.values() for f in results.glob(pattern)}
    assert sorted(set(results.rglob("*.nc")) - known) == []


def test_every_table_column_is_described(wf):
    for name in ("summary", "predictions", "modes"):
        columns = pd.read_csv(wf.path(f"results/analysis/{name}.csv"), nrows=0).columns
        assert sorted(set(columns) - set(table_columns.COLUMNS)) == [], name


def test_report_bundles_the_figures(wf):
    wf.run("--report", "report.html")
    html = wf.path("report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "msd.png" in html and "summary.csv" in html
    assert "linreg_phase_space.png" in html and "theory_power_law.png" in html
    assert "phase_space.png" in html and "loss_landscape.png" in html and "modes.csv" in html
    for name, fig in FIGURES.items():  # every figure with its caption from the registry
        assert f"{name}.png" in html and "<p>" + " ".join(fig.caption.split()[:3]) in html, name


def test_second_run_does_nothing(wf):
    assert wf.planned_jobs() == {}
    proc = wf.run()
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _leaf_keys(cfg: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        out += _leaf_keys(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return out


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _schema_enum(path: str):
    """The schema's allowed values of a config key, if it lists them."""
    node = _schema()
    for part in path.split("."):
        node = node.get("properties", {}).get(part, {})
    return node.get("enum")


# A changed value where the generic change (below) would not pass the schema or
# the semantic checks, or would mean another experiment (a data set needs its path).
CHANGED = {
    "data.name": None,  # cifar10 / imagenet need a local path: the data set is the whole experiment
    "data.channels": None,  # the digits have one channel
    "converge.checkpoint": None,  # a path to a converged checkpoint: tested in test_local_datasets.py
    "data.loader": None,  # stream is for ImageNet only
    "converge.momentum": 0.8,
    "cells.default.momentum": 0.8,
    "cells.quadratic.momentum": 0.98,
    "cells.sweeps.batch_size": [16],
    "cells.sweeps.seed": [1],
    "limiting.phase_space.modes": None,  # held between landscape.modes (3) and hessian.top_k (3) here
    "model.blocks": [2],
    "cells.grid": {"lr": [0.03]},
    "hessian.n_samples": 96,
    "noise.chunk": 32,
    "linear_regression.samplings": ["replacement"],
    "linear_regression.momenta": [0.9],
    "landscape.modes": [1, 2],
    "analysis.fit_window": [0.2, 1.0],
    "analysis.stationary_window": [0.4, 1.0],
    "analysis.mode_window": [0.0, 0.6],
    "cells.quadratic.mode_window": [0.0, 0.9],
}


def _changed(path: str, value):
    """A different value for the key at ``path`` that the config still accepts (None: skip)."""
    if path in CHANGED:
        return CHANGED[path]
    enum = _schema_enum(path)
    if enum:
        return next(v for v in enum if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 if value else 0.1
    if isinstance(value, list):
        return [value[0] + 1 if isinstance(value[0], int) else value[0] * 1.5, *value[1:]] if value else [0.03]
    return None


def _set(cfg: dict, path: str, value) -> dict:
    out = copy.deepcopy(cfg)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


JOB = re.compile(r"^(?:local)?rule (\w+):\n(?:(?!^(?:local)?rule ).)*?reason: ([^\n]*)", re.S | re.M)


def planned_with_reasons(wf, configfile: Path | None = None) -> list[tuple[str, str]] | str:
    """(rule, reason) of every job a dry run plans (with ``configfile``, else the
    workflow's config), or the error it stops with."""
    proc = wf.run("-n", *(["--configfile", str(configfile)] if configfile else []), check=False)
    text = proc.stdout + proc.stderr
    return JOB.findall(text) if proc.returncode == 0 else text.strip().splitlines()[-1]


def _params_change(reason: str) -> set[str]:
    """The settings whose value differs between the before and now JSON of a
    'Params have changed' reason (dotted paths)."""
    before, now = re.search(r"before: '(.*)' now: '(.*)'", reason).groups()

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": json.dumps(v)})
        return out

    a, b = flat(json.loads(before)), flat(json.loads(now))
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_every_config_key_reruns_only_the_rules_that_read_it(wf):
    """For every key of the config: change it and dry-run. A job planned
    because its params changed must read every changed setting (the settings
    the first run recorded); any other planned job is new (missing output) or
    follows an input another job updates. A key whose change plans nothing is
    one of CHANGES_NO_JOB."""
    reads = collections.defaultdict(set, {rule: set(keys) for rule, keys in READ_ONLY_WHEN.items()})
    for f in wf.path("params_read").glob("*.json"):
        record = json.loads(f.read_text())
        reads[record["rule"]].update(record["read"])
    changed = {}  # key -> a complete config with that key changed
    for path in _leaf_keys(TINY):
        node = TINY
        for part in path.split("."):
            node = node[part]
        new = _changed(path, node)
        if new is not None:
            changed[path] = wf.path(f"changed/{path}.yaml")
            changed[path].parent.mkdir(exist_ok=True)
            changed[path].write_text(yaml.safe_dump(_set(TINY, path, new), sort_keys=False))
    with ThreadPoolExecutor(2) as pool:  # dry runs only read the workflow's records
        planned = dict(zip(changed, pool.map(lambda f: planned_with_reasons(wf, f), changed.values())))
    follows = (
        "Missing output files",
        "Input files updated by another job",
        "Updated input files",
        "Set of input files",
    )
    nothing, problems = [], []
    for path, jobs in planned.items():
        if isinstance(jobs, str):
            problems.append(f"{path}: the dry run stops: {jobs}")
            continue
        if not jobs:
            nothing.append(path)
        for rule, reason in jobs:
            if reason.startswith("Params have changed"):
                unread = _params_change(reason) - reads[rule]
                if unread:
                    problems.append(f"{path}: {rule} reruns for settings it does not read: {sorted(unread)}")
            elif not reason.startswith(follows):
                problems.append(f"{path}: {rule} planned for {reason!r}")
    assert not problems, "\n".join(problems)
    assert sorted(nothing) == sorted(CHANGES_NO_JOB)


CHANGES_NO_JOB = [  # keys whose change (above) leaves every job of the tiny run as it is
    "compute.threads",  # resources: they size jobs, not results
    "compute.mem_mb",
    "compute.checkpoint_steps",
    "compute.checkpoint_epochs",
    "limiting.burn_in.relaxation_times",  # every tiny burn-in is capped at max_steps: the steps stay the same
    "limiting.burn_in.chained_relaxation_times",
    "limiting.burn_in.min_steps",
    "linear_regression.enabled",  # switching a stage off removes its jobs
    "landscape.enabled",
]


def test_plot_setting_change_reruns_only_plotting(wf):
    cfg = copy.deepcopy(TINY)
    cfg["plots"]["dpi"] = 70
    wf.write_config(cfg)
    ran = executed(wf.run())
    assert set(ran) == PLOT_RULES
    assert ran["plot"] == len(FIGURES)  # every figure


def test_changing_one_cell_reruns_that_cells_chain_only(wf):
    cfg = copy.deepcopy(TINY)
    cfg["plots"]["dpi"] = 70
    cfg["cells"]["sweeps"]["lr"] = [0.03]
    wf.write_config(cfg)
    ran = executed(wf.run())
    assert ran["limiting_run"] == 1 and ran["export_trajectory"] == 1 and ran["analyze_cell"] == 1
    assert ran["burn_in"] == 1 and ran["hessian"] == 1 and ran["gradient_noise"] == 1 and ran["compare_cell"] == 1
    assert "converge" not in ran and "prepare_data" not in ran
    assert wf.path("results/runs/lr0.03_bs32_mom0.9_wd0.005_seed0/record.npz").exists()
    assert set(xr.load_dataset(wf.path("results/trajectories/all_cells.nc"))["cell"].values) == {
        DEFAULT,
        "lr0.03_bs32_mom0.9_wd0.005_seed0",
        QUAD,
    }
    wf.cfg = cfg


def test_forcerun_of_one_stage_reruns_it_and_its_dependents(wf):
    ran = executed(wf.run("--forcerun", "analyze_cell"))
    assert ran["analyze_cell"] == 3 and ran["summarize"] == 1
    assert set(ran) == {"analyze_cell", "summarize", "plot", "predict", "results_tables"}
    # the figures that read the summary or predictions: msd, rotation, local_displacement, scaling, theory_modes
    assert ran["plot"] == 5


def test_one_target_file_reruns_exactly_that_stage(wf):
    target = f"results/trajectories/{DEFAULT}.nc"
    ran = executed(wf.run("--force", target))
    assert ran == collections.Counter({"export_trajectory": 1})
    planned = wf.planned_jobs()
    assert planned.get("analyze_cell") == 1 and planned.get("combine_trajectories") == 1
    assert "limiting_run" not in planned and "export_trajectory" not in planned
