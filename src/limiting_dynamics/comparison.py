"""Theory vs experiment for one cell of the ResNet experiment, without fitted constants.

Inputs are measurements at the cell's theta_0 (after its burn-in): the Hessian
(top eigenpairs and the SLQ spectral density) and the minibatch gradient noise
at the cell's batch size (its total ``tr Cov(g_S)`` and the variance along each
top eigenvector), plus the cell's hyperparameters. The theory engine
(:mod:`.theory`, exact discrete recursion) turns them into predictions:

* per top mode: stationary position and velocity variance, and the frequency
  at which the position's power spectrum peaks;
* the stationary lag-MSD ``E||theta_{t+tau} - theta_t||^2``: the top modes with
  their measured noise, plus the bulk of the spectrum from the SLQ quadrature
  nodes (multiplicity ``P x weight``), whose noise is the measured remainder
  ``tr Cov(g_S) - sum_top u_i^T Cov(g_S) u_i`` spread in proportion to the
  eigenvalue (``C ~ H`` in the bulk, the paper's assumption, checked on the top
  modes by :func:`noise_curvature_slope`). theta_0 is a sample of the
  stationary state, so the same curve predicts ``E||theta_t - theta_0||^2``.

The measured side: variances and spectra of the recorded projections
(``mode_position``, ``mode_velocity``) and the lag-MSD of the block-sign
sketch. Noise is converted to the theory's per-sample ``sigma^2 = u^T C u``
with the sampling scheme's finite-population factor, so the theory's own
``replacement``/``reshuffle`` treatment applies.
"""

from __future__ import annotations

import numpy as np
import scipy.signal
import xarray as xr

from . import theory


def per_sample_noise_var(minibatch_var, batch_size: int, sampling: str, n_train: int):
    """``sigma^2 = u^T C u`` from the measured variance of the minibatch gradient along ``u``.

    With replacement ``Var = sigma^2 / S``; for one batch of a random
    permutation ``Var = (sigma^2 / S)(N - S)/(N - 1)``.
    """
    var = np.asarray(minibatch_var, dtype=float) * batch_size
    if sampling == "reshuffle":
        var = var * (n_train - 1) / (n_train - batch_size)
    return var


def noise_curvature_slope(eigvals, noise_var) -> float:
    """Least-squares slope of ``log sigma_i^2`` against ``log lam_i`` over the
    modes with positive eigenvalue and noise (1 when ``C ~ H``; NaN with < 2 modes)."""
    lam, var = np.asarray(eigvals, float), np.asarray(noise_var, float)
    ok = (lam > 0) & (var > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(lam[ok]), np.log(var[ok]), 1)[0])


def bulk_modes(slq_nodes, slq_weights, n_params: int, top_eigvals) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and multiplicities of the bulk: SLQ nodes below the smallest
    computed top eigenvalue, each standing for ``P x weight / n_probes`` modes."""
    nodes, weights = np.asarray(slq_nodes, float), np.asarray(slq_weights, float)
    mult = n_params * weights / nodes.shape[0]
    keep = nodes < np.min(top_eigvals)
    return nodes[keep], mult[keep]


def sketch_lag_msd(sketch: np.ndarray, lags) -> np.ndarray:
    """Time-averaged ``||s_{t+tau} - s_t||^2`` of a sketch series (steps x dim) per lag."""
    s = np.asarray(sketch, dtype=np.float64)
    return np.asarray([np.mean(np.sum((s[tau:] - s[:-tau]) ** 2, axis=1)) for tau in lags])


def log_lags(steps: int, n: int = 40, max_fraction: float = 0.5) -> np.ndarray:
    """About ``n`` distinct integer lags, log-spaced from 1 to ``max_fraction x steps``."""
    hi = max(1, int(max_fraction * steps))
    return np.unique(np.round(np.logspace(0, np.log10(hi), n)).astype(int))


def spectral_peak(series: np.ndarray, max_segment: int = 2048) -> np.ndarray:
    """Frequency (cycles per step) of the largest Welch power of each column, 0 excluded."""
    x = np.asarray(series, float)
    nper = min(max_segment, x.shape[0])
    f, pxx = scipy.signal.welch(x, nperseg=nper, axis=0, detrend="linear")
    return f[1:][np.argmax(pxx[1:], axis=0)]


def fit_exponent(t, y, window: tuple[float, float], steps: int) -> float:
    """Slope of ``log y`` against ``log t`` over ``window`` (fractions of ``steps``)."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    ok = (t >= window[0] * steps) & (t <= window[1] * steps) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(t[ok]), np.log(y[ok]), 1)[0])


def compare_cell(traj: xr.Dataset, hess: xr.Dataset, noise: xr.Dataset, *, n_train: int | None = None,
                 stationary_window=(0.5, 1.0), fit_window=(0.01, 1.0), n_lags: int = 40) -> xr.Dataset:
    """Measured against predicted phase-space statistics and lag-MSD of one cell
    (see module doc). ``n_train`` defaults to the noise file's ``n_train``."""
    n_train = int(noise.attrs["n_train"] if n_train is None else n_train)
    lr, bs = float(traj.attrs["lr"]), int(traj.attrs["batch_size"])
    beta, wd = float(traj.attrs["momentum"]), float(traj.attrs["weight_decay"])
    sampling = str(traj.attrs["sampling"])
    kw = dict(lr=lr, batch_size=bs, momentum=beta, weight_decay=wd, sampling=sampling, n_samples=n_train)
    steps = int(traj.sizes["step"])

    lam_all = hess.hessian_eigenvalues.values
    mb_var_all = noise.minibatch_var_along_eigenvector.values
    sigma2_all = per_sample_noise_var(mb_var_all, bs, sampling, n_train)
    out = {}
    coords = {"lag": log_lags(steps, n_lags)}
    attrs = {"cell": traj.attrs["cell"], "lr": lr, "batch_size": bs, "momentum": beta, "weight_decay": wd,
             "sampling": sampling, "n_train": n_train, "steps": steps,
             "noise_curvature_slope": noise_curvature_slope(lam_all, sigma2_all),
             "trace_cov_minibatch": float(noise.attrs["trace_cov"])}

    # per mode: measured over the stationary window vs the exact discrete theory
    if "mode_position" in traj:
        k = traj.sizes["mode"]
        lam, sigma2 = lam_all[:k], sigma2_all[:k]
        lo, hi = int(stationary_window[0] * steps), int(stationary_window[1] * steps)
        pos = traj.mode_position.values[lo:hi].astype(float)
        vel = traj.mode_velocity.values[lo:hi].astype(float)
        stable = (lr * (lam + wd) > 0) & (lr * (lam + wd) < 2 * (1 + beta))
        lam_ok = np.where(stable, lam, 1.0)  # placeholder for unstable modes; their predictions become NaN
        pred = theory.stationary_moments(lam_ok, sigma2, **kw)
        nan = np.where(stable, 1.0, np.nan)
        out.update({
            "eigenvalue": ("mode", lam),
            "noise_var": ("mode", sigma2),
            "position_var_measured": ("mode", pos.var(axis=0)),
            "position_var_predicted": ("mode", pred.position_var.values * nan),
            "velocity_var_measured": ("mode", vel.var(axis=0)),
            "velocity_var_predicted": ("mode", pred.velocity_var.values * nan),
            "position_velocity_cov_measured": ("mode", np.mean((pos - pos.mean(0)) * (vel - vel.mean(0)), axis=0)),
            "position_velocity_cov_predicted": ("mode", pred.position_velocity_cov.values * nan),
            "spectral_peak_measured": ("mode", spectral_peak(traj.mode_position.values.astype(float))),
            "spectral_peak_predicted": ("mode", theory.fluctuation_spectrum_peak(lam_ok, lr, beta, wd) * nan),
            "oscillation_frequency_predicted": ("mode", theory.oscillation_frequency(lam_ok, lr, beta, wd) * nan),
        })
        coords["mode"] = np.arange(1, k + 1)
        attrs["unstable_top_modes"] = int((~stable).sum())

    # lag-MSD: top modes (measured noise) + bulk (remaining noise ~ eigenvalue)
    lags = coords["lag"]
    lam_top, sig_top = lam_all, sigma2_all
    bulk_lam, bulk_mult = bulk_modes(hess.slq_nodes.values, hess.slq_weights.values, int(hess.attrs["n_params"]),
                                     lam_all)
    total_sigma2 = float(per_sample_noise_var(noise.attrs["trace_cov"], bs, sampling, n_train))
    rest = max(total_sigma2 - float(sig_top.sum()), 0.0)
    pos_bulk = np.clip(bulk_lam, 0.0, None)
    denom = float((pos_bulk * bulk_mult).sum())
    bulk_sigma2 = rest * pos_bulk / denom if denom > 0 else np.zeros_like(bulk_lam)
    ok_top = (lam_top + wd > 0) & (lr * (lam_top + wd) < 2 * (1 + beta))
    ok_bulk = (bulk_lam + wd > 0) & (lr * (bulk_lam + wd) < 2 * (1 + beta))
    msd_top = theory.lag_msd(lam_top[ok_top], sig_top[ok_top], lags, **kw)
    # each bulk node stands for `mult` identical modes: scale its noise by mult (MSD is linear in it)
    msd_bulk = theory.lag_msd(bulk_lam[ok_bulk], bulk_sigma2[ok_bulk] * bulk_mult[ok_bulk], lags, **kw) \
        if ok_bulk.any() else np.zeros(len(lags))
    out["lag_msd_predicted_top"] = ("lag", msd_top)
    out["lag_msd_predicted"] = ("lag", msd_top + msd_bulk)
    out["sq_dist_from_start_measured"] = ("lag", traj.sq_dist_from_start.values[lags - 1])
    attrs.update(bulk_noise_fraction=rest / total_sigma2 if total_sigma2 > 0 else float("nan"),
                 bulk_modes_dropped_unstable=float(bulk_mult[~ok_bulk].sum()),
                 c_sq_dist_measured=fit_exponent(lags, traj.sq_dist_from_start.values[lags - 1], fit_window, steps),
                 c_lag_msd_predicted=fit_exponent(lags, msd_top + msd_bulk, fit_window, steps))
    if "sketch" in traj:
        sk = sketch_lag_msd(traj.sketch.values, lags)
        out["lag_msd_sketch"] = ("lag", sk)
        attrs["c_lag_msd_sketch"] = fit_exponent(lags, sk, fit_window, steps)
        # check of the sketch against the exact distances it compresses
        exact = traj.sq_dist_from_start.values
        attrs["sketch_over_exact_sq_dist"] = float(np.mean((traj.sketch.values.astype(float) ** 2).sum(1)) /
                                                   np.mean(exact))
    ds = xr.Dataset(out, coords=coords, attrs=attrs)
    meta = {
        "lag": "lag tau (SGD steps); for sq_dist_from_start the number of steps since theta_0",
        "eigenvalue": "Hessian eigenvalue lam_i at the cell's theta_0",
        "noise_var": "per-sample noise sigma_i^2 = u_i^T C u_i from the minibatch variance at S",
        "position_var_measured": "variance of u_i^T (theta_t - theta_0) over the stationary window",
        "position_var_predicted": "stationary Var[x_i], exact discrete theory",
        "velocity_var_measured": "variance of u_i^T v_t (momentum buffer) over the stationary window",
        "velocity_var_predicted": "stationary Var[v_i], exact discrete theory",
        "position_velocity_cov_measured": "covariance of position and velocity projections",
        "position_velocity_cov_predicted": "stationary Cov[x_i, v_i], exact discrete theory",
        "spectral_peak_measured": "frequency of the Welch power maximum of u_i^T theta_t (cycles per step)",
        "spectral_peak_predicted": "frequency of the theory's stationary power maximum (cycles per step)",
        "oscillation_frequency_predicted": "damped frequency of the mean motion (cycles per step)",
        "lag_msd_predicted_top": "stationary lag-MSD of the top modes alone (theory)",
        "lag_msd_predicted": "stationary lag-MSD of top modes plus SLQ bulk (theory)",
        "sq_dist_from_start_measured": "measured ||theta_t - theta_0||^2 at t = lag",
        "lag_msd_sketch": "measured lag-MSD, time average of ||S(theta_{t+tau} - theta_t)||^2",
    }
    for name, long_name in meta.items():
        if name in ds.variables:
            ds[name].attrs.update(long_name=long_name, units="1")
    return ds
