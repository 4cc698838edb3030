"""Geometry apart from dynamics: the scale-invariant weights move on spheres.

A weight tensor ``w`` that feeds BatchNorm (train mode) can be rescaled without
changing the loss, so its gradient is orthogonal to it and, once weight decay
and noise balance its norm, it turns on a sphere of (nearly) fixed radius.
Per tensor, ``||w_t - w_0||^2 = (r_t - r_0)^2 + 2 r_t r_0 (1 - cos phi_t)`` is
bounded whatever the dynamics: a walk that turns far enough saturates for
geometric reasons. A Brownian walk on a sphere has ``E cos phi_t = exp(-x)``
with ``x`` growing linearly in ``t``, so its squared chord ``2 r^2 (1 - e^-x)``
has the local log-log slope ``x / (e^x - 1)``: still 1 for small angles, 0.95
at ``phi = 0.44`` rad (25 degrees), 0.5 at 1.28 rad. An exponent ``c`` fitted
where the weights have turned further than :func:`small_angle_limit` is bent by
the sphere; "anomalous" means anomalous beyond that.
"""

from __future__ import annotations

import numpy as np


def rotation_angle(d2_by_tensor: np.ndarray, p2_by_tensor: np.ndarray, p2_start: np.ndarray) -> np.ndarray:
    """Angle (rad) between each tensor at each step and at the start, from the
    recorded squared distance and norms: ``||w - w0||^2 - (r - r0)^2 = 2 r r0 (1 - cos phi)``,
    so ``phi = 2 arcsin(sqrt(that / (4 r r0)))``, accurate for small angles
    (the distance is recorded directly, not as a difference of norms)."""
    r = np.sqrt(np.maximum(p2_by_tensor, 0.0))
    r0 = np.sqrt(np.maximum(p2_start, 0.0))[None, :]
    chord = np.maximum(d2_by_tensor - (r - r0) ** 2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(chord / (4 * r * r0))
    return np.where(r * r0 > 0, 2 * np.arcsin(np.clip(half, 0.0, 1.0)), 0.0)


def brownian_sphere_slope(angle) -> np.ndarray:
    """Local log-log slope of ``E||w_t - w_0||^2`` of a Brownian walk on a
    sphere when its typical angle from the start is ``angle`` (rad):
    ``x / (e^x - 1)`` with ``e^-x = cos(angle)`` (1 at the start, 0 at 90 degrees)."""
    x = -np.log(np.clip(np.cos(np.asarray(angle, dtype=float)), 1e-300, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x > 1e-12, x / np.expm1(x), 1.0)


SMALL_ANGLE_SLOPE = 0.95  # the small-angle regime: a Brownian walk on the sphere would still show c >= this


def small_angle_limit(slope: float = SMALL_ANGLE_SLOPE) -> float:
    """The angle (rad) at which a Brownian walk on a sphere has bent its
    apparent exponent down to ``slope`` (0.44 rad for 0.95)."""
    lo, hi = 0.0, np.pi / 2 - 1e-9
    for _ in range(100):  # bisection: the slope falls monotonically with the angle
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if brownian_sphere_slope(mid) > slope else (lo, mid)
    return 0.5 * (lo + hi)


def rms_angle(angles: np.ndarray, sq_norm_start: np.ndarray) -> np.ndarray:
    """Norm-weighted root-mean-square angle over tensors, per step:
    ``sqrt(sum_j r_j0^2 phi_j^2 / sum_j r_j0^2)`` (the angle of the concatenated
    weights for small, independent turns)."""
    w = np.asarray(sq_norm_start, dtype=float)
    return np.sqrt((np.asarray(angles, dtype=float) ** 2 @ w) / w.sum())


def geodesic_parts(
    d2_by_tensor: np.ndarray, p2_by_tensor: np.ndarray, p2_start: np.ndarray, scale_invariant: np.ndarray
) -> np.ndarray:
    """Per-tensor squared distance with the scale-invariant tensors measured
    along their sphere: ``(r - r0)^2 + r r0 phi^2`` (the arc instead of the
    chord, equal for small angles), the other tensors' squared distance as it is."""
    angle = rotation_angle(d2_by_tensor, p2_by_tensor, p2_start)
    r = np.sqrt(np.maximum(p2_by_tensor, 0.0))
    r0 = np.sqrt(np.maximum(p2_start, 0.0))[None, :]
    arc = (r - r0) ** 2 + r * r0 * angle**2
    return np.where(np.asarray(scale_invariant, bool)[None, :], arc, d2_by_tensor)
