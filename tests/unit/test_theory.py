"""The theory engine against brute-force recursion, Monte-Carlo simulation and torch.optim.SGD.

Monte-Carlo comparisons use z-scores with a fixed seed; the tolerances are
statistical (|z| < 4.5 over a handful of comparisons) and fail for any real
error in a formula (those show up as z of tens to thousands)."""

import numpy as np
import pytest
import torch

from limiting_dynamics import theory as T
from limiting_dynamics.hyperparameters import Hyperparameters as Hp

LAM = np.array([0.02, 0.3, 2.0, 9.0])


VAR = np.array([0.5, 1.0, 2.0, 3.0])


LR, S, BETA, WD = 0.05, 8, 0.9, 1e-3


HP = Hp(LR, S, BETA, WD)


def simulate_modes(
    lam, var, steps, lr, batch_size, beta, wd, x0, v0, chains, rng, sampling="replacement", population=None, record=None
):
    """Chains of the per-mode recursion; noise Gaussian (replacement) or from a finite population
    of per-sample noise values (reshuffle, shape (N, modes), mean zero). Returns x at ``record`` steps."""
    a = lam + wd
    x = np.broadcast_to(np.asarray(x0, float), (chains, lam.size)).copy()
    v = np.broadcast_to(np.asarray(v0, float), (chains, lam.size)).copy()
    record = set(record or [])
    out = {0: x.copy()} if 0 in record else {}
    if sampling == "reshuffle":
        n = population.shape[0]
        per_epoch = n // batch_size
    for k in range(steps):
        if sampling == "replacement":
            xi = rng.standard_normal((chains, lam.size)) * np.sqrt(var / batch_size)
        else:
            pos = k % per_epoch
            if pos == 0:
                perm = np.argsort(rng.random((chains, n)), axis=1)
            idx = perm[:, pos * batch_size : (pos + 1) * batch_size]
            xi = population[idx].mean(axis=1)
        v = beta * v + a * x + xi
        x = x - lr * v
        if k + 1 in record:
            out[k + 1] = x.copy()
    return out, v


def z_score(estimate, stderr, theory):
    return (estimate - theory) / stderr


@pytest.fixture(scope="module")
def population():
    """A finite population of per-sample noise values (N = 40, two modes), centred."""
    rng = np.random.default_rng(2)
    e = rng.standard_normal((40, 2)) * np.array([1.0, 1.5])
    return e - e.mean(axis=0)


def test_discrete_stationary_matches_brute_force_recursion():
    m = T.stationary_moments(LAM, VAR, HP)
    a = LAM + WD
    for i in range(LAM.size):
        A = np.array([[1 - LR * a[i], -LR * BETA], [a[i], BETA]])
        b = np.array([[-LR], [1.0]])
        cov = np.zeros((2, 2))
        for _ in range(40000):
            cov = A @ cov @ A.T + b @ b.T * VAR[i] / S
        np.testing.assert_allclose(
            [m.position_var[i], m.velocity_var[i], m.position_velocity_cov[i]],
            [cov[0, 0], cov[1, 1], cov[0, 1]],
            rtol=1e-8,
        )


def test_covariance_at_k_matches_brute_force_and_tends_to_stationary():
    steps = [0, 1, 7, 64, 513]
    c = T.covariance_at(LAM, VAR, steps, HP)
    a = LAM + WD
    A = np.zeros((LAM.size, 2, 2))
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = 1 - LR * a, -LR * BETA, a, BETA
    b = np.array([-LR, 1.0])
    q = np.einsum("i,j->ij", b, b)[None] * (VAR / S)[:, None, None]
    cov = np.zeros((LAM.size, 2, 2))
    for k in range(max(steps) + 1):
        if k in steps:
            j = steps.index(k)
            np.testing.assert_allclose(c.position_var[j], cov[:, 0, 0], rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(c.velocity_var[j], cov[:, 1, 1], rtol=1e-9, atol=1e-15)
        cov = A @ cov @ np.swapaxes(A, 1, 2) + q
    far = T.covariance_at(LAM, VAR, [200000], HP)
    np.testing.assert_allclose(far.position_var[0], T.stationary_moments(LAM, VAR, HP).position_var, rtol=1e-9)


def test_continuous_model_has_the_papers_stationary_moments():
    m = T.stationary_moments(LAM, VAR, HP, setting=T.CONTINUOUS)
    a = LAM + WD
    np.testing.assert_allclose(m.position_var, LR * VAR / (2 * S * (1 - BETA) * a), rtol=1e-10)
    np.testing.assert_allclose(m.velocity_var, VAR / (S * (1 - BETA**2)), rtol=1e-10)
    np.testing.assert_allclose(m.position_velocity_cov, 0.0, atol=1e-12)
    p = T.langevin_parameters(LAM, HP)
    np.testing.assert_allclose(p.gamma, (1 - BETA) / (LR * (1 + BETA)))
    np.testing.assert_allclose(p.omega**2, 2 * a / (LR * (1 + BETA)))
    assert list(p.regime.values) == [
        "underdamped" if o > g else "overdamped" for o, g in zip(p.omega.values, p.gamma.values)
    ]


def test_discrete_and_continuous_agree_only_when_lr_lam_is_small():
    lam = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0]) / LR  # lr * lam from 1e-4 to 1
    d = T.stationary_moments(lam, 1.0, Hp(LR, S, BETA, 0.0))
    c = T.stationary_moments(lam, 1.0, Hp(LR, S, BETA, 0.0), setting=T.CONTINUOUS)
    err = np.abs(d.position_var / c.position_var - 1).values
    assert err[0] < 1e-3 and err[1] < 1e-2
    assert np.all(np.diff(err) > 0) and err[-1] > 0.1
    lag_d = T.lag_msd(lam[:2], 1.0, [10, 100, 1000], Hp(LR, S, BETA, 0.0))
    lag_c = T.lag_msd(lam[:2], 1.0, [10, 100, 1000], Hp(LR, S, BETA, 0.0), setting=T.CONTINUOUS)
    np.testing.assert_allclose(lag_d, lag_c, rtol=0.02)


def test_dense_path_equals_per_mode_path_for_commuting_h_and_c():
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    h, c = u @ np.diag(LAM) @ u.T, u @ np.diag(VAR) @ u.T
    x0m, v0m = np.array([1.0, -0.5, 0.2, 0.1]), np.array([0.0, 0.3, 0.0, -0.2])
    for model, sampling in [("discrete", "replacement"), ("continuous", "replacement"), ("discrete", "reshuffle")]:
        kw = dict(setting=T.Setting(model, sampling, 40 if sampling == "reshuffle" else None))
        dense = T.dense_stationary_covariance(h, c, HP, **kw)
        modes = T.stationary_moments(LAM, VAR, HP, **kw)
        np.testing.assert_allclose(np.diag(u.T @ dense[:4, :4] @ u), modes.position_var, rtol=1e-7)
        np.testing.assert_allclose(np.diag(u.T @ dense[4:, 4:] @ u), modes.velocity_var, rtol=1e-7)
        np.testing.assert_allclose(
            T.dense_msd_from_start(h, c, u @ x0m, u @ v0m, [3, 50, 700], HP, **kw),
            T.msd_from_start(LAM, VAR, x0m, v0m, [3, 50, 700], HP, **kw),
            rtol=1e-7,
        )
        np.testing.assert_allclose(
            T.dense_lag_msd(h, c, [1, 9, 90], HP, **kw),
            T.lag_msd(LAM, VAR, [1, 9, 90], HP, **kw),
            rtol=1e-7,
        )


def test_oscillation_frequency_is_the_mean_motions_frequency():
    lam = np.array([2.0, 9.0])
    f = T.oscillation_frequency(lam, HP)
    m = T.mean_trajectory(lam, 1.0, 0.0, np.arange(4000), HP)
    for i in range(lam.size):
        crossings = np.count_nonzero(np.diff(np.sign(m.position.values[:, i])) != 0)
        assert crossings == pytest.approx(2 * f[i] * 4000, abs=2)
    fc = T.oscillation_frequency(lam, HP, setting=T.CONTINUOUS)
    assert np.all(np.abs(fc / f - 1) < 0.2)


def test_linear_recursion_is_torch_sgd_on_a_quadratic():
    rng = np.random.default_rng(0)
    d = 3
    m = rng.standard_normal((d, d))
    h = m @ m.T + 0.1 * np.eye(d)
    theta_star = rng.standard_normal(d)
    theta0 = rng.standard_normal(d)
    noise = rng.standard_normal((50, d)) * 0.3
    lr, beta, wd = 0.05, 0.9, 0.01

    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = torch.optim.SGD([p], lr=lr, momentum=beta, weight_decay=wd)
    torch_theta = []
    for k in range(50):
        p.grad = torch.tensor(h @ (p.detach().numpy() - theta_star) + noise[k])
        opt.step()
        torch_theta.append(p.detach().numpy().copy())

    fp = T.fixed_point(h, theta_star, wd)
    sysm = T.dense_system(h, np.eye(d), Hp(lr, 1, beta, wd))
    z = np.concatenate([theta0 - fp, np.zeros(d)])
    for k in range(50):
        z = sysm.A @ z + sysm.B @ noise[k]
        np.testing.assert_allclose(z[:d] + fp, torch_theta[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"].numpy(), z[d:], rtol=1e-12, atol=1e-12)

    # and the mean motion without noise is dense_mean
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = torch.optim.SGD([p], lr=lr, momentum=beta, weight_decay=wd)
    for _ in range(30):
        p.grad = torch.tensor(h @ (p.detach().numpy() - theta_star))
        opt.step()
    x, _ = T.dense_mean(h, theta0 - fp, np.zeros(d), [30], Hp(lr, 1, beta, wd))
    np.testing.assert_allclose(x[0] + fp, p.detach().numpy(), rtol=1e-12)


def test_msd_and_variance_match_monte_carlo_with_replacement():
    rng = np.random.default_rng(11)
    chains, steps = 20000, [10, 100, 600]
    x0, v0 = np.array([1.0, 0.5, -0.3, 0.2]), np.array([0.0, 0.0, 0.5, 0.0])
    xs, _ = simulate_modes(LAM, VAR, max(steps), LR, S, BETA, WD, x0, v0, chains, rng, record=steps)
    theory = T.msd_from_start(LAM, VAR, x0, v0, steps, HP)
    cov = T.covariance_at(LAM, VAR, steps, HP)
    mean = T.mean_trajectory(LAM, x0, v0, steps, HP)
    for j, k in enumerate(steps):
        d2 = ((xs[k] - x0) ** 2).sum(axis=1)
        assert abs(z_score(d2.mean(), d2.std(ddof=1) / np.sqrt(chains), theory[j])) < 4.5
        var = xs[k].var(axis=0, ddof=1)
        z = z_score(var, cov.position_var.values[j] * np.sqrt(2 / (chains - 1)), cov.position_var.values[j])
        assert np.all(np.abs(z) < 4.5), z
        zm = (xs[k].mean(axis=0) - mean.position.values[j]) / np.sqrt(cov.position_var.values[j] / chains)
        assert np.all(np.abs(zm) < 4.5), zm


def test_lag_msd_matches_monte_carlo_at_stationarity():
    rng = np.random.default_rng(5)
    lam, var = np.array([0.3, 2.0]), np.array([1.0, 2.0])
    chains, burn, lags = 4000, 2000, [1, 5, 40]
    xs, _ = simulate_modes(
        lam, var, burn + max(lags), LR, S, BETA, WD, 0.0, 0.0, chains, rng, record=[burn] + [burn + t for t in lags]
    )
    theory = T.lag_msd(lam, var, lags, HP)
    for j, t in enumerate(lags):
        d2 = ((xs[burn + t] - xs[burn]) ** 2).sum(axis=1)
        assert abs(z_score(d2.mean(), d2.std(ddof=1) / np.sqrt(chains), theory[j])) < 4.5


def test_reshuffled_batches_match_monte_carlo(population):
    rng = np.random.default_rng(9)
    lam = np.array([0.05, 2.0])  # the first mode relaxes over ~40 steps, slower than an epoch of 10
    var = (population**2).mean(axis=0)
    n, bs, chains = population.shape[0], 4, 20000
    steps = [3, 10, 37, 400]
    x0 = np.array([0.5, -0.2])
    xs, _ = simulate_modes(
        lam,
        var,
        max(steps),
        LR,
        bs,
        BETA,
        WD,
        x0,
        0.0,
        chains,
        rng,
        sampling="reshuffle",
        population=population,
        record=steps,
    )
    kw = dict(setting=T.Setting(sampling="reshuffle", n_samples=n))
    theory = T.msd_from_start(lam, var, x0, 0.0, steps, Hp(LR, bs, BETA, WD), **kw)
    cov = T.covariance_at(lam, var, steps, Hp(LR, bs, BETA, WD), **kw)
    for j, k in enumerate(steps):
        d2 = ((xs[k] - x0) ** 2).sum(axis=1)
        assert abs(z_score(d2.mean(), d2.std(ddof=1) / np.sqrt(chains), theory[j])) < 4.5
        v = xs[k].var(axis=0, ddof=1)
        z = z_score(v, cov.position_var.values[j] * np.sqrt(2 / (chains - 1)), cov.position_var.values[j])
        assert np.all(np.abs(z) < 4.5), (k, z)


def test_reshuffled_lag_msd_and_phase_averaged_variance_match_monte_carlo(population):
    rng = np.random.default_rng(4)
    lam = np.array([0.05, 2.0])
    var = (population**2).mean(axis=0)
    n, bs, chains, burn = population.shape[0], 4, 3000, 1000  # burn-in: whole epochs
    per_epoch = n // bs
    lags = [1, 7, 25]
    record = [burn + p for p in range(per_epoch)] + [burn + p + t for p in range(per_epoch) for t in lags]
    xs, _ = simulate_modes(
        lam,
        var,
        burn + per_epoch + max(lags),
        LR,
        bs,
        BETA,
        WD,
        0.0,
        0.0,
        chains,
        rng,
        sampling="reshuffle",
        population=population,
        record=record,
    )
    kw = dict(setting=T.Setting(sampling="reshuffle", n_samples=n))
    st = T.stationary_moments(lam, var, Hp(LR, bs, BETA, WD), **kw)
    per_chain = np.mean([xs[burn + p] ** 2 for p in range(per_epoch)], axis=0)  # phase average per chain
    z = z_score(per_chain.mean(axis=0), per_chain.std(axis=0, ddof=1) / np.sqrt(chains), st.position_var.values)
    assert np.all(np.abs(z) < 4.5), z
    theory = T.lag_msd(lam, var, lags, Hp(LR, bs, BETA, WD), **kw)
    for j, t in enumerate(lags):
        d2 = np.mean([((xs[burn + p + t] - xs[burn + p]) ** 2).sum(axis=1) for p in range(per_epoch)], axis=0)
        assert abs(z_score(d2.mean(), d2.std(ddof=1) / np.sqrt(chains), theory[j])) < 4.5
    # Reshuffling matters for the slow mode far beyond the finite-population factor.
    iid = T.stationary_moments(lam, var * (n - bs) / (n - 1), Hp(LR, bs, BETA, WD))
    assert iid.position_var.values[0] / st.position_var.values[0] > 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: T.stationary_moments([1.0, 200.0], 1.0, Hp(0.05, 8, 0.9, 0.0)), "stability region"),
        (lambda: T.lag_msd([-0.5], 1.0, [1], Hp(0.05, 8, 0.9, 0.0)), "stability region"),
        (lambda: T.stationary_moments([0.0], 1.0, Hp(0.05, 8, 0.9, 0.0), setting=T.CONTINUOUS), "no stationary"),
        (
            lambda: T.stationary_moments(
                [1.0],
                1.0,
                Hp(0.05, 8, 0.9, 0.0),
                setting=T.Setting(model="continuous", sampling="reshuffle", n_samples=100),
            ),
            "no continuous-time model",
        ),
        (
            lambda: T.stationary_moments([1.0], 1.0, Hp(0.05, 8, 0.9, 0.0), setting=T.Setting(sampling="reshuffle")),
            "n_samples",
        ),
        (lambda: T.stationary_moments([1.0], -1.0, Hp(0.05, 8, 0.9, 0.0)), "noise_var"),
        (lambda: T.stationary_moments([1.0], 1.0, Hp(0.05, 8, 1.0, 0.0)), "momentum"),
        (lambda: T.stationary_moments([1.0], 1.0, Hp(0.0, 8, 0.9, 0.0)), "lr"),
        (lambda: T.stationary_moments([1.0], 1.0, Hp(0.05, 8, 0.9, 0.0), setting=T.Setting(model="exact")), "model"),
        (lambda: T.msd_from_start([1.0], 1.0, 0.0, 0.0, [1.5], Hp(0.05, 8, 0.9, 0.0)), "whole numbers"),
        (lambda: T.msd_from_start([1.0], 1.0, 0.0, 0.0, [], Hp(0.05, 8, 0.9, 0.0)), "non-empty 1-D"),
        (lambda: T.msd_from_start([1.0], 1.0, 0.0, 0.0, [[1, 2]], Hp(0.05, 8, 0.9, 0.0)), "non-empty 1-D"),
        (lambda: T.msd_from_start([np.nan], 1.0, 0.0, 0.0, [1], Hp(0.05, 8, 0.9, 0.0)), "finite"),
    ],
)
def test_undefined_cases_raise_clear_errors(call, message):
    with pytest.raises(T.TheoryError, match=message):
        call()


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99])
@pytest.mark.parametrize("wd", [0.0, 5e-3])
def test_stable_modes_is_where_the_update_matrix_contracts(beta, wd):
    """The one stability function against the spectral radius of each mode's update
    matrix, on a grid that straddles both edges (lr a = 0 and lr a = 2 (1 + beta))."""
    hp = Hp(0.1, 8, beta, wd)
    edge = 2 * (1 + beta) / hp.lr - wd
    lam = np.concatenate([[-wd - 1.0, -wd + 1e-6], np.linspace(0.5, 1.5, 21) * edge])
    lam = lam[np.abs(hp.lr * (lam + wd) - 2 * (1 + beta)) > 1e-9]  # not on the edge itself
    a = hp.lr * (lam + wd)
    update = np.zeros(lam.shape + (2, 2))  # state (x, v): x' = x - lr v', v' = beta v + a x
    update[:, 0, 0], update[:, 0, 1], update[:, 1, 0], update[:, 1, 1] = 1 - a, -hp.lr * beta, lam + wd, beta
    contracts = np.abs(np.linalg.eigvals(update)).max(-1) < 1
    np.testing.assert_array_equal(T.stable_modes(lam, hp), contracts)
    assert contracts.any() and not contracts.all()


def test_marginal_mode_diffuses_without_bound_in_msd_from_start():
    # lam + wd = 0: no restoring force; the position is a random walk, E x^2 grows linearly
    msd = T.msd_from_start([0.0], 1.0, 0.0, 0.0, [1000, 2000, 4000], Hp(0.05, 8, 0.9, 0.0))
    np.testing.assert_allclose(np.diff(msd) / np.diff([1000, 2000, 4000]), 0.05**2 / 8 / 0.1**2, rtol=0.02)


@pytest.mark.parametrize(
    "model, sampling", [("discrete", "replacement"), ("discrete", "reshuffle"), ("continuous", "replacement")]
)
def test_dense_path_and_lag_from_start_agree_with_the_closed_forms(model, sampling):
    rng = np.random.default_rng(1)
    m = rng.standard_normal((3, 3))
    h = m @ m.T
    c = np.cov(rng.standard_normal((3, 50)))  # does not commute with h
    x0, v0 = np.array([0.4, -0.2, 0.1]), np.zeros(3)
    kw = dict(setting=T.Setting(model, sampling, 40 if sampling == "reshuffle" else None))
    w, u = np.linalg.eigh(h)
    path = T.dense_path(h, c, x0, v0, 120, Hp(LR, 4, BETA, WD), project=u, **kw)
    np.testing.assert_allclose(
        path.msd_from_start.sel(step=[5, 37, 120]),
        T.dense_msd_from_start(h, c, x0, v0, [5, 37, 120], Hp(LR, 4, BETA, WD), **kw),
        rtol=1e-9,
    )
    cov = T.dense_covariance_at(h, c, [37], Hp(LR, 4, BETA, WD), **kw)[0]
    np.testing.assert_allclose(path.position_var.sel(step=37), np.diag(u.T @ cov[:3, :3] @ u), rtol=1e-9)
    # at late anchors the lag-MSD from rest is the stationary one (averaged over the epoch's phase)
    far = np.mean(
        [T.dense_lag_msd_from_start(h, c, x0, v0, 20000 + p, [1, 13], Hp(LR, 4, BETA, WD), **kw) for p in range(10)],
        axis=0,
    )
    np.testing.assert_allclose(far, T.dense_lag_msd(h, c, [1, 13], Hp(LR, 4, BETA, WD), **kw), rtol=1e-3)


def test_moment_path_with_the_noise_as_a_callback_is_dense_path():
    rng = np.random.default_rng(2)
    m = rng.standard_normal((3, 3))
    h, c = m @ m.T, np.cov(rng.standard_normal((3, 50)))
    x0, v0 = np.array([0.4, -0.2, 0.1]), np.array([0.0, 0.1, 0.0])
    hp = Hp(LR, 4, BETA, WD)
    path = T.dense_path(h, c, x0, v0, 60, hp, project=np.eye(3))
    system = T.dense_system(h, np.zeros_like(h), hp)
    again, kept = T.moment_path(
        system, np.concatenate([x0, v0]), 60, project=np.eye(3), extra_noise=lambda z, cov: c / 4, keep=[0, 60]
    )
    for name in path.data_vars:
        np.testing.assert_allclose(again[name], path[name], rtol=1e-12, atol=1e-15)
    assert sorted(kept) == [0, 60] and np.all(kept[0][1] == 0)
    np.testing.assert_allclose(kept[60][1], T.dense_covariance_at(h, c, [60], hp)[0], rtol=1e-9)
    with pytest.raises(T.TheoryError, match="discrete"):
        T.moment_path(T.dense_system(h, c, hp, setting=T.CONTINUOUS), np.zeros(6), 3, extra_noise=lambda z, cov: c)


def test_lag_msd_from_start_matches_monte_carlo_with_reshuffling(population):
    rng = np.random.default_rng(8)
    lam = np.array([0.05, 2.0])
    var = (population**2).mean(axis=0)
    n, bs, chains, anchor = population.shape[0], 4, 20000, 23
    lags = [1, 6, 30]
    xs, _ = simulate_modes(
        lam,
        var,
        anchor + max(lags),
        LR,
        bs,
        BETA,
        WD,
        0.3,
        0.0,
        chains,
        rng,
        sampling="reshuffle",
        population=population,
        record=[anchor] + [anchor + t for t in lags],
    )
    theory = T.dense_lag_msd_from_start(
        np.diag(lam),
        np.diag(var),
        [0.3, 0.3],
        [0, 0],
        anchor,
        lags,
        Hp(LR, bs, BETA, WD),
        setting=T.Setting(sampling="reshuffle", n_samples=n),
    )
    for j, t in enumerate(lags):
        d2 = ((xs[anchor + t] - xs[anchor]) ** 2).sum(axis=1)
        assert abs(z_score(d2.mean(), d2.std(ddof=1) / np.sqrt(chains), theory[j])) < 4.5


def test_continuous_models_error_is_lr_a_over_two_one_plus_beta():
    # measured closed form: continuous / exact - 1 = -lr (lam + wd) / (2 (1 + beta)), for both variances
    lam = np.array([1e-3, 0.1, 1.0, 10.0, 30.0])
    for beta in (0.0, 0.5, 0.9, 0.99):
        d = T.stationary_moments(lam, 1.0, Hp(LR, S, beta, WD))
        c = T.stationary_moments(lam, 1.0, Hp(LR, S, beta, WD), setting=T.CONTINUOUS)
        expected = -LR * (lam + WD) / (2 * (1 + beta))
        np.testing.assert_allclose(c.position_var / d.position_var - 1, expected, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(c.velocity_var / d.velocity_var - 1, expected, rtol=1e-8, atol=1e-14)


def test_fluctuation_spectrum_peak_is_below_the_damped_frequency():
    lam = np.array([0.5, 2.0, 9.0])
    peak = T.fluctuation_spectrum_peak(lam, Hp(LR, S, 0.99, WD))
    damped = T.oscillation_frequency(lam, Hp(LR, S, 0.99, WD))
    assert np.all(peak <= damped * 1.001) and np.all(peak > 0.8 * damped)
    assert T.fluctuation_spectrum_peak([0.01], Hp(LR, S, 0.5, WD))[0] == 0.0  # overdamped


def test_lag_covariance_is_consistent_with_lag_msd_and_decays():
    lags = [0, 1, 10, 200, 5000]
    for model in ("discrete", "continuous"):
        cov = T.lag_covariance(LAM, VAR, lags, HP, setting=T.Setting(model=model))
        st = T.stationary_moments(LAM, VAR, HP, setting=T.Setting(model=model))
        np.testing.assert_allclose(cov.position.sel(lag=0), st.position_var, rtol=1e-10)
        np.testing.assert_allclose(cov.position_autocorrelation.sel(lag=0), 1.0, rtol=1e-10)
        msd = T.lag_msd(LAM, VAR, lags, HP, setting=T.Setting(model=model))
        np.testing.assert_allclose(msd, 2 * (st.position_var.sum() - cov.position.sum("mode")), rtol=1e-8, atol=1e-14)
        assert np.all(np.abs(cov.position_autocorrelation.sel(lag=5000)) < 1e-3)


def _simulated_tamsd(lams, noise_var, hp, steps, lags, runs, rng, sketch_dim=None):
    """Time-averaged lag-MSD of ``runs`` independent stationary heavy-ball runs
    (each mode started from its exact stationary distribution)."""
    sysm = T._mode_system(lams, noise_var, hp, T.DISCRETE)
    cov = sysm.stationary()
    z = np.stack([rng.multivariate_normal(np.zeros(2), c, size=runs) for c in cov], axis=1)  # run, mode, 2
    a = np.asarray(lams) + hp.weight_decay
    xs = np.empty((steps, runs, len(lams)))
    x, v = z[..., 0], z[..., 1]
    for k in range(steps):
        xs[k] = x
        v = hp.momentum * v + a * x + rng.normal(0, np.sqrt(np.asarray(noise_var) / hp.batch_size), x.shape)
        x = x - hp.lr * v
    if sketch_dim:
        proj = rng.choice([-1.0, 1.0], size=(runs, len(lams), sketch_dim)) / np.sqrt(sketch_dim)
        xs = np.einsum("trm,rmk->trk", xs, proj)
    return np.stack([((xs[lag:] - xs[:-lag]) ** 2).sum(-1).mean(0) for lag in lags], axis=1)  # run, lag


@pytest.mark.parametrize("sketch_dim", [None, 4])
def test_lag_msd_sampling_sd_matches_simulated_runs(sketch_dim):
    """The scatter of one run's time-averaged lag-MSD about its mean, from the
    autocovariance alone, against 400 simulated runs (a mode counted twice by
    multiplicity is simulated as two modes)."""
    hp = Hp(lr=0.05, batch_size=4, momentum=0.9, weight_decay=0.0)
    lams, noise, mult = np.array([2.0, 0.2, 0.02]), np.array([1.0, 0.5, 0.2]), np.array([1, 1, 2])
    lags, steps = np.array([1, 10, 100, 400]), 800
    sims = _simulated_tamsd(
        np.repeat(lams, mult), np.repeat(noise, mult), hp, steps, lags, 400, np.random.default_rng(3), sketch_dim
    )
    sd = T.lag_msd_sampling_sd(lams, noise, lags, steps, hp, multiplicity=mult, sketch_dim=sketch_dim)
    mean = T.lag_msd(lams, noise * mult, lags, hp)
    np.testing.assert_allclose(sims.mean(0), mean, rtol=0.1)
    np.testing.assert_allclose(sims.std(0, ddof=1), sd, rtol=0.15)
    assert sd[-1] / mean[-1] > 3 * sd[0] / mean[0]  # long lags are measured far less precisely


def test_lag_msd_single_anchor_sd_matches_simulated_runs():
    """The scatter of ||x_tau - x_0||^2 from one anchor (what the exact distance from
    theta_0 measures) against 2,000 simulated runs, and above the time average's."""
    hp = Hp(lr=0.05, batch_size=4, momentum=0.9, weight_decay=0.0)
    lams, noise, mult = np.array([2.0, 0.2, 0.02]), np.array([1.0, 0.5, 0.2]), np.array([1, 1, 2])
    lags = np.array([1, 10, 100, 399])
    modes = np.repeat(lams, mult), np.repeat(noise, mult)
    sims = _simulated_tamsd(*modes, hp, 400, lags, 2000, np.random.default_rng(5))
    # with 400 points the lag 399 has one anchor; a lag of 1 has one anchor in runs of 2 points
    one = _simulated_tamsd(*modes, hp, 2, [1], 2000, np.random.default_rng(6))
    sd = T.lag_msd_single_anchor_sd(lams, noise, lags, hp, multiplicity=mult)
    np.testing.assert_allclose(sims[:, -1].std(ddof=1), sd[-1], rtol=0.1)
    np.testing.assert_allclose(one[:, 0].std(ddof=1), sd[0], rtol=0.1)
    averaged = T.lag_msd_sampling_sd(lams, noise, lags[:-1], 400, hp, multiplicity=mult)
    assert np.all(sd[:-1] > 2 * averaged)  # one anchor measures far less precisely than the time average
    with pytest.raises(T.TheoryError, match="replacement"):
        T.lag_msd_single_anchor_sd([1.0], [1.0], [10], hp, setting=T.Setting(sampling="reshuffle", n_samples=64))


def test_window_variance_scatter_matches_simulated_windows():
    """The mean and scatter of one window's sample variance (np.var) of each
    mode's position and velocity, over the stationary variance, against 2,000
    simulated windows; for a slow mode the window's mean takes out a visible
    part, so the stationary variance itself is not what one window expects."""
    hp = Hp(lr=0.05, batch_size=4, momentum=0.9, weight_decay=0.0)
    lams, noise, steps, runs = np.array([2.0, 0.02]), np.array([1.0, 0.5]), 300, 2000
    rng = np.random.default_rng(7)
    sysm = T._mode_system(lams, noise, hp, T.DISCRETE)
    cov = sysm.stationary()
    z = np.stack([rng.multivariate_normal(np.zeros(2), c, size=runs) for c in cov], axis=1)  # run, mode, 2
    x, v = z[..., 0], z[..., 1]
    xs, vs = np.empty((steps, runs, 2)), np.empty((steps, runs, 2))
    for k in range(steps):
        v = hp.momentum * v + lams * x + rng.normal(0, np.sqrt(noise / hp.batch_size), x.shape)
        x = x - hp.lr * v
        xs[k], vs[k] = x, v
    got = T.window_variance_scatter(lams, hp, steps)
    for name, series, col in (("position", xs, 0), ("velocity", vs, 1)):
        ratio = series.var(axis=0) / cov[:, col, col]  # run, mode
        mean, sd = ratio.mean(0), ratio.std(0, ddof=1)
        np.testing.assert_allclose(mean, got[f"{name}_window_bias"], atol=3 * sd.max() / np.sqrt(runs))
        np.testing.assert_allclose(sd, got[f"{name}_window_sd"], rtol=0.1)
    assert got.position_window_bias[1] < 0.8  # the slow mode: comparing with 1 would misread it
    assert got.position_window_sd[1] > 1.3 * got.position_window_sd[0]  # and scatters more
    with pytest.raises(T.TheoryError, match="replacement"):
        T.window_variance_scatter([1.0], hp, 100, setting=T.Setting(sampling="reshuffle", n_samples=64))


def test_lag_msd_sampling_sd_rejects_what_it_does_not_cover():
    hp = Hp(lr=0.05, batch_size=4, momentum=0.9, weight_decay=0.0)
    with pytest.raises(T.TheoryError, match="below the run"):
        T.lag_msd_sampling_sd([1.0], [1.0], [100], 100, hp)
    with pytest.raises(T.TheoryError, match="replacement"):
        T.lag_msd_sampling_sd([1.0], [1.0], [10], 100, hp, setting=T.Setting(sampling="reshuffle", n_samples=64))


def test_sample_variance_moments_are_the_gaussian_quadratic_form_of_the_window():
    """Mean and sd of np.var over n points against the matrix form: with Sigma the
    Toeplitz covariance and A = (I - 11^T / n) / n, E = tr(A Sigma), Var = 2 tr((A Sigma)^2)."""
    n, rho = 9, np.array([0.3, 0.95])
    r = rho[None, :] ** np.arange(n)[:, None] * np.array([1.0, 2.5])  # AR(1) autocovariances, two modes
    mean, sd = T._sample_variance_moments(r)
    a = (np.eye(n) - np.ones((n, n)) / n) / n
    for m in range(2):
        sigma = r[np.abs(np.subtract.outer(np.arange(n), np.arange(n))), m]
        np.testing.assert_allclose(mean[m], np.trace(a @ sigma), rtol=1e-12)
        np.testing.assert_allclose(sd[m], np.sqrt(2 * np.trace(a @ sigma @ a @ sigma)), rtol=1e-10)


def test_lag_msd_sampling_sd_is_the_gaussian_quadratic_form_of_the_run():
    """One run of n points, the mean over its n - L anchors of (x_{a+L} - x_a)^2: with D
    the difference matrix and A = D^T D / (n - L), its sd is sqrt(2 tr((A Sigma)^2)),
    Sigma the Toeplitz covariance of the positions from lag_covariance (another code path)."""
    n, lag = 12, 3
    lam, var = np.array([0.6]), np.array([1.3])
    r = T.lag_covariance(lam, var, np.arange(n), HP).position.values[:, 0]
    sigma = r[np.abs(np.subtract.outer(np.arange(n), np.arange(n)))]
    d = np.zeros((n - lag, n))
    d[np.arange(n - lag), np.arange(n - lag) + lag], d[np.arange(n - lag), np.arange(n - lag)] = 1.0, -1.0
    a = d.T @ d / (n - lag)
    expected = np.sqrt(2 * np.trace(a @ sigma @ a @ sigma))
    np.testing.assert_allclose(T.lag_msd_sampling_sd(lam, var, [lag], n, HP), [expected], rtol=1e-10)


def test_dense_path_is_the_mean_and_covariance_at_each_step():
    """E||v_k||^2 = ||E v_k||^2 + tr Cov(v_k), and the same for theta_k - theta_0, against
    dense_mean and dense_covariance_at (separate code paths), from a start away from rest."""
    rng = np.random.default_rng(11)
    m = rng.standard_normal((3, 3))
    h, c = m @ m.T + 0.5 * np.eye(3), np.cov(rng.standard_normal((3, 40)))
    x0, v0, steps = np.array([0.5, -0.3, 0.2]), np.array([0.1, 0.0, -0.2]), [1, 7, 40]
    path = T.dense_path(h, c, x0, v0, max(steps), HP)
    mean_x, mean_v = T.dense_mean(h, x0, v0, steps, HP)
    cov = T.dense_covariance_at(h, c, steps, HP)
    for j, k in enumerate(steps):
        np.testing.assert_allclose(
            path.sq_velocity.values[k], np.sum(mean_v[j] ** 2) + np.trace(cov[j][3:, 3:]), rtol=1e-10
        )
        np.testing.assert_allclose(
            path.msd_from_start.values[k], np.sum((mean_x[j] - x0) ** 2) + np.trace(cov[j][:3, :3]), rtol=1e-10
        )
