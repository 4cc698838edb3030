"""The stationary local displacement ``||theta_{k+1} - theta_k||^2 = lr^2 ||v_k||^2``:
how stationary it is, and two parameter-free predictions of its level.

**Noise formula** (PAPER.md section 5): when the drift is negligible the
momentum buffer is a geometric sum of minibatch gradients, so
``E||v||^2 = E||g||^2 / (1 - beta^2)`` and the step is
``lr^2 E||g||^2 / (1 - beta^2)``. The gradients are read off the run itself
(:class:`.recording.StepRecorder` records ``||g_k||^2`` per tensor from the
momentum buffers), so the noise is the one along the run, not at one snapshot.
The weight-decay term ``lr^2 wd^2 ||theta_SI||^2 / (1 - beta)^2`` of a
shrinking norm is left out: once the norm of the scale-invariant weights has
settled, the tangential steps cancel the shrink on average.

**Norm equilibrium** (Wan et al. 2021): for a scale-invariant tensor ``w`` the
gradient is orthogonal to ``w``. With ``N = ||w||^2`` and ``r = <w, v>`` the
update gives exactly ``N' - N = -2 lr (beta r + wd N) + lr^2 ||v'||^2`` and
``r' = beta r + wd N - lr ||v'||^2``; averaged over a window in which ``N`` and
``r`` are stationary this is ``lr^2 E||v||^2 = 2 lr wd E N / (1 + beta)``,
whatever the noise. With drift the same algebra leaves
``[(1 - beta) dN - 2 lr beta dr] / (1 + beta)`` per step on the right
(``dN``, ``dr``: mean change per step); :func:`predictions` reports the norm's
share of it (``norm_drift_fraction``) so that a window that is not stationary
shows. The non-scale-invariant parameters (BatchNorm affine parameters, the
classifier) have no such identity; their share is predicted by the noise
formula in both totals.
"""

from __future__ import annotations

import numpy as np


def rolling_mean(values, window: int) -> np.ndarray:
    """Means over every run of ``window`` consecutive values (the valid part)."""
    x = np.asarray(values, dtype=float)
    window = max(1, min(int(window), len(x)))
    c = np.concatenate([[0.0], np.cumsum(x)])
    return (c[window:] - c[:-window]) / window


def stationarity_ratio(sq_step, window: int = 200) -> float:
    """Largest over smallest ``window``-step rolling mean of the step: about 1
    for a stationary series, 10-30 for the BatchNorm + weight-decay relaxation
    cycles of a network that interpolates its data."""
    m = rolling_mean(sq_step, window)
    return float(m.max() / m.min()) if m.min() > 0 else float("inf")


def _span(steps: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    last = float(steps[-1])
    return (steps > window[0] * last) & (steps <= window[1] * last)


def _per_tensor(ds, name: str, keep: np.ndarray) -> np.ndarray:
    return ds[name].transpose("tensor_step", "tensor").values[keep]


def grad_sq_norm(ds, window=(0.5, 1.0)) -> float:
    """``E||g_k||^2``: the mean square of the minibatch gradient read off the
    momentum buffers, over ``window`` (fractions of the run) of a trajectory."""
    return float(_per_tensor(ds, "sq_grad_by_tensor", _span(ds["tensor_step"].values, window)).sum(axis=1).mean())


def predictions(ds, window=(0.5, 1.0)) -> dict:
    """Measured and predicted stationary step over ``window`` (fractions of
    the run) of a trajectory (:mod:`.trajectory`), in total and split into the
    scale-invariant tensors (``_si``) and the rest (``_other``); module doc.

    Keys: ``sq_step_measured`` (every step), ``sq_step_measured_si`` /
    ``_other`` (at the per-tensor steps), ``sq_step_identity_si``,
    ``sq_step_noise_si`` / ``_other``, the totals ``sq_step_predicted_noise``
    (noise formula everywhere) and ``sq_step_predicted_identity`` (identity on
    the scale-invariant tensors plus the noise formula on the rest), their
    ratios ``measured_over_noise`` and ``measured_over_identity``, the
    scale-invariant parts' ratios, the per-tensor identity ratio's range
    (``identity_ratio_min`` / ``_median`` / ``_max``), the measured share of
    the other parameters (``other_fraction``), the in-run ``grad_sq_norm``
    (``E||g_k||^2``, the minibatch gradient's mean square along the window)
    and the norm's drift (``norm_drift_fraction``).
    """
    lr, beta, wd = (float(ds.attrs[k]) for k in ("lr", "momentum", "weight_decay"))
    si = ds["tensor_scale_invariant"].values.astype(bool)
    ts = ds["tensor_step"].values
    keep = _span(ts, window)
    v2 = _per_tensor(ds, "sq_velocity_by_tensor", keep)
    g2 = _per_tensor(ds, "sq_grad_by_tensor", keep)
    n2 = _per_tensor(ds, "sq_param_norm_by_tensor", keep)
    measured = lr**2 * v2.mean(axis=0)
    identity = 2 * lr * wd * n2.mean(axis=0) / (1 + beta)
    noise = lr**2 * g2.mean(axis=0) / (1 - beta**2)
    steps = ds["step"].values
    out = {
        "sq_step_measured": float(ds["sq_step"].values[_span(steps, window)].mean()),
        "sq_step_measured_si": float(measured[si].sum()),
        "sq_step_measured_other": float(measured[~si].sum()),
        "sq_step_identity_si": float(identity[si].sum()),
        "sq_step_noise_si": float(noise[si].sum()),
        "sq_step_noise_other": float(noise[~si].sum()),
        "grad_sq_norm": grad_sq_norm(ds, window),
    }
    out["sq_step_predicted_noise"] = out["sq_step_noise_si"] + out["sq_step_noise_other"]
    out["sq_step_predicted_identity"] = out["sq_step_identity_si"] + out["sq_step_noise_other"]
    out["measured_over_noise"] = out["sq_step_measured"] / out["sq_step_predicted_noise"]
    out["measured_over_identity"] = (
        out["sq_step_measured"] / out["sq_step_predicted_identity"] if si.any() else float("nan")
    )
    out["measured_over_noise_si"] = _ratio(out["sq_step_measured_si"], out["sq_step_noise_si"])
    out["measured_over_identity_si"] = _ratio(out["sq_step_measured_si"], out["sq_step_identity_si"])
    out["measured_over_noise_other"] = _ratio(out["sq_step_measured_other"], out["sq_step_noise_other"])
    per_tensor = measured[si] / identity[si] if si.any() else np.array([np.nan])
    out.update(
        identity_ratio_min=float(per_tensor.min()),
        identity_ratio_median=float(np.median(per_tensor)),
        identity_ratio_max=float(per_tensor.max()),
    )
    total = out["sq_step_measured_si"] + out["sq_step_measured_other"]
    out["other_fraction"] = out["sq_step_measured_other"] / total if total > 0 else float("nan")
    norm_si = n2[:, si].sum(axis=1) if si.any() else np.zeros(1)
    span_steps = float(ts[keep][-1] - ts[keep][0]) if keep.sum() > 1 else float("nan")
    drift = (1 - beta) * (norm_si[-1] - norm_si[0]) / span_steps
    out["norm_drift_fraction"] = float(drift / (2 * lr * wd * norm_si.mean())) if si.any() and wd > 0 else float("nan")
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")
