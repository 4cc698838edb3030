"""Oscillations of the recorded projections, measured as oscillations.

A mode of SGD with momentum on a quadratic (``a = lam + wd``, PyTorch's update,
see :mod:`.theory`) driven by white noise of variance ``q`` per step has the
velocity (momentum-buffer) power spectrum

    S_v(f) = q |z - 1|^2 / |D(z)|^2,   D(z) = z^2 - 2 r cos(w) z + r^2,   z = exp(2 pi i f)

with poles ``r exp(+-i w)``: ``r = sqrt(beta)`` and
``cos w = (1 + beta - lr a) / (2 sqrt(beta))`` for the quadratic, so the
oscillation frequency is ``w / (2 pi)`` cycles per step
(:func:`.theory.oscillation_frequency`). A network's projection also wanders
slowly: if the minimum along the mode moves as a random walk with step
variance ``s``, the mode is driven by ``xi - a c`` and the velocity spectrum
gains ``q_d / |D(z)|^2`` (``q_d = a^2 s``, the same poles; it is the velocity
of following the minimum, ``s / lr^2`` at ``f = 0``), which dominates a
position spectrum near ``f = 0``; the global maximum of a position spectrum
finds that wander, not the mode. :func:`fit_oscillator` fits

    S_v(f) = (q |z - 1|^2 + q_d) / |D(z)|^2 + floor

(free ``q``, ``q_d``, pole radius ``r`` and angle ``w``, and a white floor for
what other directions leak in) to the Welch spectrum of each velocity
projection by maximising the Whittle likelihood. On simulated modes with such
a wander it recovers the frequency within a few per cent where the position
spectrum's maximum is off by orders of magnitude (tests/unit/test_spectra.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.signal


def oscillator_velocity_psd(
    freq, q: float, radius: float, angle: float, q_drift: float = 0.0, floor: float = 0.0
) -> np.ndarray:
    """``(q |z - 1|^2 + q_drift) / |D(z)|^2 + floor`` at ``freq`` (cycles per
    step), as Welch's one-sided density for a unit sampling rate (twice the
    two-sided one)."""
    z = np.exp(2j * np.pi * np.asarray(freq, dtype=float))
    d = z * z - 2 * radius * np.cos(angle) * z + radius * radius
    return 2.0 * ((q * np.abs(z - 1) ** 2 + q_drift) / np.abs(d) ** 2 + floor)


def frequency_cramer_rao(frequency, radius: float, steps: int) -> np.ndarray:
    """The smallest standard deviation of ``f_measured / f - 1`` that any unbiased
    estimator reaches from one window of ``steps`` velocity samples of an
    oscillator with poles at ``radius`` and ``2 pi frequency`` (Cramér-Rao):
    the Whittle Fisher information of the exact spectrum
    (:func:`oscillator_velocity_psd`) over the window's Fourier frequencies,
    with the noise level, the radius and the angle all unknown. NaN where
    ``frequency`` is 0 (an overdamped mode) or not finite. A pole near the unit
    circle makes a line as wide as ``(1 - radius) / pi`` cycles per step, so a
    slow mode needs many periods in the window before its frequency is fixed."""
    grid = np.arange(1, int(steps) // 2) / int(steps)
    out = []
    for f0 in np.atleast_1d(np.asarray(frequency, dtype=float)):
        if not (np.isfinite(f0) and f0 > 0):
            out.append(np.nan)
            continue
        theta = np.array([0.0, float(radius), 2 * np.pi * f0])

        def log_psd(t):
            return np.log(oscillator_velocity_psd(grid, np.exp(t[0]), t[1], t[2]))

        step = 1e-7
        grad = np.stack([(log_psd(theta + e) - log_psd(theta - e)) / (2 * step) for e in np.eye(3) * step], axis=1)
        out.append(float(np.sqrt(np.linalg.inv(grad.T @ grad)[2, 2]) / theta[2]))
    return np.asarray(out)


def welch(series, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectral density of each column, mean removed: Welch's average over
    half-overlapping Hann-windowed segments of ``nperseg`` steps, or, when one
    segment covers the whole series, its raw periodogram (no taper). The
    Whittle likelihood of :func:`fit_oscillator` treats the ordinates as
    independent with mean ``S(f)``, which holds for the raw periodogram at the
    window's Fourier frequencies (the spectrum :func:`frequency_cramer_rao` is
    computed for); a taper on a single segment correlates neighbouring
    ordinates and widens a line that is only a few bins wide. On the quadratic
    family's runs (2,000 steps, periods of 470-1,130 steps) the median
    frequency error went from 38% (Hann) to 23% (measured 2026-12-06)."""
    x = np.asarray(series, dtype=float)
    nper = int(min(nperseg, x.shape[0]))
    if nper == x.shape[0]:
        return scipy.signal.periodogram(x, window="boxcar", detrend="constant", axis=0)
    return scipy.signal.welch(x, nperseg=nper, axis=0, detrend="constant")


@dataclass
class OscillatorFit:
    """Per column: ``frequency`` (``angle / 2 pi``, cycles per step), pole
    ``radius``, noise ``q`` per step, wander ``q_drift``, white ``floor`` and
    whether the optimiser converged."""

    frequency: np.ndarray
    radius: np.ndarray
    q: np.ndarray
    q_drift: np.ndarray
    floor: np.ndarray
    converged: np.ndarray


def _unpack(params: np.ndarray) -> tuple[float, float, float, float, float]:
    log_q, logit_r, angle, log_qd, log_floor = params
    return np.exp(log_q), 1 / (1 + np.exp(-logit_r)), angle, np.exp(log_qd), np.exp(log_floor)


def _whittle(params: np.ndarray, f: np.ndarray, p: np.ndarray) -> float:
    m = oscillator_velocity_psd(f, *_unpack(params))
    return float(np.sum(np.log(m) + p / m))


_TINY = np.log(1e-9)  # wander and floor start (and may stay) negligible: 1e-9 of the mean power


# Starting grid of the poles: radii up to 0.998 (beta 0.99 puts them at 0.995) and
# angles log-spaced from 1e-3 rad (periods of thousands of steps) to near pi.
START_RADII = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998)
START_ANGLES = np.geomspace(1e-3, 0.98 * np.pi, 64)
_ANGLE_BOUNDS = (1e-4, np.pi - 1e-4)


def _fit_one(f: np.ndarray, p: np.ndarray) -> tuple:
    scale = float(np.mean(p))
    p = p / scale  # the likelihood's shape does not depend on the scale
    best = (np.inf, None)
    for radius in START_RADII:  # coarse grid of the poles, q profiled out
        for angle in START_ANGLES:
            shape = oscillator_velocity_psd(f, 1.0, radius, angle)
            q = float(np.mean(p / shape))
            value = float(np.sum(np.log(q * shape) + p / (q * shape)))
            if value < best[0]:
                best = (value, [np.log(q), np.log(radius / (1 - radius)), angle])
    start = np.array(best[1] + [np.log(1e-3), np.log(1e-3)])
    bounds = [(None, None), (-8.0, 8.0), _ANGLE_BOUNDS, (2 * _TINY, None), (2 * _TINY, None)]
    res = scipy.optimize.minimize(_whittle, start, args=(f, p), method="L-BFGS-B", bounds=bounds)
    q, radius, angle, q_drift, floor = _unpack(res.x)
    at_bound = not (_ANGLE_BOUNDS[0] * 1.001 < angle < _ANGLE_BOUNDS[1] * 0.999)  # no oscillation found
    return angle / (2 * np.pi), radius, q * scale, q_drift * scale, floor * scale, bool(res.success) and not at_bound


def fit_oscillator(velocity, nperseg: int) -> OscillatorFit:
    """Fit the damped oscillator's velocity spectrum with a wandering minimum
    and a white floor (module doc) to each column of ``velocity`` (steps x
    modes): Whittle likelihood over the Welch spectrum, frequencies above 0."""
    v = np.asarray(velocity, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    f, pxx = welch(v, nperseg)
    keep = f > 0
    fits = [_fit_one(f[keep], pxx[keep, j]) for j in range(v.shape[1])]
    return OscillatorFit(*(np.asarray(col) for col in zip(*fits)))
