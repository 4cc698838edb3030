"""Analysis stages (torch-free): diffusion per cell, the summary and the spread
between seeds, the predictions and consistency checks, and the results tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import xarray as xr

from .. import diffusion, matched_exponents, replicates, results_tables, table_columns, trajectory
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
        "family",
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


def cmd_matched_exponents(a) -> None:
    """``c`` of every run over windows of ``lr t / (1 - beta)`` and of the
    rotation angle that every run of its family covers (:mod:`.matched_exponents`)."""
    p = params(a)
    runs = []
    for f in a.inputs:
        with trajectory.open_trajectory(f) as ds:
            runs.append(matched_exponents.load_run(ds))
    table = matched_exponents.matched_table(runs, p)
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, float_format="%.6g")
    for family, g in table.groupby("family"):
        first = g.iloc[0]
        log(
            f"{family}: {len(g)} runs, tau in [{first['matched_time_lo']:.3g}, {first['matched_time_hi']:.3g}], "
            f"angle in [{first['matched_angle_lo']:.3g}, {first['matched_angle_hi']:.3g}] rad; "
            f"c at matched tau {g['c_matched_time'].min():.3f}-{g['c_matched_time'].max():.3f}"
        )


COMPARISON_COLUMNS = (
    "noise_curvature_slope",
    "noise_curvature_slope_in_run",
    "c_sq_dist_measured",
    "c_lag_msd_sketch",
    "c_lag_msd_predicted",
    "c_lag_msd_predicted_isotropic",
    "c_lag_msd_predicted_c_like_h",
    "bulk_noise_fraction",
    "bulk_noise_slope",
    "sketch_over_exact_sq_dist",
    "grad_sq_norm_in_run",
    "theory_agreement_lag",
    "lag_msd_ratio_mode_window_min",
    "lag_msd_ratio_mode_window_max",
    "lag_msd_ratio_isotropic_mode_window_min",
    "lag_msd_ratio_isotropic_mode_window_max",
    "bulk_modes_near_zero",
    "noise_weighted_curvature_bulk",
    "near_zero_noise_share",
    "near_zero_noise_share_raw",
    "lag_msd_z_mode_window_max",
    "lag_msd_relative_sd_mode_window_max",
    "lag_msd_exact_ratio_mode_window_min",
    "lag_msd_exact_ratio_mode_window_max",
    "lag_msd_exact_z_mode_window_max",
    "single_anchor_sd_ratio_mode_window_min",
    "single_anchor_sd_ratio_mode_window_max",
    "sketch_over_exact_lag1",
    "lag_at_window_end",
    "exact_ratio_at_window_end",
    "exact_predicted_sd_at_window_end",
    "exact_distance_at_window_end",
    "lag_at_window_tenth",
    "exact_ratio_at_window_tenth",
    "exact_predicted_sd_at_window_tenth",
    "exact_distance_at_window_tenth",
    "eigenvectors_valid_steps",
    "mode_window_end",
)


PREDICTION_COLUMNS = (
    "sq_step_measured",
    "sq_step_stderr",
    "sq_step_in_run_check",
    "measured_over_in_run_check",
    "sq_step_equilibrium_check",
    "measured_over_equilibrium_check",
    "sq_step_measured_si",
    "sq_step_in_run_check_si",
    "sq_step_equilibrium_check_si",
    "measured_over_in_run_check_si",
    "measured_over_equilibrium_check_si",
    "equilibrium_ratio_min",
    "equilibrium_ratio_median",
    "equilibrium_ratio_max",
    "sq_step_measured_other",
    "sq_step_in_run_check_other",
    "measured_over_in_run_check_other",
    "other_fraction",
    "norm_drift_fraction",
    "grad_sq_norm",
    "momentum_gradient_correlation",
    "scale_invariant_declared",
    "scale_invariant_measured",
    "scale_invariant_disagreements",
    "scale_invariant_cosine_max",
    "other_cosine_min",
    "stationarity_ratio",
)


MODE_RATIOS = {  # per-mode ratio column -> (numerator, denominator)
    "position_var_measured_over_in_run_check": ("position_var_measured", "position_var_in_run_check"),
    "velocity_var_measured_over_in_run_check": ("velocity_var_measured", "velocity_var_in_run_check"),
    "oscillation_frequency_measured_over_predicted": (
        "oscillation_frequency_measured",
        "oscillation_frequency_predicted",
    ),
    "position_var_measured_over_predicted": ("position_var_measured", "position_var_predicted"),
    "velocity_var_measured_over_predicted": ("velocity_var_measured", "velocity_var_predicted"),
    "curvature_in_run_over_eigenvalue": ("curvature_in_run", "eigenvalue"),
}


def cmd_predict(a) -> None:
    """Per cell, the prediction of the local displacement from the noise of
    independent minibatches along the run (``lr^2 tr Cov(g_S) / (1 - beta^2)``),
    the two consistency checks from the cell analyses (in-run noise formula,
    norm equilibrium), and the per-mode comparisons; reads no model (torch-free)."""
    independent = {}
    for f in a.noise or []:
        with open_result(f, "noise") as nz:
            trace = nz.trace_cov_at_point.values
            independent[str(nz.attrs["cell"])] = {
                "trace_cov_independent": float(nz.attrs["trace_cov"]),
                "trace_cov_theta0": float(trace[0]),
                "trace_cov_change": float((trace[-1] - trace[0]) / trace.mean()),
                "noise_points": len(trace),
            }
    rows = []
    for ana in a.analyses:
        m = json.loads(Path(ana).read_text())
        row = {"cell": m["cell"], **{k: m[k] for k in trajectory.HYPERPARAMETER_ATTRS}}
        row.update({k: m[k] for k in PREDICTION_COLUMNS})
        if m["cell"] in independent:
            row.update(independent[m["cell"]])
            row["sq_step_predicted"] = m["lr"] ** 2 * row["trace_cov_independent"] / (1 - m["momentum"] ** 2)
            row["measured_over_predicted"] = m["sq_step_measured"] / row["sq_step_predicted"]
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
        title = "predictions and consistency checks against measurements per cell"
        write_netcdf(cell_table_dataset(df, title, "predict", modes), a.out_nc)


def cmd_results_tables(a) -> None:
    p = params(a)
    summary = pd.read_csv(a.summary, index_col="cell")
    predictions = pd.read_csv(a.predictions, index_col="cell")
    modes = pd.read_csv(a.modes)
    matched = pd.read_csv(a.matched, index_col="cell") if a.matched else None
    text = results_tables.render(
        summary,
        predictions,
        modes,
        p["default_cell"],
        {"date": now_iso(), "git": git_revision(), "machine": results_tables.machine()},
        matched,
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
