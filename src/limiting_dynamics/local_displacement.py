"""The stationary local displacement ``||theta_{k+1} - theta_k||^2 = lr^2 ||v_k||^2``:
how stationary it is, and what it is compared with (docs/theory.md).

**The prediction** (made by the predict stage, not here) takes the noise from
independent minibatch gradients at points of the run (the gradient-noise
stage): ``lr^2 tr Cov(g_S) / (1 - beta^2)``. Its input is measured apart from
the step it predicts.

**In-run noise formula: a consistency check.** The momentum buffer also gives
every step's minibatch gradient ``g_k`` (:class:`.recording.StepRecorder`), and
``lr^2 E||g||^2 / (1 - beta^2)`` looks like the same formula. It is close to an
identity: with ``u_k = v_k - beta v_{k-1}``, at stationarity
``(1 - beta^2) E||v||^2 = E||u||^2 + 2 beta E<v_{k-1}, u_k>``, so the ratio of
the measured step to it only measures how the momentum correlates with the
next gradient (the restoring force), and ``E||g||^2`` holds the restoring force
as well as the noise. The correlation is reported as its own number,
``momentum_gradient_correlation`` = ``sum E<v_{k-1}, g_k> / sqrt(E||v||^2
E||g||^2)`` (0 without restoring force). The weight-decay term
``lr^2 wd^2 ||theta_SI||^2 / (1 - beta)^2`` of a shrinking norm is left out:
once the norm of the scale-invariant weights has settled, the tangential
steps cancel the shrink on average.

**Scale invariance, measured.** A tensor is scale-invariant when its gradient
is orthogonal to it. :func:`scale_invariance` takes the median over the
window of ``|cos(theta_{k-1}, g_k)|`` per tensor from the recorded inner
products; a tensor passes when it is below :data:`SCALE_INVARIANT_COSINE`.
Exact invariance gives float32 round-off, ~1e-6; BatchNorm's ``eps`` in
``1 / sqrt(var + eps)`` breaks it slightly where a tensor's outputs have a small
variance (1e-3 to 4e-3 measured on the default's shortcut convolutions); the
affine BatchNorm parameters and the classifier give 1e-2 and more. The
norm-equilibrium identity is applied to the tensors that pass, and the
declared set (weights feeding a BatchNorm) is compared with them.

**Norm equilibrium** (Wan et al. 2021): for a scale-invariant tensor ``w`` the
gradient is orthogonal to ``w``. With ``N = ||w||^2`` and ``r = <w, v>`` the
update gives exactly ``N' - N = -2 lr (beta r + wd N) + lr^2 ||v'||^2`` and
``r' = beta r + wd N - lr ||v'||^2``; averaged over a window in which ``N`` and
``r`` are stationary this is ``lr^2 E||v||^2 = 2 lr wd E N / (1 + beta)``,
whatever the noise: a **stationarity check** of the norms, not a test of the
noise model. With drift the same algebra leaves
``[(1 - beta) dN - 2 lr beta dr] / (1 + beta)`` per step on the right
(``dN``, ``dr``: mean change per step); :func:`predictions` reports the norm's
share of it (``norm_drift_fraction``) so that a window that is not stationary
shows. The other parameters (BatchNorm affine parameters, the
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


def stationarity_ratio(sq_step, window: int) -> float:
    """Largest over smallest ``window``-step rolling mean of the step: about 1
    for a stationary series, 10-30 for the BatchNorm + weight-decay relaxation
    cycles of a network that interpolates its data."""
    m = rolling_mean(sq_step, window)
    return float(m.max() / m.min()) if m.min() > 0 else float("inf")


SCALE_INVARIANT_COSINE = 1e-2  # a tensor is measured scale-invariant when median |cos(theta, g)| is below this


def scale_invariance(ds, window: tuple[float, float]) -> np.ndarray:
    """Per tensor, the median over the window of ``|<theta_{k-1}, g_k>| /
    (||theta_k|| ||g_k||)`` (``||theta_k||`` stands for ``||theta_{k-1}||``;
    they differ by one step): about 1e-6 for a scale-invariant tensor, whose
    gradient is orthogonal to it."""
    keep = _span(ds["tensor_step"].values, window)
    dot = _per_tensor(ds, "param_dot_grad_by_tensor", keep)
    n2 = _per_tensor(ds, "sq_param_norm_by_tensor", keep)
    g2 = _per_tensor(ds, "sq_grad_by_tensor", keep)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.abs(dot) / np.sqrt(n2 * g2)
    return np.nanmedian(np.where(np.isfinite(cos), cos, np.nan), axis=0)


def _span(steps: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    last = float(steps[-1])
    return (steps > window[0] * last) & (steps <= window[1] * last)


def _per_tensor(ds, name: str, keep: np.ndarray) -> np.ndarray:
    return ds[name].transpose("tensor_step", "tensor").values[keep]


def grad_sq_norm(ds, window: tuple[float, float]) -> float:
    """``E||g_k||^2``: the mean square of the minibatch gradient read off the
    momentum buffers, over ``window`` (fractions of the run) of a trajectory."""
    return float(_per_tensor(ds, "sq_grad_by_tensor", _span(ds["tensor_step"].values, window)).sum(axis=1).mean())


def predictions(ds, window: tuple[float, float]) -> dict:
    """Measured and predicted stationary step over ``window`` (fractions of
    the run) of a trajectory (:mod:`.trajectory`), in total and split into the
    scale-invariant tensors (``_si``) and the rest (``_other``); module doc.

    The scale-invariant tensors are those measured so (:func:`scale_invariance`).
    Keys: ``sq_step_measured`` (every step), ``sq_step_measured_si`` /
    ``_other`` (at the per-tensor steps), ``sq_step_equilibrium_check_si``,
    ``sq_step_in_run_check_si`` / ``_other``, the totals ``sq_step_in_run_check``
    (noise formula everywhere) and ``sq_step_equilibrium_check`` (identity on
    the scale-invariant tensors plus the noise formula on the rest), their
    ratios ``measured_over_in_run_check`` and ``measured_over_equilibrium_check``, the
    scale-invariant parts' ratios, the per-tensor identity ratio's range
    (``equilibrium_ratio_min`` / ``_median`` / ``_max``), the measured share of
    the other parameters (``other_fraction``), the in-run ``grad_sq_norm``
    (``E||g_k||^2``, the minibatch gradient's mean square along the window),
    the norm's drift (``norm_drift_fraction``), the
    ``momentum_gradient_correlation`` (module doc), and the scale-invariant
    tensors declared, measured, the number on which the two disagree, the
    largest cosine among those measured scale-invariant and the smallest
    among the rest.
    """
    lr, beta, wd = (float(ds.attrs[k]) for k in ("lr", "momentum", "weight_decay"))
    declared = ds["tensor_scale_invariant"].values.astype(bool)
    cosine = scale_invariance(ds, window)
    si = cosine < SCALE_INVARIANT_COSINE
    ts = ds["tensor_step"].values
    keep = _span(ts, window)
    v2 = _per_tensor(ds, "sq_velocity_by_tensor", keep)
    g2 = _per_tensor(ds, "sq_grad_by_tensor", keep)
    vg = _per_tensor(ds, "velocity_dot_grad_by_tensor", keep)
    n2 = _per_tensor(ds, "sq_param_norm_by_tensor", keep)
    measured = lr**2 * v2.mean(axis=0)
    identity = 2 * lr * wd * n2.mean(axis=0) / (1 + beta)
    noise = lr**2 * g2.mean(axis=0) / (1 - beta**2)
    steps = ds["step"].values
    out = {
        "sq_step_measured": float(ds["sq_step"].values[_span(steps, window)].mean()),
        "sq_step_measured_si": float(measured[si].sum()),
        "sq_step_measured_other": float(measured[~si].sum()),
        "sq_step_equilibrium_check_si": float(identity[si].sum()),
        "sq_step_in_run_check_si": float(noise[si].sum()),
        "sq_step_in_run_check_other": float(noise[~si].sum()),
        "grad_sq_norm": grad_sq_norm(ds, window),
        "momentum_gradient_correlation": float(vg.sum(axis=1).mean() / np.sqrt(v2.sum(1).mean() * g2.sum(1).mean())),
        "scale_invariant_declared": int(declared.sum()),
        "scale_invariant_measured": int(si.sum()),
        "scale_invariant_disagreements": int((si != declared).sum()),
        "scale_invariant_cosine_max": float(cosine[si].max()) if si.any() else float("nan"),
        "other_cosine_min": float(cosine[~si].min()) if (~si).any() else float("nan"),
    }
    out["sq_step_in_run_check"] = out["sq_step_in_run_check_si"] + out["sq_step_in_run_check_other"]
    out["sq_step_equilibrium_check"] = out["sq_step_equilibrium_check_si"] + out["sq_step_in_run_check_other"]
    out["measured_over_in_run_check"] = out["sq_step_measured"] / out["sq_step_in_run_check"]
    out["measured_over_equilibrium_check"] = (
        out["sq_step_measured"] / out["sq_step_equilibrium_check"] if si.any() else float("nan")
    )
    out["measured_over_in_run_check_si"] = _ratio(out["sq_step_measured_si"], out["sq_step_in_run_check_si"])
    out["measured_over_equilibrium_check_si"] = _ratio(out["sq_step_measured_si"], out["sq_step_equilibrium_check_si"])
    out["measured_over_in_run_check_other"] = _ratio(out["sq_step_measured_other"], out["sq_step_in_run_check_other"])
    per_tensor = measured[si] / identity[si] if si.any() else np.array([np.nan])
    out.update(
        equilibrium_ratio_min=float(per_tensor.min()),
        equilibrium_ratio_median=float(np.median(per_tensor)),
        equilibrium_ratio_max=float(per_tensor.max()),
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
