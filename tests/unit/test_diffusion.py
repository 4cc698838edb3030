import numpy as np
import pytest

from limiting_dynamics.diffusion import (
    fit_exponent,
    log_spaced_indices,
    stationary_level,
    theory_scale,
)


def _walk_parts(seed, n_parts=60, n_steps=3000):
    """Squared displacement of independent 1-D random walks: additive parts of D(t) ~ t."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_parts, n_steps)).cumsum(axis=1) ** 2).T


def test_exact_power_law_is_recovered_with_a_tight_interval():
    t = np.arange(1, 5001)
    parts = np.stack([1.0 * t**0.6, 2.0 * t**0.6], axis=1)  # parts with the same exponent
    fit = fit_exponent(t, parts, window=(0.01, 1.0), n_points=50, n_boot=1000)
    assert fit.c == pytest.approx(0.6, abs=1e-10)
    assert np.exp(fit.log_prefactor) == pytest.approx(3.0, rel=1e-8)
    assert fit.c_low == pytest.approx(0.6, abs=1e-8) and fit.c_high == pytest.approx(0.6, abs=1e-8)
    assert fit.predict(np.array([10.0]))[0] == pytest.approx(3.0 * 10**0.6)


def test_brownian_motion_gives_c_near_one_inside_its_interval():
    t = np.arange(1, 3001)
    fit = fit_exponent(t, _walk_parts(1), window=(0.01, 1.0), n_points=64, n_boot=1000, rng=np.random.default_rng(0))
    assert fit.c == pytest.approx(1.0, abs=0.15)
    assert fit.c_low < fit.c < fit.c_high
    assert fit.c_low <= 1.0 <= fit.c_high


def test_bootstrap_interval_covers_the_true_exponent_at_about_the_nominal_rate():
    t = np.arange(1, 3001)
    covered = 0
    for seed in range(40):
        fit = fit_exponent(
            t, _walk_parts(100 + seed), window=(0.01, 1.0), n_points=64, n_boot=500, rng=np.random.default_rng(seed)
        )
        covered += fit.c_low <= 1.0 <= fit.c_high
    # nominal 95%: 38 of 40 expected; fewer than 32 would mean a badly calibrated interval
    assert covered >= 32


def test_single_curve_has_no_interval():
    t = np.arange(1, 1001)
    fit = fit_exponent(t, t**0.5, window=(0.05, 1.0), n_points=64, n_boot=1000)
    assert fit.c == pytest.approx(0.5) and np.isnan(fit.c_low) and np.isnan(fit.c_high)


def test_subdiffusive_confined_process_has_interval_below_one():
    # Ornstein-Uhlenbeck: D(t) saturates, so late-time exponent is well below 1
    rng = np.random.default_rng(2)
    n, k = 20000, 0.002
    x = np.zeros((50, n))
    noise = rng.standard_normal((50, n))
    for i in range(1, n):
        x[:, i] = (1 - k) * x[:, i - 1] + noise[:, i]
    parts = (x**2).T[1:]
    fit = fit_exponent(np.arange(1, n), parts, window=(0.05, 1.0), n_points=40, n_boot=1000)
    assert fit.c_high < 1.0


def test_zero_curve_gives_nan_not_a_number_guess():
    t = np.arange(1, 101)
    fit = fit_exponent(t, np.zeros(100), window=(0.05, 1.0), n_points=64, n_boot=1000)
    assert np.isnan(fit.c) and np.isnan(fit.c_low)


def test_log_spaced_indices_are_distinct_ordered_and_in_window():
    idx = log_spaced_indices(np.arange(1, 1001), (0.1, 1.0), 64)
    assert np.all(np.diff(idx) > 0)
    assert idx[0] == 99 and idx[-1] == 999
    sparse = np.array([1, 2, 3, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    idx = log_spaced_indices(sparse, (0.1, 1.0), 5)
    assert sparse[idx[0]] == 10 and sparse[idx[-1]] == 100 and np.all(np.diff(idx) > 0)


def test_stationary_level_of_ar1_series():
    rng = np.random.default_rng(3)
    n, phi = 200_000, 0.9
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = 0
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    x += 5.0
    lvl = stationary_level(x, window=(0.0, 1.0), n_batches=20)
    # true long-run s.e. of the mean: sigma_e / (1 - phi) / sqrt(n)
    true_se = 1 / (1 - phi) / np.sqrt(n)
    assert abs(lvl.mean - 5.0) < 4 * true_se
    assert 0.5 * true_se < lvl.stderr < 2.0 * true_se


def test_theory_scale_formula():
    assert theory_scale(0.1, 64, 0.9) == pytest.approx(0.01 / (64 * 0.19))
    assert theory_scale(0.1, 64, 0.0) == pytest.approx(0.01 / 64)
