"""The linear-regression experiment: exact state-dependent theory against Monte Carlo,
the stage's outputs on the real digits problem, and its errors."""

import numpy as np
import pytest

from limiting_dynamics import linear_regression as L
from limiting_dynamics import theory as T
from limiting_dynamics.cli import main
from limiting_dynamics.hyperparameters import Hyperparameters


@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(0)
    x = np.hstack([rng.random((120, 3)), np.ones((120, 1))])
    y = x @ np.array([1.0, -2.0, 0.5, 0.3]) + rng.standard_normal(120) * 0.5
    return L.make_problem(x, y)


def test_state_dependent_theory_matches_monte_carlo_and_fixed_point_noise_does_not(small_problem):
    p = small_problem
    cell = L.Cell(Hyperparameters(lr=0.05, batch_size=4, momentum=0.9, weight_decay=0.01), "replacement")
    assert cell.name == "mom0.9_replacement"  # output file names depend on it
    hp = cell.hp
    modes = p.eigvecs[:, :2]
    fp = T.fixed_point(p.hessian, p.theta_star, hp.weight_decay)
    start = p.theta_star + 3.0 * modes[:, 0]  # far out: the noise there is much larger than at fp
    steps, chains = 60, 6000
    sim = L.simulate(p, cell, start, steps, chains, 2, modes, 30, np.array([5]), np.random.default_rng(1))
    exact, _ = L.state_dependent_path(p, hp, start - fp, steps, modes, 30, np.array([5]))
    fixed = T.dense_path(
        p.hessian,
        L.noise_covariance(p, fp),
        start - fp,
        np.zeros(p.d),
        steps,
        hp,
        project=modes,
    )
    for k in (5, 20, 60):
        z_exact = (sim["position_var"][k] - exact.position_var.values[k]) / sim["position_var_stderr"][k]
        z_fixed = (sim["position_var"][k] - fixed.position_var.values[k]) / sim["position_var_stderr"][k]
        assert np.all(np.abs(z_exact) < 4.5), (k, z_exact)
        if k == 5:
            assert np.max(np.abs(z_fixed)) > 6  # leaving out the state dependence is visible here
        zm = (sim["msd"][k, 0] - exact.msd_from_start.values[k]) / sim["msd"][k, 1]
        assert abs(zm) < 4.5


def test_noise_covariance_is_the_per_sample_gradient_covariance(small_problem):
    p = small_problem
    theta = p.theta_star + 0.1
    g = p.x * (p.x @ theta - p.y)[:, None]
    np.testing.assert_allclose(L.noise_covariance(p, theta), np.cov(g.T, bias=True), rtol=1e-10)
    np.testing.assert_allclose(p.hessian @ p.eigvecs[:, 0], p.eigvals[0] * p.eigvecs[:, 0], rtol=1e-10)


def test_digits_cell_exports_simulation_and_all_theories():
    p = L.digits_problem()
    assert p.x.shape == (1797, 65) and p.eigvals[0] == pytest.approx(11.44, abs=0.01)
    cell = L.Cell(Hyperparameters(lr=2e-4, batch_size=32, momentum=0.99, weight_decay=0.01, seed=0), "reshuffle")
    ds = L.run_cell(p, cell, steps=30, chains=16, kept=2, top_modes=3, displacement=0.1, lag_anchor=10, lags=[1, 5])
    for model in ("sim", "discrete", "iid", "continuous"):
        assert f"{model}_position_var" in ds and f"{model}_msd_from_start" in ds
    assert "statedep_position_var" not in ds  # exact state dependence: replacement only
    assert ds.chain_position.shape == (2, 2, 31, 3)
    rows = L.comparison_table(ds, [10, 30])
    assert {r["quantity"] for r in rows} >= {"msd_from_start", "sq_velocity", "position_var_mode1", "lag_msd"}
    assert all(np.isfinite(r["z_discrete"]) for r in rows)
    # reshuffling lowers the variance of the slow modes below the i.i.d. theory
    assert all(r["sampling_effect"] < 0 for r in rows if r["quantity"].startswith("position_var"))


def test_unstable_learning_rate_is_a_one_line_error(capsys, tmp_path):
    params = (
        '{"lr": 1.0, "batch_size": 32, "momentum": 0.9, "weight_decay": 0.01, "sampling": "replacement",'
        ' "steps": 10, "chains": 8, "kept_chains": 2, "top_modes": 2, "displacement": 0.1,'
        ' "lag_anchor": 0.5, "lags": [1], "seed": 0}'
    )
    assert main(["linreg-cell", "--params", params, "--out", str(tmp_path / "x.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unstable" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "x.nc").exists()
