"""Every column of the result tables has units and a long_name (table_columns),
so that summary.nc and predictions.nc pass the CF checker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from cf_checker import cf_failures, check_cf

from limiting_dynamics import table_columns
from limiting_dynamics.provenance import stamp
from limiting_dynamics.trajectory import HYPERPARAMETER_ATTRS

# the default run's table headers (results/analysis/*.csv, besides the index and the hyperparameters)
SUMMARY = """burn_in_steps steps c c_low c_high c_geodesic c_geodesic_low c_geodesic_high c_small_angle
c_small_angle_low c_small_angle_high rotation_angle_fit_end small_angle_steps small_angle_fit
stationarity_ratio c_radial c_radial_low c_radial_high c_angular c_angular_low c_angular_high
sq_step_mean sq_step_stderr theory_scale noise_trace_estimate c_angular_log_prefactor
c_geodesic_log_prefactor c_log_prefactor c_radial_log_prefactor fit_t_end fit_t_start
grad_sq_norm equilibrium_ratio_max equilibrium_ratio_median equilibrium_ratio_min
measured_over_equilibrium_check measured_over_equilibrium_check_si measured_over_in_run_check
measured_over_in_run_check_other measured_over_in_run_check_si norm_drift_fraction
other_fraction radial_fraction_end sq_step_equilibrium_check_si sq_step_measured
sq_step_measured_other sq_step_measured_si sq_step_in_run_check_other sq_step_in_run_check_si
sq_step_equilibrium_check sq_step_in_run_check test_accuracy_end test_accuracy_start
test_loss_end test_loss_start train_accuracy_end train_accuracy_start train_loss_end
train_loss_start""".split()
PREDICTIONS = """sq_step_measured sq_step_stderr sq_step_in_run_check measured_over_in_run_check
sq_step_equilibrium_check measured_over_equilibrium_check sq_step_measured_si
sq_step_in_run_check_si sq_step_equilibrium_check_si measured_over_in_run_check_si
measured_over_equilibrium_check_si equilibrium_ratio_min equilibrium_ratio_median
equilibrium_ratio_max sq_step_measured_other sq_step_in_run_check_other
measured_over_in_run_check_other other_fraction norm_drift_fraction grad_sq_norm
stationarity_ratio trace_cov_independent sq_step_predicted measured_over_predicted
noise_curvature_slope c_sq_dist_measured c_lag_msd_sketch c_lag_msd_predicted
bulk_noise_fraction sketch_over_exact_sq_dist grad_sq_norm_in_run theory_agreement_lag
eigenvectors_valid_steps""".split()
MODES = """eigenvalue curvature_in_run noise_var_in_run noise_var_independent position_var_measured
position_var_in_run_check position_var_predicted velocity_var_measured
velocity_var_in_run_check velocity_var_predicted position_velocity_cov_measured
position_velocity_cov_predicted oscillation_frequency_measured oscillation_frequency_predicted
oscillation_frequency_cramer_rao position_var_window_bias position_var_window_sd velocity_var_window_bias
velocity_var_window_sd pole_radius_measured oscillator_fit_converged valid_steps rayleigh_quotient_over_eigenvalue
position_var_measured_over_in_run_check velocity_var_measured_over_in_run_check
oscillation_frequency_measured_over_predicted position_var_measured_over_predicted
velocity_var_measured_over_predicted curvature_in_run_over_eigenvalue""".split()


def _cell_table(columns, modes=None) -> xr.Dataset:
    """A table on ``cell`` (hyperparameters as coordinates), joined with one on (cell, mode), as the stages build it."""
    cells = ["lr0.02_bs64_mom0.9_wd0.005_seed0", "lr0.02_bs64_mom0.9_wd0.005_seed1"]
    hp = {"lr": 0.02, "batch_size": 64, "momentum": 0.9, "weight_decay": 0.005}
    df = pd.DataFrame({"cell": cells, **hp, "seed": [0, 1], **{c: [1.0, 2.0] for c in columns}}).set_index("cell")
    ds = xr.Dataset.from_dataframe(df).set_coords(list(HYPERPARAMETER_ATTRS))
    if modes:
        m = pd.DataFrame({"cell": np.repeat(cells, 3), "mode": [1, 2, 3] * 2, **{c: np.arange(6.0) for c in modes}})
        ds = xr.merge([ds, xr.Dataset.from_dataframe(m.set_index(["cell", "mode"]))], join="outer")
    return ds


@pytest.mark.parametrize("columns, modes", [(SUMMARY, None), (PREDICTIONS, MODES)], ids=["summary", "predictions"])
def test_describe_gives_every_table_column_units_and_a_long_name(columns, modes):
    ds = table_columns.describe(_cell_table(columns, modes))
    for name, var in ds.variables.items():
        assert var.attrs["long_name"] and var.attrs["units"], name


def test_a_described_table_passes_the_cf_checker(tmp_path):
    # a few columns: the checker's time grows with the square of the number of variables
    ds = stamp(table_columns.describe(_cell_table(PREDICTIONS[:3], MODES[:3])), "a described table", "test")
    ds.to_netcdf(tmp_path / "table.nc")
    check_cf(tmp_path / "table.nc")


def test_describe_refuses_a_column_it_does_not_know():
    ds = _cell_table(["c", "a_new_column"])
    with pytest.raises(KeyError, match="a_new_column"):
        table_columns.describe(ds)
    assert "long_name" not in ds["c"].attrs  # nothing set before the refusal


def test_check_cf_fails_on_a_coordinate_with_a_fill_value_and_a_variable_without_long_name(tmp_path):
    ds = xr.Dataset({"y": ("x", [1.0, 2.0])}, coords={"x": [0.5, 1.5]})
    ds["x"].attrs.update(units="1", long_name="x")
    stamp(ds, "a file CF rejects", "test")
    ds.to_netcdf(tmp_path / "bad.nc")  # xarray gives a float coordinate _FillValue NaN
    failures = "\n".join(cf_failures(tmp_path / "bad.nc"))
    assert "'x' must not have the _FillValue" in failures and "variable y" in failures
