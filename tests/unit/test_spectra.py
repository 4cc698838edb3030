"""The damped-oscillator fit finds the phase-space oscillation under a slow wander."""

import numpy as np
import pytest
import scipy.signal
from threadpoolctl import threadpool_limits

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
    fit = spectra.fit_oscillator(vs, 256)
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
    fit = spectra.fit_oscillator(vs, 256)
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


# ----------------------------------------------------------------------------
# the fit at the workflow's settings: 30 replicate windows per mode
# ----------------------------------------------------------------------------
#
# (i) the default cell: beta 0.9, lr 0.02, 625-step mode window (a quarter of 2,500 steps),
#     Welch segments of 256 steps; frequencies 0.032-0.051 cycles/step.
# (ii) the quadratic family: beta 0.99, lr 1e-4, 2,000-step window, one raw (untapered) periodogram
#     of the whole window; periods 724, 409 and 288 steps, pole radius sqrt(0.99) = 0.995, so a mode forgets
#     its phase in ~200 steps: quality factor w / (2 (1 - r)) = 0.87, 1.5 and 2.2.
#
# Statistics over the 30 replicates of each mode (seed 0): "median" is the median of
# fitted / true - 1, "spread" the interquartile range of fitted / true, "typical" the median of
# |fitted / true - 1|; the old estimator is the argmax of the Welch position spectrum (as in
# test_a_wander_defeats_the_position_spectrum_maximum_but_not_the_fit), at the same segment.
#
#   setting  lam  median  spread  typical | old: median typical | Cramer-Rao sd of one window
#   (i)      2    +2.6%   0.10    5.8%    |      -1.2%  11.1%   |  5.0%
#   (i)      3    +0.9%   0.13    5.8%    |      -0.4%  10.4%   |  3.9%
#   (i)      5    -0.9%   0.07    3.7%    |      -0.8%   6.8%   |  2.9%
#   (ii)     1    +5.8%   0.60    30%     |     -27.6%  36%     | 26%  (5/30 fits: no oscillation)
#   (ii)     2.6  +5.6%   0.16    11%     |     -18.2%  23%     | 12%  (2/30)
#   (ii)     5    -0.8%   0.13    6.1%    |     -13.7%  15%     |  7.8%
#
# (The old estimator on a Hann-windowed Welch spectrum, as it was. With a Hann window on the one
# segment the fit's (ii) rows were -1.2% 1.44 50% (9/30), +4.9% 0.18 9.4%, -1.3% 0.16 8.9% (1/30):
# the untapered periodogram converges more often and halves the typical error of lam 1.)
# Over seeds 1-5, with the Hann window, the (ii) medians were -3% to +58% (lam 1), -0.5% to
# +5.2% (2.6), +0.4% to +5% (5). The lam = 1 mode of (ii) cannot be measured to 10% from a 2,000-step window by any
# estimator: the Cramer-Rao bound of the exact spectrum is 26% for one window, and the fit is
# no better started at the true parameters (it is the likelihood, not the optimiser's start).
# Halving the segment (1,000 steps) does not change this (the window, not the segment, is the
# limit); a window of 8,000 steps would bring the bound to 12%.

PRODUCTION = {
    "i": (Hyperparameters(0.02, 1, 0.9, 0.0), np.array([2.0, 3.0, 5.0]), 625, 256),
    "ii": (Hyperparameters(1e-4, 1, 0.99, 0.0), np.array([1.0, 2.6, 5.0]), 2000, 2000),
}
REPLICATES = 30


def _replicate_windows(hp, lams, steps, reps, seed=0):
    """Positions and momentum buffers of independent modes (the exact recursion, unit noise per
    step), each started from the exact stationary distribution: columns replicate-major."""
    rng = np.random.default_rng(seed)
    m = theory.stationary_moments(lams, 1.0, hp)
    cov = np.empty((lams.size, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = m.position_var.values, m.velocity_var.values
    cov[:, 0, 1] = cov[:, 1, 0] = m.position_velocity_cov.values
    z = np.einsum("mij,rmj->rmi", np.linalg.cholesky(cov), rng.standard_normal((reps, lams.size, 2)))
    x, v = z[..., 0], z[..., 1]
    a = lams + hp.weight_decay
    xs, vs = np.empty((steps, reps, lams.size)), np.empty((steps, reps, lams.size))
    for k in range(steps):
        v = hp.momentum * v + a * x + rng.standard_normal(x.shape)
        x = x - hp.lr * v
        xs[k], vs[k] = x, v
    return xs.reshape(steps, -1), vs.reshape(steps, -1)


def _frequency_cramer_rao(lam, hp, steps):
    """Cramer-Rao bound on sd(f) / f from one window of ``steps`` (spectra.frequency_cramer_rao)."""
    return float(spectra.frequency_cramer_rao(theory.oscillation_frequency([lam], hp), np.sqrt(hp.momentum), steps)[0])


@pytest.fixture(scope="module")
def production_fits():
    with threadpool_limits(1):  # 180 fits of tiny vectors: BLAS threads only contend (4-10x slower on a busy machine)
        return _production_fits()


def _production_fits():
    out = {}
    for name, (hp, lams, steps, nperseg) in PRODUCTION.items():
        xs, vs = _replicate_windows(hp, lams, steps, REPLICATES)
        true = theory.oscillation_frequency(lams, hp)
        with np.errstate(over="ignore", invalid="ignore"):
            fit = spectra.fit_oscillator(vs, nperseg=nperseg)
        f, pxx = scipy.signal.welch(xs, nperseg=nperseg, axis=0, detrend="constant")  # the old estimator's spectrum
        argmax = f[1:][np.argmax(pxx[1:], axis=0)]
        out[name] = {
            "fit": fit.frequency.reshape(REPLICATES, -1) / true,
            "old": argmax.reshape(REPLICATES, -1) / true,
            "converged": fit.converged,
        }
    return out


def _stats(ratio):
    q1, med, q3 = np.percentile(ratio, [25, 50, 75], axis=0)
    return med - 1, q3 - q1, np.median(np.abs(ratio - 1), axis=0)


def test_fit_at_the_default_cell_settings(production_fits):
    # fails for a fit that reports the angle in radians (a factor 2 pi) or is biased by a bin of
    # the 256-step segment (1/256 cycles/step = 8-12% of these frequencies), and for the old
    # argmax, whose typical error (7-11%, bin quantisation and scatter) is about twice the fit's
    r = production_fits["i"]
    median, spread, typical = _stats(r["fit"])
    assert r["converged"].all()
    assert np.all(np.abs(median) < 0.05), median
    assert np.all(spread < 0.2), spread
    assert np.all(typical < 0.1), typical
    old_typical = _stats(r["old"])[2]
    assert np.all(typical < old_typical), (typical, old_typical)  # the old estimator is worse, every mode


def test_fit_at_the_quadratic_family_settings(production_fits):
    # lam 2.6 and 5: the median within 10% (fails for the position-spectrum argmax, whose
    # median is 14-18% low here: it finds the peak of the position spectrum, below the damped
    # frequency, quantised to 1/2000 cycles/step). lam 1 is exempt: see the next test.
    r = production_fits["ii"]
    median, spread, typical = _stats(r["fit"][:, 1:])
    assert np.all(np.abs(median) < 0.1), median
    assert np.all(spread < np.array([0.6, 0.3])), spread
    old_median, _, old_typical = _stats(r["old"][:, 1:])
    assert np.all(np.abs(old_median) > 0.1), old_median
    assert typical[1] < old_typical[1], (typical, old_typical)  # lam 5: 8.9% against 15%


def test_the_slowest_quadratic_mode_is_beyond_a_2000_step_window(production_fits):
    # why lam 1 of setting (ii) is not held to 10%: 2.8 periods of a mode that forgets its phase
    # in a quarter period; no unbiased estimator gets below 20% from one window (Cramer-Rao),
    # while the default cell's modes are bounded at 5% and below. The fit's spread there is
    # characterised, not endorsed: if a better fit brings it below 0.5, hold lam 1 to the median
    # assertion above.
    hp, lams, steps, _ = PRODUCTION["ii"]
    bounds = [_frequency_cramer_rao(lam, hp, steps) for lam in lams]
    assert bounds[0] > 0.2 and bounds[2] < 0.1, bounds
    hp_i, lams_i, steps_i, _ = PRODUCTION["i"]
    assert max(_frequency_cramer_rao(lam, hp_i, steps_i) for lam in lams_i) < 0.06
    spread = _stats(production_fits["ii"]["fit"][:, 0])[1]
    assert spread > 0.5, spread


def test_the_frequency_bound_falls_only_as_the_square_root_of_the_window(production_fits):
    """A damped oscillator forgets its phase, so a longer window adds independent
    pieces, not a longer baseline: 4x the steps halves the bound (not 8x, as for a
    pure tone). No estimator beats the bound: the fit's spread at the default
    cell's settings is at least 0.7 of it."""
    hp, lams, steps, _ = PRODUCTION["i"]
    f = theory.oscillation_frequency(lams, hp)
    bound = spectra.frequency_cramer_rao(f, np.sqrt(hp.momentum), steps)
    longer = spectra.frequency_cramer_rao(f, np.sqrt(hp.momentum), 4 * steps)
    np.testing.assert_allclose(bound / longer, 2.0, rtol=0.1)
    assert np.isnan(spectra.frequency_cramer_rao([0.0], 0.9, steps)).all()  # an overdamped mode has no frequency
    sd = production_fits["i"]["fit"].std(axis=0, ddof=1)
    assert np.all(sd > 0.7 * bound), (sd, bound)
