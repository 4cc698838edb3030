"""Theory vs experiment for one cell of the ResNet experiment.

Inputs: the Hessian at the cell's theta_0 (after its burn-in: top eigenpairs
and the SLQ spectral density), the gradient noise of independent minibatches
at points of the run (the gradient-noise stage: theta_0, the middle and the
end), the run's record and the cell's hyperparameters. The theory engine
(:mod:`.theory`, exact discrete recursion) turns them into numbers of three
kinds, named so in every variable:

* **predictions** (``*_predicted``): every input is measured apart from what
  is predicted: the Hessian's eigenvalues and the independent noise
  ``sigma_i^2 = u_i^T C u_i`` (mean over the noise points inside the mode
  window). Per top mode: stationary position and velocity variance and the
  oscillation frequency, compared with the run over ``mode_window``;
* **consistency checks** (``*_in_run_check``): the same theory with the noise
  and curvature read off the run's own momentum buffer over the same window
  (:func:`mode_gradients`, :func:`curvature_and_noise`). They share data with
  the measurement and so cannot fail the way a prediction can;
* the stationary **lag-MSD** ``E||theta_{t+tau} - theta_t||^2``: the top modes
  with their independent noise, plus the bulk of the spectrum from the SLQ
  quadrature nodes (multiplicity ``P x weight``). The bulk's total noise is
  measured too: the independent ``tr Cov(g_S)`` less the top modes' part.
  How it spreads over the bulk eigenvalues is not measured; it is assumed to
  follow ``sigma_j^2 ~ lam_j^s`` with ``s`` the noise-curvature slope
  measured on the top modes (:func:`noise_curvature_slope`), and the curve is
  also given for ``s = 0`` (isotropic) and ``s = 1`` (``C ~ H``) to show how
  far the answer moves with that assumption. theta_0 is a sample of the
  stationary state, so the same curve predicts ``E||theta_t - theta_0||^2``.

**Noise and curvature along the run.** The momentum buffer gives every
step's minibatch gradient along each recorded direction:
``u^T g_k = (1 - lr wd) u^T v_k - beta u^T v_{k-1} - wd u^T theta_k``
(:func:`mode_gradients`). Near a minimum ``u^T g_k = lam (x_{k-1} - x*) + xi_k``
with ``x = u^T theta`` and ``xi`` the minibatch noise, independent of the
position it is evaluated at, so a least-squares line of ``u^T g_k`` on
``x_{k-1}`` (:func:`curvature_and_noise`) measures the curvature the run feels
along ``u`` (its slope) and the noise along ``u`` (the residual variance).
Taken over consecutive blocks of the run, the slope shows how the curvature
along a fixed direction evolves; whether the direction is still an
eigenvector is what the eigenvector-drift stage measures directly.

**Oscillations** are fitted as oscillations (:mod:`.spectra`): the damped
oscillator's velocity spectrum, with free frequency and damping, fitted to
each ``u_i^T v``; compared only for underdamped modes (a mode oscillates
only when ``lr (lam + wd) > (1 - sqrt(beta))^2``).

Noise is converted to the theory's per-sample ``sigma^2 = u^T C u`` with the
sampling scheme's finite-population factor, so the theory's own
``replacement``/``reshuffle`` treatment applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import local_displacement, spectra, table_columns, theory
from .hyperparameters import Hyperparameters


def per_sample_noise_var(minibatch_var, batch_size: int, setting: theory.Setting):
    """``sigma^2 = u^T C u`` from the measured variance of the minibatch gradient along ``u``.

    With replacement ``Var = sigma^2 / S``; for one batch of a random
    permutation of ``N = setting.n_samples`` samples ``Var = (sigma^2 / S)(N - S)/(N - 1)``.
    """
    var = np.asarray(minibatch_var, dtype=float) * batch_size
    if setting.sampling == "reshuffle":
        n_train = setting.n_samples
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


def bulk_noise(total: float, bulk_lam, bulk_mult, slope: float, near_zero_share: float | None = None) -> np.ndarray:
    """Per-sample noise ``sigma_j^2`` of each bulk node (one of its ``mult``
    modes) such that the bulk carries ``total`` (the measured
    ``tr C - sum_top u_i^T C u_i``) and ``sigma_j^2 ~ lam_j^slope`` (``slope``
    1: ``C ~ H``; 0: isotropic, every node alike). With ``slope > 0``, nodes with
    ``lam <= 0`` get none (the power law gives them none) unless
    ``near_zero_share`` is given: then they carry that share of ``total``
    evenly and the nodes with ``lam > 0`` the rest, as the power law."""
    lam, mult = np.asarray(bulk_lam, float), np.asarray(bulk_mult, float)
    total = max(total, 0.0)
    shape = np.ones_like(lam) if slope == 0 else np.where(lam > 0, np.abs(lam) ** slope, 0.0)
    if near_zero_share is None or slope == 0:
        norm = float((shape * mult).sum())
        return shape * (total / norm) if norm > 0 else np.zeros_like(lam)
    zero = lam <= 0
    n_zero, norm = float(mult[zero].sum()), float((shape * mult)[~zero].sum())
    share = float(near_zero_share) if n_zero > 0 else 0.0
    out = np.where(zero, share * total / n_zero if n_zero > 0 else 0.0, 0.0)
    return out + (shape * ((1 - share) * total / norm) if norm > 0 else 0.0) * ~zero


def near_zero_noise_share(noise_weighted_curvature: float, bulk_lam, bulk_mult, slope: float) -> float:
    """The share ``f`` of the bulk's noise in its near-zero cluster (``lam <= 0``)
    that makes the noise-weighted mean curvature of the bulk,
    ``tr(H C)_bulk / tr(C)_bulk``, equal the measured one when the rest spreads
    as ``lam^slope`` over the curved nodes: ``f = 1 - measured / kappa_s`` with
    ``kappa_s = sum m lam^(1+s) / sum m lam^s`` over ``lam > 0``. Unclipped
    (outside [0, 1]: the two-part model does not fit)."""
    lam, mult = np.asarray(bulk_lam, float), np.asarray(bulk_mult, float)
    pos = lam > 0
    kappa = float((mult * lam ** (1 + slope))[pos].sum() / (mult * lam**slope)[pos].sum()) if pos.any() else np.nan
    return 1.0 - float(noise_weighted_curvature) / kappa


def sketch_lag_msd(sketch: np.ndarray, lags) -> np.ndarray:
    """Time-averaged ``||s_{t+tau} - s_t||^2`` of a sketch series (steps x dim) per lag."""
    return sketch_increments(sketch, lags)[0]


def sketch_increments(sketch: np.ndarray, lags) -> tuple[np.ndarray, np.ndarray]:
    """Per lag, the mean and the standard deviation over anchors ``t`` of
    ``||s_{t+tau} - s_t||^2`` for a sketch series (steps x dim): the time-averaged
    lag-MSD, and how far one anchor's measurement scatters as the run itself
    shows it. Anchors overlap, so at lags near the run's length the second rests
    on few independent pieces; the sketch adds its own error to each anchor
    (about ``sqrt(2 / dim)`` of the value when the displacement spreads over many
    directions)."""
    s = np.asarray(sketch, dtype=np.float64)
    sq = [np.sum((s[tau:] - s[:-tau]) ** 2, axis=1) for tau in lags]
    return np.asarray([v.mean() for v in sq]), np.asarray([v.std() for v in sq])


def lag_msd_sd(top_lam, top_sigma2, bulk_lam, bulk_sigma2, bulk_mult, lags, steps, hp, setting, sketch_dim):
    """The predicted scatter of one run's measured lag-MSD over the top modes and
    the SLQ bulk (each node ``mult`` modes): of the time average over anchors
    (:func:`.theory.lag_msd_sampling_sd`) and of the exact distance from theta_0,
    one anchor (:func:`.theory.lag_msd_single_anchor_sd`); NaN per lag where the
    theory does not cover the sampling scheme."""
    if setting.sampling != "replacement":
        return np.full(len(lags), np.nan), np.full(len(lags), np.nan)
    lam = np.concatenate([top_lam, bulk_lam])
    var = np.concatenate([top_sigma2, bulk_sigma2])
    mult = np.concatenate([np.ones(len(top_lam)), bulk_mult])
    averaged = theory.lag_msd_sampling_sd(
        lam, var, lags, steps, hp, multiplicity=mult, sketch_dim=sketch_dim, setting=setting
    )
    return averaged, theory.lag_msd_single_anchor_sd(lam, var, lags, hp, multiplicity=mult, setting=setting)


def log_lags(steps: int, n: int = 40, max_fraction: float = 0.5) -> np.ndarray:
    """About ``n`` distinct integer lags, log-spaced from 1 to ``max_fraction x steps``."""
    hi = max(1, int(max_fraction * steps))
    return np.unique(np.round(np.logspace(0, np.log10(hi), n)).astype(int))


VALID_RESIDUAL = 0.5  # an eigenvector of theta_0 counts as valid while its relative residual stays below this


def valid_steps(drift: xr.Dataset, threshold: float = VALID_RESIDUAL) -> np.ndarray:
    """Per mode, the last drift step before the relative residual first
    reaches ``threshold`` (0: already at the first step after theta_0)."""
    steps, res = drift.drift_step.values, drift.relative_residual.values
    out = []
    for j in range(res.shape[1]):
        bad = np.flatnonzero(res[:, j] >= threshold)
        out.append(steps[-1] if bad.size == 0 else steps[bad[0] - 1])
    return np.asarray(out)


def agreement_lag(ds: xr.Dataset, factor: float = 1.25) -> int:
    """The largest lag up to which the quadratic theory's lag-MSD stays within
    ``factor`` of the measured one (the sketch, else the distance from the
    start); 0 if it misses at the first lag: how far a fixed quadratic
    explains the diffusion."""
    measured = ds.lag_msd_sketch.values if "lag_msd_sketch" in ds else ds.sq_dist_from_start_measured.values
    ratio = measured / ds.lag_msd_predicted.values
    bad = np.flatnonzero((ratio > factor) | (ratio < 1 / factor))
    return int(ds.lag.values[-1] if bad.size == 0 else (ds.lag.values[bad[0] - 1] if bad[0] > 0 else 0))


def mode_gradients(traj: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every step's minibatch gradient along each recorded eigenvector,
    ``u^T g_k = (1 - lr wd) u^T v_k - beta u^T v_{k-1} - wd u^T theta_k``, and
    the position ``u^T (theta_{k-1} - theta_0)`` it was evaluated at
    (``steps x modes`` each; ``k = 1..T``)."""
    lr, beta, wd = (float(traj.attrs[k]) for k in ("lr", "momentum", "weight_decay"))
    x = traj.mode_position.values.astype(float)
    v = traj.mode_velocity.values.astype(float)
    v_prev = np.vstack([traj.mode_velocity_start.values[None, :], v[:-1]])
    g = (1 - lr * wd) * v - beta * v_prev - wd * (traj.mode_offset.values[None, :] + x)
    x_prev = np.vstack([np.zeros((1, x.shape[1])), x[:-1]])
    return g, x_prev


def curvature_and_noise(g: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the least-squares slope of ``g`` on ``x`` (the curvature
    felt along the direction) and the residual variance (the minibatch noise
    variance along it)."""
    xc, gc = x - x.mean(axis=0), g - g.mean(axis=0)
    slope = (xc * gc).sum(axis=0) / (xc * xc).sum(axis=0)
    resid = gc - slope * xc
    return slope, (resid**2).sum(axis=0) / (len(g) - 2)


def curvature_along_run(g: np.ndarray, x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`curvature_and_noise`'s slope over consecutive blocks of ``block``
    steps: block ends (steps) and ``blocks x modes`` slopes."""
    n = len(g) // block
    ends = np.arange(1, n + 1) * block
    slopes = (
        np.stack(
            [curvature_and_noise(g[i * block : (i + 1) * block], x[i * block : (i + 1) * block])[0] for i in range(n)]
        )
        if n
        else np.empty((0, g.shape[1]))
    )
    return ends, slopes


def fit_exponent(t, y, window: tuple[float, float], steps: int) -> float:
    """Slope of ``log y`` against ``log t`` over ``window`` (fractions of ``steps``)."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    ok = (t >= window[0] * steps) & (t <= window[1] * steps) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(t[ok]), np.log(y[ok]), 1)[0])


def independent_noise(noise: xr.Dataset, window: tuple[int, int] | None = None) -> np.ndarray:
    """Per mode, the variance of independent minibatch gradients along the
    eigenvectors of theta_0, averaged over the noise points of the run inside
    ``window`` (steps, inclusive; all points when ``None``, theta_0 alone when
    no other point is inside)."""
    var = noise.minibatch_var_along_eigenvector.transpose("noise_step", "mode").values
    steps = noise.noise_step.values
    keep = np.ones(len(steps), bool) if window is None else (steps >= window[0]) & (steps <= window[1])
    keep[0] = keep[0] or not keep.any()
    return var[keep].mean(axis=0)


def compare_cell(
    traj: xr.Dataset,
    hess: xr.Dataset,
    noise: xr.Dataset,
    *,
    stationary_window: tuple[float, float],
    fit_window: tuple[float, float],
    mode_window: tuple[float, float],
    curvature_block: int,
    nperseg: int,
    n_train: int | None = None,
    n_lags: int = 40,
    drift: xr.Dataset | None = None,
) -> xr.Dataset:
    """Measured against predicted phase-space statistics and lag-MSD of one cell
    (see module doc). The windows are the config's (``analysis`` section, no
    defaults here): per-mode statistics over ``mode_window`` (fractions of the
    run), the curvature along the run over blocks of ``curvature_block`` steps,
    the in-run gradient norm over ``stationary_window``, c fitted over
    ``fit_window``, oscillator spectra in segments of ``nperseg`` steps.
    ``n_train`` defaults to the noise file's ``n_train``. ``drift`` (the
    eigenvector-drift stage's output) adds, per mode, the last drift step at
    which the eigenvector of theta_0 was still one (``valid_steps``).

    The parts: :func:`compare_modes` (per mode, the mode window),
    :func:`compare_lag_msd` (top modes and bulk), :func:`mode_window_summary`."""
    n_train = int(noise.attrs["n_train"] if n_train is None else n_train)
    hp = Hyperparameters.from_attrs(traj.attrs)
    sampling = str(traj.attrs["sampling"])
    setting = theory.Setting(sampling=sampling, n_samples=n_train)  # the theory's noise model
    steps = int(traj.sizes["step"])
    sigma2_all = per_sample_noise_var(independent_noise(noise), hp.batch_size, setting)  # every noise point
    slope = noise_curvature_slope(hess.hessian_eigenvalues.values, sigma2_all)
    out, coords = {}, {"lag": log_lags(steps, n_lags)}
    attrs = {
        "cell": traj.attrs["cell"],
        "family": str(traj.attrs.get("family", "spherical")),
        "seed": hp.seed,
        "lr": hp.lr,
        "batch_size": hp.batch_size,
        "momentum": hp.momentum,
        "weight_decay": hp.weight_decay,
        "sampling": sampling,
        "n_train": n_train,
        "steps": steps,
        "noise_curvature_slope": slope,
        "trace_cov_independent": float(noise.attrs["trace_cov"]),
        "noise_points": int(noise.sizes["noise_step"]),
    }
    if "mode_position" in traj:
        part = compare_modes(traj, hess, noise, hp, setting, mode_window, curvature_block, nperseg, drift)
        out.update(part.variables)
        coords.update(part.coords)
        attrs.update(part.attrs)
    part = compare_lag_msd(traj, hess, noise, hp, setting, coords["lag"], stationary_window, fit_window)
    out.update(part.variables)
    attrs.update(part.attrs)
    ds = xr.Dataset(out, coords=coords, attrs=attrs)
    ds.attrs["theory_agreement_lag"] = agreement_lag(ds)
    if "mode" in ds.dims:
        ds.attrs.update(mode_window_summary(ds))
    table_columns.describe(ds, table_columns.COMPARISON)
    return ds


@dataclass
class ComparisonPart:
    """One part of a cell's comparison: data variables (name -> (dims, values)), coordinates and attributes."""

    variables: dict
    coords: dict
    attrs: dict


def _window_scatter(lam_ok, hp: Hyperparameters, setting: theory.Setting, steps: int) -> xr.Dataset:
    """How one window of ``steps`` measures each variance (ratios to the stationary one); NaN where
    the theory does not cover the sampling scheme."""
    if setting.sampling == "replacement":
        return theory.window_variance_scatter(lam_ok, hp, steps)
    k = len(lam_ok)
    return xr.Dataset(
        {f"{v}_window_{w}": ("mode", np.full(k, np.nan)) for v in ("position", "velocity") for w in ("bias", "sd")}
    )


def compare_modes(
    traj: xr.Dataset,
    hess: xr.Dataset,
    noise: xr.Dataset,
    hp: Hyperparameters,
    setting: theory.Setting,
    mode_window: tuple[float, float],
    curvature_block: int,
    nperseg: int,
    drift: xr.Dataset | None = None,
) -> ComparisonPart:
    """Per top mode over ``mode_window``: measured phase-space variances, covariance and
    oscillation against the exact discrete theory with the independent noise (the
    prediction) and with the in-run noise (a consistency check); the curvature along the run;
    with ``drift``, how long each eigenvector of theta_0 stays one."""
    steps = int(traj.sizes["step"])
    k = traj.sizes["mode"]
    lam = hess.hessian_eigenvalues.values[:k]
    lo, hi = int(mode_window[0] * steps), max(int(mode_window[1] * steps), int(mode_window[0] * steps) + 2)
    sigma2 = per_sample_noise_var(independent_noise(noise, (lo, hi))[:k], hp.batch_size, setting)
    g, x_at = mode_gradients(traj)
    curvature, noise_run = curvature_and_noise(g[lo:hi], x_at[lo:hi])
    sigma2_run = per_sample_noise_var(noise_run, hp.batch_size, setting)
    ends, along = curvature_along_run(g, x_at, curvature_block)
    pos = traj.mode_position.values[lo:hi].astype(float)
    vel = traj.mode_velocity.values[lo:hi].astype(float)
    stable = theory.stable_modes(lam, hp)
    lam_ok = np.where(stable, lam, 1.0)  # placeholder for unstable modes; their predictions become NaN
    pred = theory.stationary_moments(lam_ok, sigma2, hp, setting=setting)
    check = theory.stationary_moments(lam_ok, sigma2_run, hp, setting=setting)
    nan = np.where(stable, 1.0, np.nan)
    freq = theory.oscillation_frequency(lam_ok, hp, setting=setting) * nan
    osc = spectra.fit_oscillator(vel, nperseg=min(nperseg, hi - lo))
    freq_bound = spectra.frequency_cramer_rao(freq, np.sqrt(hp.momentum), hi - lo)
    scatter = _window_scatter(lam_ok, hp, setting, hi - lo)
    out = {
        "eigenvalue": ("mode", lam),
        "underdamped": ("mode", (stable & (freq > 0)).astype(np.int8)),
        "curvature_in_run": ("mode", curvature),
        "curvature_along_run": (("block", "mode"), along),
        "noise_var_in_run": ("mode", sigma2_run),
        "noise_var_independent": ("mode", sigma2),
        "position_var_measured": ("mode", pos.var(axis=0)),
        "position_var_predicted": ("mode", pred.position_var.values * nan),
        "position_var_in_run_check": ("mode", check.position_var.values * nan),
        "velocity_var_measured": ("mode", vel.var(axis=0)),
        "velocity_var_predicted": ("mode", pred.velocity_var.values * nan),
        "velocity_var_in_run_check": ("mode", check.velocity_var.values * nan),
        "position_velocity_cov_measured": ("mode", np.mean((pos - pos.mean(0)) * (vel - vel.mean(0)), axis=0)),
        "position_velocity_cov_predicted": ("mode", pred.position_velocity_cov.values * nan),
        "oscillation_frequency_measured": ("mode", osc.frequency),
        "oscillation_frequency_predicted": ("mode", freq),
        "oscillation_frequency_cramer_rao": ("mode", freq_bound),
        **{
            f"{v}_var_window_{w}": ("mode", scatter[f"{v}_window_{w}"].values * nan)
            for v in ("position", "velocity")
            for w in ("bias", "sd")
        },
        "pole_radius_measured": ("mode", osc.radius),
        "oscillator_fit_converged": ("mode", osc.converged.astype(np.int8)),
    }
    attrs = {
        "unstable_top_modes": int((~stable).sum()),
        "mode_window_start": lo + 1,
        "mode_window_end": hi,
        "pole_radius_predicted": float(np.sqrt(hp.momentum)),
        "noise_curvature_slope_in_run": noise_curvature_slope(lam, sigma2_run),
    }
    if drift is not None:
        valid = np.full(k, np.nan)
        tested = min(k, drift.sizes["mode"])
        valid[:tested] = valid_steps(drift)[:tested]
        out["valid_steps"] = ("mode", valid)
        # the Hessian's own curvature along u at the last drift step of the window (not a fit to the run)
        inside = drift.drift_step.values <= hi
        rq = np.full(k, np.nan)
        if inside.any():
            last = int(np.flatnonzero(inside)[-1])
            rq[:tested] = drift.rayleigh_quotient.values[last, :tested] / lam[:tested]
        out["rayleigh_quotient_over_eigenvalue"] = ("mode", rq)
        attrs["eigenvectors_valid_steps"] = float(np.nanmedian(valid))
    return ComparisonPart(out, {"mode": np.arange(1, k + 1), "block": ends}, attrs)


def compare_lag_msd(
    traj: xr.Dataset,
    hess: xr.Dataset,
    noise: xr.Dataset,
    hp: Hyperparameters,
    setting: theory.Setting,
    lags: np.ndarray,
    stationary_window: tuple[float, float],
    fit_window: tuple[float, float],
) -> ComparisonPart:
    """The lag-MSD: every top mode and the SLQ bulk with the independent noise, the bulk's
    spread over eigenvalues given by the measured noise-curvature slope and, beside
    it, the isotropic and ``C ~ H`` assumptions; the predicted scatter of one run; the exponent
    c of each curve and of the measurement; the sketch's checks against the exact distances."""
    steps = int(traj.sizes["step"])
    lam_all = hess.hessian_eigenvalues.values
    sigma2_all = per_sample_noise_var(independent_noise(noise), hp.batch_size, setting)
    slope = noise_curvature_slope(lam_all, sigma2_all)
    bulk_lam, bulk_mult = bulk_modes(
        hess.slq_nodes.values, hess.slq_weights.values, int(hess.attrs["n_params"]), lam_all
    )
    out, attrs = {}, {"grad_sq_norm_in_run": local_displacement.grad_sq_norm(traj, stationary_window)}
    total = float(per_sample_noise_var(noise.attrs["trace_cov"], hp.batch_size, setting))
    ok_top = theory.stable_modes(lam_all, hp)
    # Ritz values at or below zero stand for the near-zero cluster of the spectrum (SLQ smears it by about the
    # node spacing): curvature 0, weight decay alone restoring them (docs/theory.md, "The lag-MSD and the exponent c")
    bulk_lam = np.maximum(bulk_lam, 0.0)
    ok_bulk = theory.stable_modes(bulk_lam, hp)
    bulk_total = max(total - float(sigma2_all.sum()), 0.0)
    msd_top = theory.lag_msd(lam_all[ok_top], sigma2_all[ok_top], lags, hp, setting=setting)
    bulk_slope = slope if np.isfinite(slope) else 1.0
    share = None  # the near-zero cluster's share of the bulk noise, from the Hessian stage's tr(H C) if measured
    if "noise_weighted_curvature_bulk" in hess.attrs:
        kappa = float(hess.attrs["noise_weighted_curvature_bulk"])
        raw = near_zero_noise_share(kappa, bulk_lam[ok_bulk], bulk_mult[ok_bulk], bulk_slope)
        share = float(np.clip(raw, 0.0, 1.0)) if np.isfinite(raw) else None
        attrs.update(noise_weighted_curvature_bulk=kappa, near_zero_noise_share_raw=raw)
    attrs["near_zero_noise_share"] = share if share is not None else float("nan")
    curves, bulk_sigma2_measured_slope = {}, None
    for name, s in (("", bulk_slope), ("_isotropic", 0.0), ("_c_like_h", 1.0)):
        bulk_sigma2 = bulk_noise(bulk_total, bulk_lam[ok_bulk], bulk_mult[ok_bulk], s, share if name == "" else None)
        if name == "":
            bulk_sigma2_measured_slope = bulk_sigma2
        # each bulk node stands for `mult` identical modes: scale its noise by mult (MSD is linear in it)
        msd_bulk = (
            theory.lag_msd(bulk_lam[ok_bulk], bulk_sigma2 * bulk_mult[ok_bulk], lags, hp, setting=setting)
            if ok_bulk.any()
            else np.zeros(len(lags))
        )
        curves[name] = msd_top + msd_bulk
        out[f"lag_msd_predicted{name}"] = ("lag", curves[name])
    out["lag_msd_predicted_top"] = ("lag", msd_top)
    out["sq_dist_from_start_measured"] = ("lag", traj.sq_dist_from_start.values[lags - 1])
    attrs.update(
        bulk_noise_fraction=bulk_total / total if total > 0 else float("nan"),
        bulk_noise_slope=slope if np.isfinite(slope) else 1.0,
        bulk_modes_dropped=float(bulk_mult[~ok_bulk].sum()),
        bulk_modes_near_zero=float(bulk_mult[ok_bulk & (bulk_lam == 0)].sum()),
        c_sq_dist_measured=fit_exponent(lags, traj.sq_dist_from_start.values[lags - 1], fit_window, steps),
        c_lag_msd_predicted=fit_exponent(lags, curves[""], fit_window, steps),
        c_lag_msd_predicted_isotropic=fit_exponent(lags, curves["_isotropic"], fit_window, steps),
        c_lag_msd_predicted_c_like_h=fit_exponent(lags, curves["_c_like_h"], fit_window, steps),
    )
    sketch_dim = int(traj.sizes["sketch_dim"]) if "sketch" in traj else None
    averaged_sd, single_sd = lag_msd_sd(
        lam_all[ok_top],
        sigma2_all[ok_top],
        bulk_lam[ok_bulk],
        bulk_sigma2_measured_slope,
        bulk_mult[ok_bulk],
        lags,
        steps,
        hp,
        setting,
        sketch_dim,
    )
    out["lag_msd_predicted_sd"] = ("lag", averaged_sd)
    out["sq_dist_from_start_predicted_sd"] = ("lag", single_sd)
    if "sketch" in traj:
        sk, single_seen = sketch_increments(traj.sketch.values, lags)
        out["lag_msd_sketch"] = ("lag", sk)
        attrs["c_lag_msd_sketch"] = fit_exponent(lags, sk, fit_window, steps)
        out["sq_dist_single_anchor_sd_sketch"] = ("lag", single_seen)
        # what the theory predicts for that scatter through the sketch: a random projection to K numbers in blocks of
        # b coordinates adds about (1 - 1/b) 2 E[d^2]^2 / K to the variance of one anchor's d^2 (none for b = 1)
        block = int(traj.sketch.attrs.get("sketch_block", 1))
        through_sketch = (1 - 1 / block) * 2 * curves[""] ** 2 / int(traj.sizes["sketch_dim"])
        out["sq_dist_single_anchor_sd_sketch_predicted"] = ("lag", np.sqrt(single_sd**2 + through_sketch))
        # check of the sketch against the exact distances it compresses
        exact = traj.sq_dist_from_start.values
        attrs["sketch_over_exact_sq_dist"] = float(
            np.mean((traj.sketch.values.astype(float) ** 2).sum(1)) / np.mean(exact)
        )
        # and at lag 1, where the exact time average is recorded (the squared step): the sketch's bias there
        if "sq_step" in traj and lags[0] == 1:  # log_lags starts at lag 1
            attrs["sketch_over_exact_lag1"] = float(sk[0] / np.mean(traj.sq_step.values[1:]))
    return ComparisonPart(out, {}, attrs)


EXACT_LAG_POINTS = {"window_end": 1.0, "window_tenth": 0.1}
"""Where in the mode window the exact distance from theta_0 is kept for a comparison between
runs: at its longest lag and at the lag nearest a tenth of it."""


def _exact_at_two_lags(ds: xr.Dataset, window: xr.DataArray, exact_ratio: xr.DataArray) -> dict:
    """The exact ``||theta_t - theta_0||^2`` (``exact_distance``), its ratio to the prediction
    (``exact_ratio``, per lag) and the predicted standard deviation of that ratio for one anchor, at
    the lags of :data:`EXACT_LAG_POINTS`. The seeds of a cell are independent anchors, so their spread
    tests the predicted one-anchor scatter with data apart from it (``results_tables``); NaN where
    the window holds no lag."""
    lags = ds.lag.where(window, drop=True).values
    out = {}
    for name, share in EXACT_LAG_POINTS.items():
        values = dict.fromkeys(("lag", "exact_ratio", "exact_predicted_sd", "exact_distance"), float("nan"))
        if lags.size:
            lag = int(lags[np.argmin(abs(lags - share * lags.max()))])
            at = ds.sel(lag=lag)
            values = {
                "lag": float(lag),
                "exact_ratio": float(exact_ratio.sel(lag=lag)),
                "exact_predicted_sd": float(at.sq_dist_from_start_predicted_sd / at.lag_msd_predicted),
                "exact_distance": float(at.sq_dist_from_start_measured),
            }
        out |= {f"{key}_at_{name}": value for key, value in values.items()}
    return out


def mode_window_summary(ds: xr.Dataset) -> dict:
    """The lag-MSD against its prediction over the lags inside the mode window: the range of
    measured/predicted (sketch, else exact distance) and of the exact distance, and the largest
    deviation in units of the predicted scatter."""
    window = (ds.lag >= ds.attrs["mode_window_start"]) & (ds.lag <= ds.attrs["mode_window_end"])
    measured = ds.lag_msd_sketch if "lag_msd_sketch" in ds else ds.sq_dist_from_start_measured

    def over_window(values, reduce) -> float:
        v = values.where(window, drop=True).values
        return float(reduce(v)) if v.size else float("nan")

    ratio, iso = measured / ds.lag_msd_predicted, measured / ds.lag_msd_predicted_isotropic
    # the exact measurement: the distance from theta_0 (one anchor, no sketch), in units of its own scatter
    exact = ds.sq_dist_from_start_measured
    exact_ratio = exact / ds.lag_msd_predicted
    own = {}
    if "sq_dist_single_anchor_sd_sketch" in ds:
        # the scatter of one anchor as the run shows it against what the theory predicts for it, both through the
        # sketch: does the exact check fail on the mean (ratio near 1) or on the predicted scatter (ratio above 1)?
        seen = ds.sq_dist_single_anchor_sd_sketch / ds.sq_dist_single_anchor_sd_sketch_predicted
        own = {
            "single_anchor_sd_ratio_mode_window_min": over_window(seen, np.min),
            "single_anchor_sd_ratio_mode_window_max": over_window(seen, np.max),
        }
    return (
        own
        | _exact_at_two_lags(ds, window, exact_ratio)
        | {
            "lag_msd_ratio_mode_window_min": over_window(ratio, np.min),
            "lag_msd_ratio_mode_window_max": over_window(ratio, np.max),
            "lag_msd_ratio_isotropic_mode_window_min": over_window(iso, np.min),
            "lag_msd_ratio_isotropic_mode_window_max": over_window(iso, np.max),
            "lag_msd_z_mode_window_max": over_window(
                abs(measured - ds.lag_msd_predicted) / ds.lag_msd_predicted_sd, np.nanmax
            ),
            "lag_msd_relative_sd_mode_window_max": over_window(
                ds.lag_msd_predicted_sd / ds.lag_msd_predicted, np.nanmax
            ),
            "lag_msd_exact_ratio_mode_window_min": over_window(exact_ratio, np.min),
            "lag_msd_exact_ratio_mode_window_max": over_window(exact_ratio, np.max),
            "lag_msd_exact_z_mode_window_max": over_window(
                abs(exact - ds.lag_msd_predicted) / ds.sq_dist_from_start_predicted_sd, np.nanmax
            ),
        }
    )
