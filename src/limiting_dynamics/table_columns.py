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


# the Hessian files (result_files.hessian_dataset)
HESSIAN: dict[str, tuple[str, str]] = {
    "hessian_eigenvalues": ("1", "top eigenvalues of the training-loss Hessian at theta_0 (descending)"),
    "hessian_eigenvalue_residual": ("1", "Lanczos residual estimate |beta_m s_m| of each eigenpair"),
    "hessian_eigenvectors": ("1", "unit eigenvectors over the flattened trainable parameters"),
    "slq_nodes": ("1", "stochastic Lanczos quadrature nodes (Ritz values) per probe vector"),
    "slq_weights": ("1", "stochastic Lanczos quadrature weights per probe vector"),
    "spectral_density": ("1", "Gaussian-smoothed spectral density of the Hessian (integrates to 1)"),
    "tensor_size": ("1", "scalars per parameter tensor (order of the flattened parameters)"),
    "mode": ("1", "Hessian eigen-mode at theta_0 (1 = largest eigenvalue)"),
    "eigenvalue": ("1", "Hessian eigenvalue (grid of the spectral density)"),
    "tensor": ("1", "parameter tensor name (model.named_parameters order)"),
}

# per mode (module comparison): the comparison files and the modes table
MODE_COLUMNS: dict[str, tuple[str, str]] = {
    "eigenvalue": ("1", "Hessian eigenvalue lam_i at the cell's theta_0"),
    "underdamped": ("1", "1 if the mode oscillates: lr (lam + wd) > (1 - sqrt(beta))^2 (and is stable)"),
    "curvature_in_run": ("1", "slope of u_i^T g_k against u_i^T theta_{k-1} over the mode window (curvature felt)"),
    "curvature_along_run": ("1", "the same slope over each block of the run"),
    "noise_var_in_run": (
        "1",
        "per-sample noise sigma_i^2 = u_i^T C u_i from the in-run gradients over the mode window",
    ),
    "noise_var_independent": (
        "1",
        "per-sample noise sigma_i^2 from independent minibatches at the noise points of the mode window",
    ),
    "position_var_measured": ("1", "variance of u_i^T (theta_t - theta_0) over the mode window"),
    "position_var_predicted": ("1", "prediction: stationary Var[x_i], exact discrete theory, independent noise"),
    "position_var_in_run_check": ("1", "consistency check: stationary Var[x_i], exact discrete theory, in-run noise"),
    "velocity_var_measured": ("1", "variance of u_i^T v_t (momentum buffer) over the mode window"),
    "velocity_var_predicted": ("1", "prediction: stationary Var[v_i], exact discrete theory, independent noise"),
    "velocity_var_in_run_check": ("1", "consistency check: stationary Var[v_i], exact discrete theory, in-run noise"),
    "position_velocity_cov_measured": ("1", "covariance of position and velocity projections"),
    "position_velocity_cov_predicted": ("1", "prediction: stationary Cov[x_i, v_i], exact discrete theory"),
    "oscillation_frequency_measured": (
        "1",
        "pole angle / 2 pi of the damped oscillator fitted to the spectrum of u_i^T v over the mode window "
        "(cycles per step)",
    ),
    "oscillation_frequency_predicted": (
        "1",
        "prediction: damped frequency of the mean motion (cycles per step; 0 if overdamped)",
    ),
    "pole_radius_measured": ("1", "pole radius of the fitted oscillator (theory: sqrt(beta))"),
    "oscillation_frequency_cramer_rao": (
        "1",
        "smallest relative standard deviation of any unbiased frequency estimate from the mode window "
        "(Cramer-Rao, the predicted oscillator; NaN if overdamped)",
    ),
    "position_var_window_bias": (
        "1",
        "expected position_var_measured / position_var_predicted for one window of the mode window's length "
        "(below 1: the window's own mean takes out the slowest fluctuations)",
    ),
    "position_var_window_sd": (
        "1",
        "standard deviation of position_var_measured / position_var_predicted over windows of the mode "
        "window's length (stationary Gaussian mode)",
    ),
    "velocity_var_window_bias": ("1", "expected velocity_var_measured / velocity_var_predicted for one window"),
    "velocity_var_window_sd": (
        "1",
        "standard deviation of velocity_var_measured / velocity_var_predicted over windows",
    ),
    "oscillator_fit_converged": (
        "1",
        "1 if the spectral fit converged to an oscillation (0: the optimiser failed, or the pole angle went "
        "to its bound: no oscillation found in the window)",
    ),
    "rayleigh_quotient_over_eigenvalue": (
        "1",
        "u_i^T H u_i of the Hessian at the last drift step of the mode window over the eigenvalue at "
        "theta_0 (eigenvector-drift stage)",
    ),
    "valid_steps": ("1", "last drift step at which the eigenvector of theta_0 had a relative residual below 0.5"),
}

# the comparison files' axes and lag-MSD curves, with MODE_COLUMNS what compare_cell writes
COMPARISON: dict[str, tuple[str, str]] = {
    "mode": ("1", "Hessian eigenvector index at theta_0 (1 = largest eigenvalue)"),
    "lag": ("1", "lag tau (SGD steps); for sq_dist_from_start the number of steps since theta_0"),
    "block": ("1", "last step of a block of the run over which the curvature along each eigenvector is fitted"),
    "lag_msd_predicted_top": ("1", "stationary lag-MSD of the top modes alone (theory, independent noise)"),
    "sq_dist_from_start_predicted_sd": (
        "1",
        "predicted standard deviation of ||theta_t - theta_0||^2 about lag_msd_predicted at t = lag (one "
        "anchor, stationary Gaussian modes)",
    ),
    "lag_msd_predicted_sd": (
        "1",
        "predicted standard deviation of one run's time-averaged lag-MSD about lag_msd_predicted (stationary "
        "Gaussian modes; the sketch's projection included)",
    ),
    "lag_msd_predicted": (
        "1",
        "prediction: stationary lag-MSD of top modes plus SLQ bulk, independent noise, bulk noise ~ lam^s "
        "with s the slope measured on the top modes",
    ),
    "lag_msd_predicted_isotropic": (
        "1",
        "the same with the bulk's noise spread evenly over all its modes, the near-zero cluster (Ritz values "
        "<= 0, taken as curvature 0) included (s = 0)",
    ),
    "lag_msd_predicted_c_like_h": ("1", "the same with the bulk's noise proportional to curvature (s = 1, C ~ H)"),
    "sq_dist_from_start_measured": ("1", "measured ||theta_t - theta_0||^2 at t = lag"),
    "lag_msd_sketch": ("1", "measured lag-MSD, time average of ||S(theta_{t+tau} - theta_t)||^2"),
    "sq_dist_single_anchor_sd_sketch": (
        "1",
        "standard deviation over anchors t of ||S(theta_{t+tau} - theta_t)||^2: one anchor's scatter as the run "
        "shows it",
    ),
    "sq_dist_single_anchor_sd_sketch_predicted": (
        "1",
        "predicted standard deviation of one anchor's ||S(theta_{t+tau} - theta_t)||^2: that of the exact value "
        "(sq_dist_from_start_predicted_sd) with the sketch's own scatter added",
    ),
    **MODE_COLUMNS,
}


COLUMNS: dict[str, tuple[str, str]] = {
    # index and hyperparameters (coordinates)
    "cell": ("1", "cell name (hyperparameters and seed)"),
    "mode": COMPARISON["mode"],
    "lr": ("1", "learning rate"),
    "batch_size": ("1", "batch size S"),
    "momentum": ("1", "momentum beta"),
    "weight_decay": ("1", "weight decay"),
    "seed": ("1", "cell seed"),
    # summary: diffusion exponents (module diffusion)
    "family": ("1", "cell family: spherical (norms at equilibrium) or quadratic (small lr and lr x wd)"),
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
    "noise_trace_estimate": (
        "1",
        "calibrated from the step itself: sq_step_mean / theory_scale, the tr C the step implies (no prediction)",
    ),
    "radial_fraction_end": ("1", "radial share of ||theta_t - theta_0||^2 at the last step"),
    "train_loss_start": ("nat", "full training-set cross-entropy at theta_0 (eval mode)"),
    "train_loss_end": ("nat", "full training-set cross-entropy at the last step (eval mode)"),
    "test_loss_start": ("nat", "test-set cross-entropy at theta_0 (eval mode)"),
    "test_loss_end": ("nat", "test-set cross-entropy at the last step (eval mode)"),
    "train_accuracy_start": ("1", "training-set accuracy at theta_0 (eval mode)"),
    "train_accuracy_end": ("1", "training-set accuracy at the last step (eval mode)"),
    "test_accuracy_start": ("1", "test-set accuracy at theta_0 (eval mode)"),
    "test_accuracy_end": ("1", "test-set accuracy at the last step (eval mode)"),
    # local displacement (module local_displacement): measured, and two consistency checks
    "sq_step_relative_drift": (
        "1",
        "linear trend of the step over the stationary window, first to last step, over its mean",
    ),
    "sq_step_relative_drift_stderr": ("1", "standard error of sq_step_relative_drift (batch means)"),
    "sq_step_stationary": ("1", "1 if |sq_step_relative_drift| < max(0.1, 3 standard errors)"),
    "sq_step_measured": ("1", "measured stationary squared step (every step of the window)"),
    "sq_step_measured_si": ("1", "measured stationary squared step of the measured scale-invariant tensors"),
    "sq_step_measured_other": ("1", "measured stationary squared step of the other tensors"),
    "sq_step_equilibrium_check_si": (
        "1",
        "consistency check (norm equilibrium, an identity at stationarity): 2 lr wd ||w||^2 / (1 + beta), "
        "scale-invariant tensors",
    ),
    "sq_step_in_run_check_si": (
        "1",
        "consistency check (in-run gradients): lr^2 E||g||^2 / (1 - beta^2), scale-invariant tensors",
    ),
    "sq_step_in_run_check_other": ("1", "consistency check (in-run gradients): the same, other tensors"),
    "sq_step_in_run_check": ("1", "consistency check: lr^2 E||g||^2 / (1 - beta^2) with the in-run gradients"),
    "sq_step_equilibrium_check": (
        "1",
        "consistency check: norm equilibrium on the scale-invariant tensors, in-run formula on the rest",
    ),
    "measured_over_in_run_check": ("1", "sq_step_measured / sq_step_in_run_check (consistency check)"),
    "measured_over_equilibrium_check": ("1", "sq_step_measured / sq_step_equilibrium_check (consistency check)"),
    "measured_over_in_run_check_si": ("1", "sq_step_measured_si / sq_step_in_run_check_si"),
    "measured_over_equilibrium_check_si": ("1", "sq_step_measured_si / sq_step_equilibrium_check_si"),
    "measured_over_in_run_check_other": ("1", "sq_step_measured_other / sq_step_in_run_check_other"),
    "equilibrium_ratio_min": ("1", "smallest per-tensor measured / norm-equilibrium squared step"),
    "equilibrium_ratio_median": ("1", "median per-tensor measured / norm-equilibrium squared step"),
    "equilibrium_ratio_max": ("1", "largest per-tensor measured / norm-equilibrium squared step"),
    "other_fraction": ("1", "share of the measured squared step from tensors that are not scale-invariant"),
    "norm_drift_fraction": ("1", "drift of the scale-invariant norm relative to its equilibrium balance"),
    "grad_sq_norm": ("1", "mean squared norm of the in-run minibatch gradient over the window, E||g_k||^2"),
    "momentum_gradient_correlation": (
        "1",
        "sum E<v_{k-1}, g_k> / sqrt(E||v||^2 E||g||^2): what the in-run check measures besides the noise",
    ),
    "scale_invariant_declared": ("1", "tensors declared scale-invariant (weights feeding a BatchNorm)"),
    "scale_invariant_measured": ("1", "tensors measured scale-invariant (median |cos(theta, g)| below 1e-2)"),
    "scale_invariant_disagreements": ("1", "tensors on which the declared and measured sets disagree"),
    "scale_invariant_cosine_max": ("1", "largest median |cos(theta, g)| among the measured scale-invariant tensors"),
    "other_cosine_min": ("1", "smallest median |cos(theta, g)| among the other tensors"),
    # the prediction from independent noise (module noise) and the theory comparison (module comparison)
    "trace_cov_independent": (
        "1",
        "tr Cov(g_S) of independent minibatch gradients, mean over the noise points of the run",
    ),
    "trace_cov_theta0": ("1", "tr Cov(g_S) of independent minibatch gradients at theta_0"),
    "trace_cov_change": ("1", "change of tr Cov(g_S) from theta_0 to the last noise point over its mean"),
    "noise_points": ("1", "points of the run at which the independent noise was measured"),
    "sq_step_predicted": ("1", "prediction: lr^2 trace_cov_independent / (1 - beta^2)"),
    "measured_over_predicted": ("1", "sq_step_measured / sq_step_predicted"),
    "noise_curvature_slope": (
        "1",
        "slope of log independent noise u^T C u against log eigenvalue over the top modes (1 if C ~ H)",
    ),
    "noise_curvature_slope_in_run": ("1", "the same slope with the in-run noise over the mode window"),
    "c_sq_dist_measured": ("1", "exponent of the measured ||theta_t - theta_0||^2 over the lags"),
    "c_lag_msd_sketch": ("1", "exponent of the sketched lag-MSD"),
    "c_lag_msd_predicted": ("1", "exponent of the predicted lag-MSD (independent noise; bulk noise ~ lam^s)"),
    "c_lag_msd_predicted_isotropic": (
        "1",
        "the same with the bulk's noise spread evenly over all its modes, near-zero cluster included (s = 0)",
    ),
    "lag_msd_ratio_isotropic_mode_window_min": (
        "1",
        "smallest measured / predicted lag-MSD over the mode window with the bulk's noise spread evenly (s = 0)",
    ),
    "lag_msd_ratio_isotropic_mode_window_max": (
        "1",
        "largest measured / predicted lag-MSD over the mode window with the bulk's noise spread evenly (s = 0)",
    ),
    "noise_weighted_curvature_bulk": (
        "1",
        "tr(H C) / tr C of independent minibatch noise outside the top eigenvectors (Hessian stage): the bulk's "
        "curvature weighted by its noise",
    ),
    "near_zero_noise_share": (
        "1",
        "share of the bulk's noise in the near-zero cluster that reproduces noise_weighted_curvature_bulk with the "
        "rest spread as lam^s (clipped to [0, 1]; NaN: not measured)",
    ),
    "near_zero_noise_share_raw": ("1", "the same before clipping (outside [0, 1]: the two-part model does not fit)"),
    "bulk_modes_near_zero": (
        "1",
        "bulk modes at Ritz values <= 0 (the near-zero cluster), taken as curvature 0 in the lag-MSD prediction",
    ),
    "c_lag_msd_predicted_c_like_h": ("1", "the same with the bulk's noise proportional to curvature (s = 1)"),
    "bulk_noise_fraction": ("1", "share of the independent tr C outside the top modes (the SLQ bulk)"),
    "bulk_noise_slope": ("1", "s of the bulk's noise ~ lam^s used in lag_msd_predicted (measured on top modes)"),
    "sketch_over_exact_sq_dist": ("1", "mean sketched over mean exact ||theta_t - theta_0||^2"),
    "grad_sq_norm_in_run": ("1", "mean squared minibatch-gradient norm over the stationary window"),
    "theory_agreement_lag": ("1", "lag up to which the predicted lag-MSD is within 25% of the measurement"),
    "lag_msd_ratio_mode_window_min": ("1", "smallest measured / predicted lag-MSD over lags in the mode window"),
    "lag_msd_ratio_mode_window_max": ("1", "largest measured / predicted lag-MSD over lags in the mode window"),
    "lag_msd_z_mode_window_max": (
        "1",
        "largest |measured - predicted| lag-MSD in units of the predicted sampling standard deviation of one run, "
        "over lags in the mode window",
    ),
    "lag_msd_relative_sd_mode_window_max": (
        "1",
        "largest predicted sampling standard deviation of one run's lag-MSD relative to its mean, over the mode window",
    ),
    "lag_msd_exact_ratio_mode_window_min": (
        "1",
        "smallest exact ||theta_t - theta_0||^2 / predicted lag-MSD at t = lag, over lags in the mode window "
        "(one anchor)",
    ),
    "lag_msd_exact_ratio_mode_window_max": (
        "1",
        "largest exact ||theta_t - theta_0||^2 / predicted lag-MSD at t = lag, over lags in the mode window "
        "(one anchor)",
    ),
    "lag_msd_exact_z_mode_window_max": (
        "1",
        "largest |exact ||theta_t - theta_0||^2 - predicted lag-MSD| in units of its predicted one-anchor standard "
        "deviation, over lags in the mode window",
    ),
    "single_anchor_sd_ratio_mode_window_min": (
        "1",
        "smallest standard deviation over anchors of the sketched ||theta_{t+lag} - theta_t||^2 (one anchor's scatter "
        "as the run shows it) over its predicted value through the sketch, over lags in the mode window (consistency "
        "check of the predicted scatter)",
    ),
    "single_anchor_sd_ratio_mode_window_max": (
        "1",
        "largest such ratio over lags in the mode window",
    ),
    "sketch_over_exact_lag1": ("1", "the sketch's time-averaged lag-1 MSD over the exact mean squared step"),
    "lag_at_window_end": ("1", "the longest lag of the mode window (steps)"),
    "exact_ratio_at_window_end": (
        "1",
        "exact ||theta_t - theta_0||^2 / predicted lag-MSD at t = lag_at_window_end (one anchor; the seeds of a cell "
        "are independent anchors, so their spread measures one anchor's scatter)",
    ),
    "exact_predicted_sd_at_window_end": (
        "1",
        "predicted standard deviation of that ratio for one anchor "
        "(sq_dist_from_start_predicted_sd / lag_msd_predicted)",
    ),
    "exact_distance_at_window_end": (
        "1",
        "the exact ||theta_t - theta_0||^2 at t = lag_at_window_end: its spread between seeds tests one anchor's "
        "scatter apart from the predictions, whose inputs differ from seed to seed",
    ),
    "lag_at_window_tenth": ("1", "the lag of the mode window nearest a tenth of its longest (steps)"),
    "exact_ratio_at_window_tenth": ("1", "exact_ratio_at_window_end, at lag_at_window_tenth"),
    "exact_predicted_sd_at_window_tenth": ("1", "exact_predicted_sd_at_window_end, at lag_at_window_tenth"),
    "exact_distance_at_window_tenth": ("1", "exact_distance_at_window_end, at lag_at_window_tenth"),
    "eigenvectors_valid_steps": ("1", "median over modes of valid_steps"),
    "mode_window_end": ("1", "last step of the mode window"),
    # modes: per mode (module comparison) and the ratios of MODE_RATIOS
    **MODE_COLUMNS,
    "position_var_measured_over_in_run_check": ("1", "position_var_measured / position_var_in_run_check"),
    "velocity_var_measured_over_in_run_check": ("1", "velocity_var_measured / velocity_var_in_run_check"),
    "oscillation_frequency_measured_over_predicted": (
        "1",
        "oscillation_frequency_measured / oscillation_frequency_predicted",
    ),
    "position_var_measured_over_predicted": ("1", "position_var_measured / position_var_predicted"),
    "velocity_var_measured_over_predicted": ("1", "velocity_var_measured / velocity_var_predicted"),
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
