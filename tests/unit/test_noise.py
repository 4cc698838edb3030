"""Gradient-noise estimators against a case with a known answer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import drawing
from torch import nn

from limiting_dynamics import noise as N

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mlp_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(80, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (80,))
    per = []
    for i in range(80):  # per-sample gradients by a plain loop: the reference
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        per.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    g = torch.stack(per)
    c = torch.cov(g.T, correction=0)
    return model, x, y, g, c


def _small_bn_convnet():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 9, 3),
    )
    model.train()
    with torch.no_grad():  # non-trivial running statistics, then the eval-mode per-sample gradients use them
        model(torch.randn(32, 1, 8, 8) * 2 + 0.5)
    return model


class _Clock:
    """A fake ``time.perf_counter`` advanced by the fake gradient methods below."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _CostedGradients:
    """Stands in for ``_PerSampleGradients`` with set costs on a fake clock:
    the loop takes 1 time unit per sample (2 for its first, a warm-up), a vmap
    call of ``c`` samples ``c * vmap_cost(c)``. Tests the calibration's
    scheduling, which real timings on a shared machine cannot pin down."""

    def __init__(self, clock, vmap_cost):
        self.clock, self.vmap_cost = clock, vmap_cost
        self.param_list = [torch.zeros(1)]
        self.vmap_calls, self.loop_samples = [], 0

    def loop(self, x, y, times=None):
        for _ in range(x.shape[0]):
            dt = 2.0 if self.loop_samples == 0 else 1.0
            self.clock.now += dt
            times.append(dt)
            self.loop_samples += 1
        return torch.zeros(x.shape[0], 1)

    def vmap(self, x, y):
        c = x.shape[0]
        self.vmap_calls.append(c)
        self.clock.now += c * self.vmap_cost(c)
        return torch.zeros(c, 1)


def _batches(x, y, batch_size, seed, scheme="replacement"):
    """The workflow's batch source over tensors (what ``data.train_batches`` gives)."""
    from limiting_dynamics.data.datasets import TensorData

    d = TensorData("t", x, y, x[:1], y[:1], int(y.max()) + 1, torch.zeros(1))
    return d.train_batches(batch_size, drawing(scheme), seed)


def test_per_sample_statistics_match_a_plain_loop(mlp_setup):
    model, x, y, g, c = mlp_setup
    w, u = torch.linalg.eigh(c)
    dirs = u[:, -3:].T.contiguous()
    out = N.per_sample_noise(model, x, y, directions=dirs, chunk=16)
    assert out["trace_c"] == pytest.approx(float(torch.trace(c)), rel=1e-10)
    np.testing.assert_allclose(out["projection_var"], w[-3:].numpy(), rtol=1e-8)
    assert out["mean_grad_sq_norm"] == pytest.approx(float(g.mean(0).dot(g.mean(0))), rel=1e-10)


@pytest.mark.parametrize("method", ["vmap", "loop", "auto"])
def test_every_per_sample_method_matches_the_reference_loop(mlp_setup, method):
    model, x, y, g, c = mlp_setup
    w, u = torch.linalg.eigh(c)
    dirs = u[:, -2:].T.contiguous()
    out = N.per_sample_noise(model, x, y, directions=dirs, chunk=16, method=method)
    assert out["method"] in ("vmap", "loop") and (method == "auto" or out["method"] == method)
    assert out["n_samples"] == 80 and (out["chunk"] == 16 or method == "auto" and out["chunk"] == 80 // 16)
    assert out["trace_c"] == pytest.approx(float(torch.trace(c)), rel=1e-10)
    np.testing.assert_allclose(out["projection_var"], w[-2:].numpy(), rtol=1e-8)
    assert out["mean_grad_sq_norm"] == pytest.approx(float(g.mean(0).dot(g.mean(0))), rel=1e-10)
    timed = out["calibration_vmap_samples_per_s"] is not None
    assert timed == (method == "auto") and timed == (out["calibration_loop_samples_per_s"] is not None)


@pytest.mark.parametrize("n, chunk", [(96, 8), (40, 16), (20, 4), (2, 8)])
def test_vmap_loop_and_auto_agree_in_float32_with_batchnorm_and_leave_the_model_alone(n, chunk):
    """Float32, eval-mode BatchNorm, sizes that are not multiples of the chunk,
    fewer samples than 16 chunks (auto calibrates on smaller pieces) or
    too few to calibrate at all: each sample counted exactly once either way."""
    model = _small_bn_convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(n, 1, 8, 8)
    y = torch.randint(0, 3, (n,))
    dirs = torch.nn.functional.normalize(torch.randn(3, sum(p.numel() for p in model.parameters())), dim=1)
    res = {m: N.per_sample_noise(model, x, y, directions=dirs, chunk=chunk, method=m) for m in ("vmap", "loop", "auto")}
    assert res["auto"]["method"] in ("vmap", "loop")
    ref = res["vmap"]
    for m in ("loop", "auto"):
        assert res[m]["n_samples"] == n
        assert res[m]["trace_c"] == pytest.approx(ref["trace_c"], rel=1e-5)
        assert res[m]["mean_grad_sq_norm"] == pytest.approx(ref["mean_grad_sq_norm"], rel=1e-5)
        np.testing.assert_allclose(
            res[m]["projection_var"], ref["projection_var"], rtol=1e-5, atol=1e-5 * ref["projection_var"].max()
        )  # float32 rounding of tiny ones
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("margin, expected", [(0.0, "vmap"), (1e12, "loop")])
def test_auto_continues_with_the_method_it_chose_and_counts_each_sample_once(monkeypatch, margin, expected):
    """Either choice of "auto" (forced by the margin, with the trial budget
    lifted so that vmap is tried: 8 loop samples, then vmap pieces of 1, 2, 4, 8)
    plus the rest (vmap at the chunk of its fastest piece, or the loop) give
    the statistics of a plain vmap pass."""
    model = _small_bn_convnet()
    x = torch.randn(96, 1, 8, 8)
    y = torch.randint(0, 3, (96,))
    dirs = torch.nn.functional.normalize(torch.randn(2, sum(p.numel() for p in model.parameters())), dim=1)
    ref = N.per_sample_noise(model, x, y, directions=dirs, chunk=8, method="vmap")
    monkeypatch.setattr(N, "AUTO_VMAP_MARGIN", margin)
    monkeypatch.setattr(N, "AUTO_TRIAL_BUDGET", 1e9)
    out = N.per_sample_noise(model, x, y, directions=dirs, chunk=8, method="auto")
    assert out["method"] == expected
    assert out["chunk"] in ((2, 4, 8) if expected == "vmap" else (8,))
    assert out["calibration_vmap_samples_per_s"] > 0 and out["calibration_loop_samples_per_s"] > 0
    assert out["trace_c"] == pytest.approx(ref["trace_c"], rel=1e-5)
    assert out["mean_grad_sq_norm"] == pytest.approx(ref["mean_grad_sq_norm"], rel=1e-5)
    np.testing.assert_allclose(out["projection_var"], ref["projection_var"], rtol=1e-5)


def test_auto_on_a_small_job_is_the_loop_without_trying_vmap(mlp_setup):
    model, x, y, _, _ = mlp_setup
    out = N.per_sample_noise(model, x, y, chunk=16, method="auto")
    assert out["method"] == "loop" and out["chunk"] == 16
    assert out["calibration_vmap_samples_per_s"] == 0.0 and out["calibration_trial_s"] == 0.0
    assert out["calibration_loop_samples_per_s"] > 0


@pytest.mark.parametrize(
    "n, vmap_cost, method, chunk, calls",
    [
        # a large model on a CPU: vmap 2.2x slower than the loop at any size; tried until
        # it stops improving, its cost beyond the loop within 1% of the loop's time
        (20_000, lambda c: 2.2, "loop", 17, [1, 2, 4]),
        # a small model: vmap slow per sample at first, then several times faster
        (
            20_000,
            lambda c: {1: 5.0, 2: 3.4, 4: 1.7, 8: 1.1, 16: 0.8, 32: 0.5, 64: 0.35}[c],
            "vmap",
            64,
            [1, 2, 4, 8, 16, 32, 64],
        ),
        # too small a job to spend anything on trying: the loop itself
        (800, lambda c: 0.1, "loop", 64, []),
        # enough for the first vmap sample only: the loop (no piece of 2+ was timed)
        (1_000, lambda c: 9.5 if c == 1 else 0.1, "loop", 64, [1]),
        # where vmap beats the loop, trying it further costs nothing: on to the chunk
        (1_000, lambda c: 0.2 / (1 + c / 64), "vmap", 64, [1, 2, 4, 8, 16, 32, 64]),
    ],
)
def test_auto_calibration_keeps_trying_vmap_within_its_budget(monkeypatch, n, vmap_cost, method, chunk, calls):
    clock = _Clock()
    monkeypatch.setattr(N.time, "perf_counter", clock)
    psg = _CostedGradients(clock, vmap_cost)
    seen = []
    chosen, used_chunk, pos, calib = N._calibrate(
        psg, torch.zeros(n, 1), torch.zeros(n), min(chunk, 64), lambda flat: seen.append(flat.shape[0])
    )
    assert (chosen, used_chunk, psg.vmap_calls) == (method, chunk, calls)
    assert pos == sum(seen) == N.AUTO_LOOP_PIECE + sum(calls)  # every sample once
    assert calib["loop"] == 1.0  # the median leaves the warm-up out
    extra = sum(c * max(vmap_cost(c) - 1.0, 0) for c in calls)
    assert calib["trial_s"] == pytest.approx(extra)
    assert extra <= N.AUTO_TRIAL_BUDGET * n * 1.0


def test_per_sample_method_must_be_known(mlp_setup):
    model, x, y, _, _ = mlp_setup
    with pytest.raises(N.NoiseError, match="method"):
        N.per_sample_noise(model, x, y, chunk=16, method="fast")


def test_minibatch_covariance_with_replacement_is_c_over_s(mlp_setup):
    model, x, y, g, c = mlp_setup
    w, u = torch.linalg.eigh(c)
    dirs = u[:, -2:].T.contiguous()
    s = 8
    out = N.minibatch_noise(model, _batches(x, y, s, seed=1), n_batches=1500, directions=dirs, bn_mode="eval")
    assert out["batch_size"] == s
    expected = float(torch.trace(c)) / s
    assert abs(out["trace_cov"] - expected) < 4.5 * out["trace_cov_stderr"]
    assert abs(out["trace_cov"] / expected - 1) < 0.15
    z = (out["projection_var"] - w[-2:].numpy() / s) / out["projection_var_stderr"]
    assert np.all(np.abs(z) < 4.5), z


def test_reshuffled_batches_have_less_variance_and_the_model_is_untouched():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 3)
    ).double()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    rep = N.minibatch_noise(model, _batches(x, y, 16, seed=0, scheme="reshuffle"), n_batches=200, bn_mode="train")
    assert np.isfinite(rep["trace_cov"]) and rep["trace_cov"] > 0 and rep["bn_mode"] == "train"
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_batches": 2, "bn_mode": "train"}, "at least 4"),
        ({"n_batches": 10, "bn_mode": "frozen"}, "bn_mode"),
    ],
)
def test_bad_settings_raise_clear_errors(mlp_setup, kwargs, message):
    model, x, y, _, _ = mlp_setup
    with pytest.raises(N.NoiseError, match=message):
        N.minibatch_noise(model, _batches(x, y, 8, seed=0), **kwargs)
    from limiting_dynamics.errors import DataError

    with pytest.raises(DataError, match="batch size 1000 exceeds the 80 training examples"):
        _batches(x, y, 1000, seed=0)


def test_bulk_noise_curvature_is_tr_h_c_outside_the_top_directions(mlp_setup):
    """``tr(P H P C) / S`` and ``tr(P C P) / S`` with ``P`` the projector off the
    top directions, against the exact per-sample covariance; a matrix with a null
    space stands in for H (its null directions add noise, not curvature)."""
    model, x, y, g, c = mlp_setup
    n = c.shape[0]
    gen = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))
    lam = torch.cat([torch.tensor([5.0, 4.0]), torch.linspace(1.0, 0.01, n - 22, dtype=torch.float64), torch.zeros(20)])
    h = q @ torch.diag(lam) @ q.T
    top = q[:, :2].T.contiguous()
    proj = torch.eye(n, dtype=torch.float64) - top.T @ top
    s = 8
    out = N.bulk_noise_curvature(
        model, _batches(x, y, s, seed=3), 1500, top.float(), lambda v: (h @ v.double()).float(), bn_mode="eval"
    )
    expected_c = float(torch.trace(proj @ c @ proj)) / s
    expected_hc = float(torch.trace(proj @ h @ proj @ c)) / s
    assert abs(out["trace_cov_bulk"] - expected_c) < 4.5 * out["trace_cov_bulk_stderr"]
    assert abs(out["trace_hcov_bulk"] - expected_hc) < 4.5 * out["trace_hcov_bulk_stderr"]
    assert out["noise_weighted_curvature_bulk"] == pytest.approx(out["trace_hcov_bulk"] / out["trace_cov_bulk"])
    # without the projection the top directions' curvature (4-5) would dominate: the ratio stays below 1
    assert 0 < out["noise_weighted_curvature_bulk"] < 1.0
    with pytest.raises(N.NoiseError, match="at least 4"):
        N.bulk_noise_curvature(model, _batches(x, y, s, seed=3), 3, top.float(), lambda v: v, bn_mode="eval")
