"""Units and long names of the per-cell result tables (``summary``, ``predictions``
and ``modes``, CSV and NetCDF) in one place, so that every NetCDF variable built
from them carries CF ``units`` and ``long_name``. Torch-free.

:func:`describe` refuses a column it does not know: a new column is described
here before it can be written.
"""

from __future__ import annotations

_FIT = "exponent c of ||theta_t - theta_0||^2 ~ t^c fitted over the fit window"
_PARTS = {
    "c": "",
    "c_radial": ", radial part (change of tensor norms)",
    "c_angular": ", angular part (distance minus radial part)",
    "c_geodesic": ", scale-invariant tensors measured along their spheres",
}


def _fit_columns() -> dict[str, tuple[str, str]]:
    out = {}
    for name, part in _PARTS.items():
        out[name] = ("1", _FIT + part)
        out[f"{name}_low"] = ("1", f"lower end of the 95% bootstrap interval of {name}")
        out[f"{name}_high"] = ("1", f"upper end of the 95% bootstrap interval of {name}")
        out[f"{name}_log_prefactor"] = ("1", f"log prefactor of the power-law fit behind {name}")
    return out


COLUMNS: dict[str, tuple[str, str]] = {
    # index and hyperparameters (coordinates)
    "cell": ("1", "cell name (hyperparameters and seed)"),
    "mode": ("1", "Hessian eigenvector index at theta_0 (1 = largest eigenvalue)"),
    "lr": ("1", "learning rate"),
    "batch_size": ("1", "batch size S"),
    "momentum": ("1", "momentum beta"),
    "weight_decay": ("1", "weight decay"),
    "seed": ("1", "cell seed"),
    # summary: diffusion exponents (module diffusion)
    "burn_in_steps": ("1", "SGD steps before theta_0"),
    "steps": ("1", "SGD steps of the limiting run"),
    **_fit_columns(),
    "fit_t_start": ("1", "first step of the exponent fit window"),
    "fit_t_end": ("1", "last step of the exponent fit window"),
    "c_small_angle": ("1", "exponent c fitted over the decade ending at small_angle_steps (NaN if too short)"),
    "c_small_angle_low": ("1", "lower end of the 95% bootstrap interval of c_small_angle"),
    "c_small_angle_high": ("1", "upper end of the 95% bootstrap interval of c_small_angle"),
    "rotation_angle_fit_end": ("rad", "norm-weighted rms angle of the scale-invariant tensors at the fit end"),
    "small_angle_steps": ("1", "step at which the rms angle passes the small-angle limit (run length if never)"),
    "small_angle_fit": ("1", "1 if the whole fit window is inside the small-angle limit, else 0"),
    "stationarity_ratio": ("1", "largest over smallest rolling mean of the squared step"),
    "sq_step_mean": ("1", "stationary squared step ||theta_k - theta_{k-1}||^2 (mean over the window)"),
    "sq_step_stderr": ("1", "batch-means standard error of the stationary squared step"),
    "theory_scale": ("1", "lr^2 / (S (1 - beta^2)): squared step per unit gradient-noise trace"),
    "noise_trace_estimate": ("1", "sq_step_mean / theory_scale: implied gradient-noise trace"),
    "radial_fraction_end": ("1", "radial share of ||theta_t - theta_0||^2 at the last step"),
    "train_loss_start": ("nat", "full training-set cross-entropy at theta_0 (eval mode)"),
    "train_loss_end": ("nat", "full training-set cross-entropy at the last step (eval mode)"),
    "test_loss_start": ("nat", "test-set cross-entropy at theta_0 (eval mode)"),
    "test_loss_end": ("nat", "test-set cross-entropy at the last step (eval mode)"),
    "train_accuracy_start": ("1", "training-set accuracy at theta_0 (eval mode)"),
    "train_accuracy_end": ("1", "training-set accuracy at the last step (eval mode)"),
    "test_accuracy_start": ("1", "test-set accuracy at theta_0 (eval mode)"),
    "test_accuracy_end": ("1", "test-set accuracy at the last step (eval mode)"),
    # local-displacement predictions (module local_displacement)
    "sq_step_measured": ("1", "measured stationary squared step (every step of the window)"),
    "sq_step_measured_si": ("1", "measured stationary squared step of the scale-invariant tensors"),
    "sq_step_measured_other": ("1", "measured stationary squared step of the other tensors"),
    "sq_step_identity_si": ("1", "norm-equilibrium prediction 2 lr wd ||w||^2 / (1 + beta), scale-invariant tensors"),
    "sq_step_noise_si": ("1", "noise-formula prediction lr^2 E||g||^2 / (1 - beta^2), scale-invariant tensors"),
    "sq_step_noise_other": ("1", "noise-formula prediction lr^2 E||g||^2 / (1 - beta^2), other tensors"),
    "sq_step_predicted_noise": ("1", "predicted squared step, noise formula on every tensor"),
    "sq_step_predicted_identity": ("1", "predicted squared step, norm equilibrium on scale-invariant tensors"),
    "measured_over_noise": ("1", "sq_step_measured / sq_step_predicted_noise"),
    "measured_over_identity": ("1", "sq_step_measured / sq_step_predicted_identity"),
    "measured_over_noise_si": ("1", "sq_step_measured_si / sq_step_noise_si"),
    "measured_over_identity_si": ("1", "sq_step_measured_si / sq_step_identity_si"),
    "measured_over_noise_other": ("1", "sq_step_measured_other / sq_step_noise_other"),
    "identity_ratio_min": ("1", "smallest per-tensor measured / norm-equilibrium squared step"),
    "identity_ratio_median": ("1", "median per-tensor measured / norm-equilibrium squared step"),
    "identity_ratio_max": ("1", "largest per-tensor measured / norm-equilibrium squared step"),
    "other_fraction": ("1", "share of the measured squared step from tensors that are not scale-invariant"),
    "norm_drift_fraction": ("1", "drift of the scale-invariant norm relative to its equilibrium balance"),
    "grad_sq_norm": ("1", "mean squared norm of the minibatch gradient over the window, E||g_k||^2"),
    # predictions: snapshot noise and theory comparison (modules noise, comparison)
    "trace_cov_snapshot": ("1", "tr Cov(g_S) of independent minibatch gradients at theta_0"),
    "sq_step_predicted_snapshot": ("1", "lr^2 trace_cov_snapshot / (1 - beta^2)"),
    "measured_over_snapshot": ("1", "sq_step_measured / sq_step_predicted_snapshot"),
    "noise_curvature_slope": ("1", "slope of log noise variance against log eigenvalue over the modes (in-run)"),
    "c_sq_dist_measured": ("1", "exponent of the measured ||theta_t - theta_0||^2 over the lags"),
    "c_lag_msd_sketch": ("1", "exponent of the sketched lag-MSD"),
    "c_lag_msd_predicted": ("1", "exponent of the predicted lag-MSD (top modes plus bulk)"),
    "bulk_noise_fraction": ("1", "share of the predicted noise in the SLQ bulk"),
    "sketch_over_exact_sq_dist": ("1", "mean sketched over mean exact ||theta_t - theta_0||^2"),
    "grad_sq_norm_in_run": ("1", "mean squared minibatch-gradient norm over the stationary window"),
    "theory_agreement_lag": ("1", "lag up to which the predicted lag-MSD agrees with the measurement"),
    "eigenvectors_valid_steps": ("1", "median over modes of valid_steps"),
    # modes: per mode (module comparison) and the ratios of MODE_RATIOS
    "eigenvalue": ("1", "Hessian eigenvalue lam_i at the cell's theta_0"),
    "curvature_in_run": ("1", "slope of u_i^T g_k against u_i^T theta_{k-1} over the mode window"),
    "noise_var": ("1", "per-sample noise u_i^T C u_i from the in-run gradients"),
    "noise_var_snapshot": ("1", "per-sample noise u_i^T C u_i from independent minibatches at theta_0"),
    "position_var_measured": ("1", "variance of u_i^T (theta_t - theta_0) over the mode window"),
    "position_var_predicted": ("1", "stationary Var[x_i], exact discrete theory, in-run noise"),
    "position_var_predicted_snapshot": ("1", "stationary Var[x_i], exact discrete theory, noise at theta_0"),
    "velocity_var_measured": ("1", "variance of u_i^T v_t (momentum buffer) over the mode window"),
    "velocity_var_predicted": ("1", "stationary Var[v_i], exact discrete theory, in-run noise"),
    "velocity_var_predicted_snapshot": ("1", "stationary Var[v_i], exact discrete theory, noise at theta_0"),
    "position_velocity_cov_measured": ("1", "covariance of position and velocity projections"),
    "position_velocity_cov_predicted": ("1", "stationary Cov[x_i, v_i], exact discrete theory"),
    "oscillation_frequency_measured": ("1", "frequency (cycles per step) of the oscillator fitted to u_i^T v"),
    "oscillation_frequency_predicted": ("1", "damped frequency of the mean motion (cycles per step)"),
    "pole_radius_measured": ("1", "pole radius of the fitted oscillator (theory: sqrt(beta))"),
    "oscillator_fit_converged": ("1", "1 if the spectral fit converged"),
    "valid_steps": ("1", "last replayed step at which the eigenvector of theta_0 was still one"),
    "position_var_measured_over_predicted": ("1", "position_var_measured / position_var_predicted"),
    "velocity_var_measured_over_predicted": ("1", "velocity_var_measured / velocity_var_predicted"),
    "oscillation_frequency_measured_over_predicted": (
        "1",
        "oscillation_frequency_measured / oscillation_frequency_predicted",
    ),
    "position_var_measured_over_snapshot": ("1", "position_var_measured / position_var_predicted_snapshot"),
    "velocity_var_measured_over_snapshot": ("1", "velocity_var_measured / velocity_var_predicted_snapshot"),
    "curvature_in_run_over_eigenvalue": ("1", "curvature_in_run / eigenvalue"),
}


def describe(ds, columns: dict[str, tuple[str, str]] = COLUMNS):
    """Set ``units`` and ``long_name`` on every variable and coordinate of ``ds``
    from ``columns`` (name -> (units, long_name)); returns ``ds``. Raises
    ``KeyError`` naming the variables ``columns`` does not describe."""
    unknown = sorted(str(name) for name in ds.variables if name not in columns)
    if unknown:
        raise KeyError(f"no units or long_name for {', '.join(unknown)}: describe them in {__name__}")
    for name in ds.variables:
        units, long_name = columns[name]
        ds[name].attrs.update(units=units, long_name=long_name)
    return ds
