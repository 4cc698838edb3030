"""Rotation on the spheres of the scale-invariant weights, and what a sphere does to an exponent."""

import numpy as np
import pytest

from limiting_dynamics import diffusion, geometry


def test_rotation_angle_from_recorded_norms_is_exact_even_for_tiny_angles():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(1000)
    for angle in (1e-5, 1e-3, 0.3, 1.5, 3.0):
        u = rng.standard_normal(1000)
        u -= (u @ w0) / (w0 @ w0) * w0
        u *= np.linalg.norm(w0) / np.linalg.norm(u)
        w = 1.7 * (np.cos(angle) * w0 + np.sin(angle) * u)  # turned and rescaled
        d2, p2, p20 = np.sum((w - w0) ** 2), np.sum(w**2), np.sum(w0**2)
        got = geometry.rotation_angle(np.array([[d2]]), np.array([[p2]]), np.array([p20]))[0, 0]
        assert got == pytest.approx(angle, rel=1e-6)


def test_small_angle_limit_and_the_brownian_slope_on_a_sphere():
    assert geometry.small_angle_limit(0.95) == pytest.approx(0.4434, abs=1e-3)
    assert geometry.brownian_sphere_slope(0.0) == 1.0
    assert geometry.brownian_sphere_slope(geometry.small_angle_limit(0.5)) == pytest.approx(0.5, abs=1e-6)
    # arc and chord agree for small angles; the arc is longer for large ones
    d2, p2, p20 = np.array([[2 * (1 - np.cos(0.01)), 2 * (1 - np.cos(1.0))]]), np.ones((1, 2)), np.ones(2)
    arc = geometry.geodesic_parts(d2, p2, p20, np.array([1, 1]))[0]
    assert arc[0] == pytest.approx(d2[0, 0], rel=1e-4) and arc[1] == pytest.approx(1.0) and arc[1] > d2[0, 1]
    assert geometry.geodesic_parts(d2, p2, p20, np.array([0, 0]))[0] == pytest.approx(d2[0])


def test_a_brownian_walk_on_a_sphere_looks_subdiffusive_beyond_the_small_angle_limit():
    """The geometry alone bends the exponent: fitted over the whole run of a walk
    that turns by ~1.5 rad c is far below 1; fitted up to the small-angle limit it is ~1."""
    rng = np.random.default_rng(1)
    d, steps, eps = 200, 3000, 0.05
    w = np.zeros((steps + 1, d))
    w[0] = rng.standard_normal(d)
    w[0] /= np.linalg.norm(w[0])
    for k in range(steps):
        step = rng.standard_normal(d) * eps / np.sqrt(d)
        step -= (step @ w[k]) * w[k]
        w[k + 1] = (w[k] + step) / np.linalg.norm(w[k] + step)
    t = np.arange(1, steps + 1)
    d2 = np.sum((w[1:] - w[0]) ** 2, axis=1)
    angle = geometry.rotation_angle(d2[:, None], np.ones((steps, 1)), np.ones(1))[:, 0]
    limit = np.searchsorted(angle, geometry.small_angle_limit())
    whole = diffusion.fit_exponent(t, d2, window=(0.01, 1.0), n_points=64, n_boot=0).c
    small = diffusion.fit_exponent(t, d2, window=(0.001, limit / steps), n_points=64, n_boot=0).c
    assert angle[-1] > 1.2 and whole < 0.8
    assert small == pytest.approx(1.0, abs=0.1)
