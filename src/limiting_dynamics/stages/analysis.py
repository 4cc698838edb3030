"""Analysis stages (torch-free): diffusion per cell, the summary and the spread
between seeds, the parameter-free predictions, and the results tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import xarray as xr

from .. import diffusion, replicates, results_tables, table_columns, trajectory
from ..atomic import atomic_path, write_json, write_netcdf
from ..provenance import git_revision, now_iso, stamp
from ..result_files import open_result
from ..trajectory import HYPERPARAMETER_ATTRS
from .common import log, params


def cmd_analyze_cell(a) -> None:
    p = params(a)
    ds = trajectory.open_trajectory(a.trajectory)
    row = diffusion.analyze_trajectory(ds, p)
    row["cell"] = ds.attrs["cell"]
    write_json(row, a.out)
    log(
        f"{row['cell']}: c = {row['c']:.3f} [{row['c_low']:.3f}, {row['c_high']:.3f}], "
        f"stationary sq_step = {row['sq_step_mean']:.4g} ± {row['sq_step_stderr']:.2g}"
    )


def cmd_summarize(a) -> None:
    rows = [json.loads(Path(f).read_text()) for f in a.inputs]
    df = pd.DataFrame(rows)
    lead = [
        "cell",
        *HYPERPARAMETER_ATTRS,
        "burn_in_steps",
        "steps",
        "c",
        "c_low",
        "c_high",
        "c_geodesic",
        "c_geodesic_low",
        "c_geodesic_high",
        "c_small_angle",
        "c_small_angle_low",
        "c_small_angle_high",
        "rotation_angle_fit_end",
        "small_angle_steps",
        "small_angle_fit",
        "stationarity_ratio",
        "c_radial",
        "c_radial_low",
        "c_radial_high",
        "c_angular",
        "c_angular_low",
        "c_angular_high",
        "sq_step_mean",
        "sq_step_stderr",
        "theory_scale",
        "noise_trace_estimate",
    ]
    df = df[lead + [c for c in df.columns if c not in lead]].set_index("cell")
    with atomic_path(a.out_csv) as tmp:
        df.to_csv(tmp, float_format="%.6g")
    write_netcdf(cell_table_dataset(df, "diffusion summary per cell", "summarize"), a.out_nc)
    agg = replicates.aggregate(df)
    with atomic_path(a.out_replicates) as tmp:
        agg.to_csv(tmp, index=False, float_format="%.6g")
    log(f"summary of {len(df)} cells ({len(agg)} hyperparameter cells) -> {a.out_csv}, {a.out_nc}, {a.out_replicates}")


COMPARISON_COLUMNS = (
    "noise_curvature_slope",
    "c_sq_dist_measured",
    "c_lag_msd_sketch",
    "c_lag_msd_predicted",
    "bulk_noise_fraction",
    "sketch_over_exact_sq_dist",
    "grad_sq_norm_in_run",
    "theory_agreement_lag",
    "eigenvectors_valid_steps",
)


PREDICTION_COLUMNS = (
    "sq_step_measured",
    "sq_step_stderr",
    "sq_step_predicted_noise",
    "measured_over_noise",
    "sq_step_predicted_identity",
    "measured_over_identity",
    "sq_step_measured_si",
    "sq_step_noise_si",
    "sq_step_identity_si",
    "measured_over_noise_si",
    "measured_over_identity_si",
    "identity_ratio_min",
    "identity_ratio_median",
    "identity_ratio_max",
    "sq_step_measured_other",
    "sq_step_noise_other",
    "measured_over_noise_other",
    "other_fraction",
    "norm_drift_fraction",
    "grad_sq_norm",
    "stationarity_ratio",
)


MODE_RATIOS = {  # per-mode ratio column -> (numerator, denominator)
    "position_var_measured_over_predicted": ("position_var_measured", "position_var_predicted"),
    "velocity_var_measured_over_predicted": ("velocity_var_measured", "velocity_var_predicted"),
    "oscillation_frequency_measured_over_predicted": (
        "oscillation_frequency_measured",
        "oscillation_frequency_predicted",
    ),
    "position_var_measured_over_snapshot": ("position_var_measured", "position_var_predicted_snapshot"),
    "velocity_var_measured_over_snapshot": ("velocity_var_measured", "velocity_var_predicted_snapshot"),
    "curvature_in_run_over_eigenvalue": ("curvature_in_run", "eigenvalue"),
}


def cmd_predict(a) -> None:
    """Both parameter-free predictions of the local displacement per cell (from
    the cell analyses), the one from the noise at the snapshot theta_0 where it
    was measured, and the per-mode comparisons; reads no model (torch-free)."""
    snapshot = {}
    for f in a.noise or []:
        attrs = dict(open_result(f, "noise").attrs)
        snapshot[str(attrs["cell"])] = float(attrs["trace_cov"])
    rows = []
    for ana in a.analyses:
        m = json.loads(Path(ana).read_text())
        row = {"cell": m["cell"], **{k: m[k] for k in trajectory.HYPERPARAMETER_ATTRS}}
        row.update({k: m[k] for k in PREDICTION_COLUMNS})
        if m["cell"] in snapshot:  # the noise of independent minibatches at theta_0 alone
            row["trace_cov_snapshot"] = snapshot[m["cell"]]
            row["sq_step_predicted_snapshot"] = m["lr"] ** 2 * snapshot[m["cell"]] / (1 - m["momentum"] ** 2)
            row["measured_over_snapshot"] = m["sq_step_measured"] / row["sq_step_predicted_snapshot"]
        rows.append(row)
    df = pd.DataFrame(rows).set_index("cell")
    mode_rows = []
    for f in a.comparisons or []:
        with open_result(f, "comparison") as cmp:
            cell = str(cmp.attrs["cell"])
            for key in COMPARISON_COLUMNS:
                if key in cmp.attrs:
                    df.loc[cell, key] = float(cmp.attrs[key])
            if "mode" in cmp.dims:
                per_mode = cmp[[v for v in cmp.data_vars if cmp[v].dims == ("mode",)]].to_dataframe()
                mode_rows.append(per_mode.reset_index().assign(cell=cell))
    modes = pd.concat(mode_rows) if mode_rows else pd.DataFrame(columns=["cell", "mode"])
    modes = modes[["cell", "mode"] + [c for c in modes.columns if c not in ("cell", "mode")]]
    for name, (num, den) in MODE_RATIOS.items():
        if num in modes and den in modes:
            modes[name] = modes[num] / modes[den]
    with atomic_path(a.out_csv) as tmp:
        df.to_csv(tmp, float_format="%.6g")
    if a.out_modes:
        with atomic_path(a.out_modes) as tmp:
            modes.to_csv(tmp, index=False, float_format="%.6g")
    if a.out_nc:
        title = "parameter-free predictions against measurements per cell"
        write_netcdf(cell_table_dataset(df, title, "predict", modes), a.out_nc)
    log(
        "measured / predicted sq_step (noise formula, norm equilibrium): "
        + ", ".join(f"{c} {r.measured_over_noise:.2f} {r.measured_over_identity:.2f}" for c, r in df.iterrows())
    )


def cmd_tables(a) -> None:
    p = params(a)
    summary = pd.read_csv(a.summary, index_col="cell")
    predictions = pd.read_csv(a.predictions, index_col="cell")
    modes = pd.read_csv(a.modes)
    text = results_tables.render(
        summary,
        predictions,
        modes,
        p["default"],
        {"date": now_iso(), "git": git_revision(), "machine": results_tables.machine()},
    )
    with atomic_path(a.out) as tmp:
        Path(tmp).write_text(text + "\n")
    log(f"results tables of {len(summary)} runs -> {a.out}")


def cell_table_dataset(df, title: str, command: str, modes=None):
    """A table with one row per cell (index ``cell``) as a NetCDF data set with
    the hyperparameters as coordinates and the provenance every result file
    carries (the CSV files have none); ``modes``, a table on ``(cell, mode)``,
    joins it on those two dimensions."""
    ds = xr.Dataset.from_dataframe(df).set_coords(list(HYPERPARAMETER_ATTRS))
    if modes is not None and len(modes):
        per_mode = xr.Dataset.from_dataframe(modes.astype({"mode": int}).set_index(["cell", "mode"]))
        ds = xr.merge([ds, per_mode], join="outer")
    table_columns.describe(ds)
    return stamp(ds, f"Limiting dynamics of SGD: {title}", command)
