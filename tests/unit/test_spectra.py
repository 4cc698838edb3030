"""The damped-oscillator fit finds the phase-space oscillation under a slow wander."""

import numpy as np
import pytest

from limiting_dynamics import spectra, theory
from limiting_dynamics.hyperparameters import Hyperparameters

LR, BETA, WD = 0.05, 0.9, 1e-3
HP = Hyperparameters(LR, 1, BETA, WD)


LAMS = np.array([8.0, 4.0, 1.9, 1.0, 0.5])


def _wandering_modes(wander_sd: float, steps: int = 4000, seed: int = 0):
    """Positions and momentum buffers of quadratic modes (PyTorch's update) whose
    minimum moves as a random walk of step ``wander_sd``."""
    rng = np.random.default_rng(seed)
    a = LAMS + WD
    x, v, c = (np.zeros(LAMS.size) for _ in range(3))
    xs, vs = np.empty((steps, LAMS.size)), np.empty((steps, LAMS.size))
    for k in range(steps + 2000):
        c = c + wander_sd * rng.standard_normal(LAMS.size)
        v = BETA * v + a * (x - c) + rng.standard_normal(LAMS.size)
        x = x - LR * v
        if k >= 2000:
            xs[k - 2000], vs[k - 2000] = x, v
    return xs, vs


@pytest.mark.parametrize("wander_sd", [0.0, 0.2])
def test_fit_recovers_the_frequency_and_damping_of_every_mode(wander_sd):
    xs, vs = _wandering_modes(wander_sd)
    fit = spectra.fit_oscillator(vs)
    predicted = theory.oscillation_frequency(LAMS, HP)
    np.testing.assert_allclose(fit.frequency, predicted, rtol=0.1)
    np.testing.assert_allclose(fit.radius, np.sqrt(BETA), atol=0.02)
    assert fit.converged.all()


def test_a_wander_defeats_the_position_spectrum_maximum_but_not_the_fit():
    xs, vs = _wandering_modes(0.2, seed=1)
    f, pxx = spectra.welch(xs, 2048)
    argmax = f[1:][np.argmax(pxx[1:], axis=0)]  # the previous statistic: global maximum of the position spectrum
    predicted = theory.oscillation_frequency(LAMS, HP)
    assert np.all(argmax < 0.2 * predicted)  # it finds the wander near f = 0
    fit = spectra.fit_oscillator(vs)
    np.testing.assert_allclose(fit.frequency, predicted, rtol=0.1)
    # the wander is seen and separated: q_drift = a^2 x (wander step variance), q = the noise
    np.testing.assert_allclose(fit.q_drift, (LAMS + WD) ** 2 * 0.2**2, rtol=0.3)
    np.testing.assert_allclose(fit.q, 1.0, rtol=0.15)


def test_model_spectrum_integrates_to_the_stationary_velocity_variance():
    lam = 3.0
    q = 2.0
    r, angle = np.sqrt(BETA), 2 * np.pi * theory.oscillation_frequency([lam], HP)[0]
    f = np.linspace(0, 0.5, 200001)
    var = np.trapezoid(spectra.oscillator_velocity_psd(f, q, r, angle), f)
    exact = theory.stationary_moments([lam], q, HP).velocity_var.values[0]
    assert var == pytest.approx(exact, rel=1e-4)
