"""Anomalous-diffusion analysis of one trajectory.

* :func:`fit_exponent`: the exponent ``c`` of ``D(t) ~ t^c`` by least squares
  on log-log over a window, on points spaced evenly in ``log t`` (so every
  decade weighs the same), with a bootstrap over the additive parts of ``D``
  (one per parameter tensor) for a confidence interval. (A moving-block
  bootstrap of the fit residuals was tried first: on averaged random walks its
  nominal 95% interval covered the true exponent only about half of the time,
  because the error of one trajectory is a smooth drift, not residual noise.)
* :func:`stationary_level`: the mean of a stationary series over a window with
  a batch-means standard error (valid for correlated series when each batch is
  much longer than the correlation time).
* :func:`theory_scale`: the local-displacement scaling ``lr^2 / (S (1 - beta^2))``
  (docs/theory.md, "The local displacement").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import geometry, local_displacement, stationarity
from .hyperparameters import NAMES as HYPERPARAMETERS


@dataclass
class ExponentFit:
    c: float
    log_prefactor: float
    c_low: float
    c_high: float
    t_start: int
    t_end: int
    n_points: int

    def predict(self, t: np.ndarray) -> np.ndarray:
        return np.exp(self.log_prefactor) * np.asarray(t, dtype=float) ** self.c


def log_spaced_indices(steps: np.ndarray, window: tuple[float, float], n_points: int) -> np.ndarray:
    """Distinct indices into the increasing array ``steps``, log-spaced over the window.

    The window is in fractions of the last step; each target time is matched
    to the first recorded step at or after it.
    """
    steps = np.asarray(steps, float)
    last = steps[-1]
    t0 = max(steps[0], window[0] * last)
    t1 = max(t0, window[1] * last)
    targets = np.geomspace(t0, t1, n_points)
    idx = np.searchsorted(steps, targets - 1e-9)
    return np.unique(np.clip(idx, 0, len(steps) - 1))


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return slope, float(ym - slope * xm)


def fit_exponent(
    steps: np.ndarray,
    parts: np.ndarray,
    *,
    window: tuple[float, float],
    n_points: int,
    n_boot: int,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
) -> ExponentFit:
    """Fit ``D ~ A steps^c`` where ``D = parts.sum(axis=1)``, with a cluster-bootstrap interval.

    ``parts`` is ``(n_steps, n_parts)``: additive contributions to the curve,
    here one per parameter tensor. The interval resamples the parts with
    replacement (multinomial weights) and refits, so it reflects how much the
    exponent depends on which components move; for independent parts it is the
    standard bootstrap of a sum (coverage checked on random walks in the tests).
    A 1-D curve has no parts to resample and gets a NaN interval. A curve that
    is not positive in the window makes the fit undefined: NaN, never a guess.
    """
    rng = rng or np.random.default_rng(0)
    parts = np.asarray(parts, float)
    if parts.ndim == 1:
        parts = parts[:, None]
    idx = log_spaced_indices(steps, window, n_points)
    t, p = np.asarray(steps, float)[idx], parts[idx]
    d = p.sum(axis=1)
    nan = ExponentFit(np.nan, np.nan, np.nan, np.nan, int(t[0]), int(t[-1]), len(t))
    if len(t) < 3 or not np.all(np.isfinite(d)) or np.any(d <= 0):
        return nan
    x = np.log(t)
    c, a = _ols(x, np.log(d))
    lo = hi = np.nan
    n_parts = p.shape[1]
    if n_parts > 1 and n_boot > 0:
        weights = rng.multinomial(n_parts, np.full(n_parts, 1.0 / n_parts), size=n_boot)
        d_boot = weights @ p.T
        d_boot = d_boot[np.all(d_boot > 0, axis=1)]
        y = np.log(d_boot)
        xc = x - x.mean()
        slopes = (y - y.mean(axis=1, keepdims=True)) @ xc / (xc**2).sum()
        alpha = (1 - level) / 2
        lo, hi = (float(q) for q in np.quantile(slopes, [alpha, 1 - alpha]))
    return ExponentFit(c, a, lo, hi, int(t[0]), int(t[-1]), len(t))


@dataclass
class StationaryLevel:
    mean: float
    stderr: float
    t_start: int
    t_end: int


def stationary_level(values: np.ndarray, window: tuple[float, float], n_batches: int) -> StationaryLevel:
    """Mean of ``values[window]`` with a batch-means standard error."""
    values = np.asarray(values, float)
    n = len(values)
    i0, i1 = int(np.floor(window[0] * n)), int(np.ceil(window[1] * n))
    seg = values[i0:i1]
    n_batches = max(2, min(n_batches, len(seg)))
    usable = len(seg) // n_batches * n_batches
    means = seg[:usable].reshape(n_batches, -1).mean(axis=1)
    return StationaryLevel(float(seg.mean()), float(means.std(ddof=1) / np.sqrt(n_batches)), i0 + 1, i1)


def theory_scale(lr: float, batch_size: int, momentum: float) -> float:
    """``lr^2 / (S (1 - beta^2))``: the local displacement per unit gradient-noise trace."""
    return lr**2 / (batch_size * (1.0 - momentum**2))


def tensor_parts(ds) -> dict[str, np.ndarray]:
    """Per-tensor ``(tensor_step, tensor)`` contributions to the total, radial
    and angular distance, and to the distance with the scale-invariant tensors
    measured along their spheres (:func:`.geometry.geodesic_parts`)."""
    d2 = ds["sq_dist_from_start_by_tensor"].transpose("tensor_step", "tensor").values
    p2 = ds["sq_param_norm_by_tensor"].transpose("tensor_step", "tensor").values
    p2_start = ds["sq_param_norm_start_by_tensor"].values
    r = np.sqrt(np.maximum(p2, 0))
    r0 = np.sqrt(np.maximum(p2_start, 0))
    radial = (r - r0[None, :]) ** 2
    geodesic = geometry.geodesic_parts(d2, p2, p2_start, ds["tensor_scale_invariant"].values)
    return {
        "sq_dist_from_start": d2,
        "sq_dist_radial": radial,
        "sq_dist_angular": d2 - radial,
        "sq_dist_geodesic": geodesic,
    }


_SHORT = {
    "sq_dist_from_start": "c",
    "sq_dist_radial": "c_radial",
    "sq_dist_angular": "c_angular",
    "sq_dist_geodesic": "c_geodesic",
}
SMALL_ANGLE_FIRST_STEP = 10  # c_small_angle is fitted from this step at the earliest


def sphere_geometry(ds, fit_end: int) -> dict:
    """How far the scale-invariant weights have turned (module :mod:`.geometry`):
    the norm-weighted rms angle at the end of the fit window
    (``rotation_angle_fit_end``, rad), the step at which it passes
    :func:`.geometry.small_angle_limit` (``small_angle_steps``, the run's
    length if never), and whether the whole fit window is inside that limit
    (``small_angle_fit``: 1 or 0)."""
    si = ds["tensor_scale_invariant"].values.astype(bool)
    ts = ds["tensor_step"].values
    if not si.any():
        return {"rotation_angle_fit_end": 0.0, "small_angle_steps": int(ts[-1]), "small_angle_fit": 1}
    rms = ds["rotation_angle_si"].values  # geometry.rms_angle of the scale-invariant tensors, stored at export
    limit = geometry.small_angle_limit()
    at_end = float(rms[np.searchsorted(ts, fit_end)] if fit_end <= ts[-1] else rms[-1])
    beyond = np.flatnonzero(rms > limit)
    return {
        "rotation_angle_fit_end": at_end,
        "small_angle_steps": int(ts[beyond[0]] if beyond.size else ts[-1]),
        "small_angle_fit": int(at_end <= limit),
    }


def analyze_trajectory(ds, cfg: dict) -> dict:
    """One summary row for a trajectory Dataset; ``cfg`` is the ``analysis`` section.

    Keys: the hyperparameters, ``c``/``c_low``/``c_high`` for the total
    distance and the same for its radial and angular parts, the stationary
    ``sq_step`` level and its standard error, ``theory_scale`` and the ratio
    ``sq_step / theory_scale`` (an estimate of the gradient-noise trace), and
    start/end eval metrics.
    """
    rng = np.random.default_rng(int(cfg["seed"]))
    steps = ds["step"].values
    tensor_steps = ds["tensor_step"].values
    row = {k: ds.attrs[k] for k in HYPERPARAMETERS}
    row["family"] = str(ds.attrs.get("family", "spherical"))
    row["burn_in_steps"] = int(ds.attrs["burn_in_steps"])
    row["steps"] = int(steps[-1])
    parts_by_var = tensor_parts(ds)
    for var, parts in parts_by_var.items():
        fit = fit_exponent(
            tensor_steps,
            parts,
            window=tuple(cfg["fit_window"]),
            n_points=int(cfg["fit_points"]),
            n_boot=int(cfg["bootstrap_samples"]),
            rng=rng,
        )
        name = _SHORT[var]
        row.update(
            {
                name: fit.c,
                f"{name}_low": fit.c_low,
                f"{name}_high": fit.c_high,
                f"{name}_log_prefactor": fit.log_prefactor,
            }
        )
        if var == "sq_dist_from_start":
            row.update(fit_t_start=fit.t_start, fit_t_end=fit.t_end)
    geo = sphere_geometry(ds, row["fit_t_end"])
    row.update(geo)
    # the decade of the run that ends where the scale-invariant weights reach the small-angle limit
    # (from step 10 at the earliest, past the momentum's memory; none if that leaves less than 5x)
    end = float(geo["small_angle_steps"])
    start = max(SMALL_ANGLE_FIRST_STEP, end / 10)
    small = (start / float(tensor_steps[-1]), end / float(tensor_steps[-1]))
    fit = (
        fit_exponent(
            tensor_steps,
            parts_by_var["sq_dist_from_start"],
            window=small,
            n_points=int(cfg["fit_points"]),
            n_boot=int(cfg["bootstrap_samples"]),
            rng=rng,
        )
        if end >= 5 * start
        else None
    )
    row.update(
        c_small_angle=fit.c if fit else float("nan"),
        c_small_angle_low=fit.c_low if fit else float("nan"),
        c_small_angle_high=fit.c_high if fit else float("nan"),
    )
    lvl = stationary_level(ds["sq_step"].values, tuple(cfg["stationary_window"]), int(cfg["stationary_batches"]))
    row.update(sq_step_mean=lvl.mean, sq_step_stderr=lvl.stderr)
    row["stationarity_ratio"] = local_displacement.stationarity_ratio(
        ds["sq_step"].values, int(cfg["stationarity_window"])
    )
    i0, i1 = (int(f * len(steps)) for f in cfg["stationary_window"])
    batches = min(int(cfg["stationary_batches"]), (i1 - i0) // 2)
    if batches >= 4:  # a trend needs at least four batch means of two steps
        trend = stationarity.drift(ds["sq_step"].values[i0:i1], batches)
        row.update(
            sq_step_relative_drift=trend["relative_change"],
            sq_step_relative_drift_stderr=trend["relative_change_stderr"],
            sq_step_stationary=int(trend["stationary"]),
        )
    else:
        row.update(sq_step_relative_drift=np.nan, sq_step_relative_drift_stderr=np.nan, sq_step_stationary=0)
    row.update(local_displacement.predictions(ds, tuple(cfg["stationary_window"])))
    row["theory_scale"] = theory_scale(row["lr"], row["batch_size"], row["momentum"])
    row["noise_trace_estimate"] = lvl.mean / row["theory_scale"]
    row["radial_fraction_end"] = float(ds["sq_dist_radial"].values[-1] / ds["sq_dist_from_start"].values[-1])
    for split in ("train", "test"):
        for m in ("loss", "accuracy"):
            v = ds[f"eval_{split}_{m}"].values
            row[f"{split}_{m}_start"], row[f"{split}_{m}_end"] = float(v[0]), float(v[-1])
    return row
