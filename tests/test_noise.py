"""Gradient-noise estimators against a case with a known answer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from limiting_dynamics import noise as N


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread (a busy machine stalls the per-sample loop's many small multi-threaded ops)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlp_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(80, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (80,))
    per = []
    for i in range(80):  # per-sample gradients by a plain loop: the reference
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        per.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    g = torch.stack(per)
    c = torch.cov(g.T, correction=0)
    return model, x, y, g, c


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


def _small_bn_convnet():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 3))
    model.train()
    with torch.no_grad():  # non-trivial running statistics, then the eval-mode per-sample gradients use them
        model(torch.randn(32, 1, 8, 8) * 2 + 0.5)
    return model


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
        np.testing.assert_allclose(res[m]["projection_var"], ref["projection_var"], rtol=1e-5,
                                   atol=1e-5 * ref["projection_var"].max())  # float32 rounding of tiny ones
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("margin, expected", [(0.0, "vmap"), (1e12, "loop")])
def test_auto_continues_with_the_method_it_chose_and_counts_each_sample_once(monkeypatch, margin, expected):
    """Either choice of "auto" (forced by the margin): calibration (1 sample, then
    2 or 4 pieces of 96 // 16 = 6) plus the rest (vmap at the timed chunk of 6,
    or the loop) give the statistics of a plain vmap pass."""
    model = _small_bn_convnet()
    x = torch.randn(96, 1, 8, 8)
    y = torch.randint(0, 3, (96,))
    dirs = torch.nn.functional.normalize(torch.randn(2, sum(p.numel() for p in model.parameters())), dim=1)
    ref = N.per_sample_noise(model, x, y, directions=dirs, chunk=8, method="vmap")
    monkeypatch.setattr(N, "AUTO_VMAP_MARGIN", margin)
    out = N.per_sample_noise(model, x, y, directions=dirs, chunk=8, method="auto")
    assert out["method"] == expected and out["chunk"] == (6 if expected == "vmap" else 8)
    assert out["calibration_vmap_samples_per_s"] > 0 and out["calibration_loop_samples_per_s"] > 0
    assert out["trace_c"] == pytest.approx(ref["trace_c"], rel=1e-5)
    assert out["mean_grad_sq_norm"] == pytest.approx(ref["mean_grad_sq_norm"], rel=1e-5)
    np.testing.assert_allclose(out["projection_var"], ref["projection_var"], rtol=1e-5)


def test_per_sample_method_must_be_known(mlp_setup):
    model, x, y, _, _ = mlp_setup
    with pytest.raises(N.NoiseError, match="method"):
        N.per_sample_noise(model, x, y, method="fast")


def test_minibatch_covariance_with_replacement_is_c_over_s(mlp_setup):
    model, x, y, g, c = mlp_setup
    w, u = torch.linalg.eigh(c)
    dirs = u[:, -2:].T.contiguous()
    s = 8
    out = N.minibatch_noise(model, x, y, batch_size=s, n_batches=1500, directions=dirs, bn_mode="eval", seed=1)
    expected = float(torch.trace(c)) / s
    assert abs(out["trace_cov"] - expected) < 4.5 * out["trace_cov_stderr"]
    assert abs(out["trace_cov"] / expected - 1) < 0.15
    z = (out["projection_var"] - w[-2:].numpy() / s) / out["projection_var_stderr"]
    assert np.all(np.abs(z) < 4.5), z


def test_reshuffled_batches_have_less_variance_and_the_model_is_untouched():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 16, 3)).double()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    rep = N.minibatch_noise(model, x, y, batch_size=16, n_batches=200, seed=0)
    assert np.isfinite(rep["trace_cov"]) and rep["trace_cov"] > 0 and rep["bn_mode"] == "train"
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 8, "n_batches": 2}, "at least 4"),
    ({"batch_size": 1000, "n_batches": 10}, "exceeds"),
    ({"batch_size": 8, "n_batches": 10, "bn_mode": "frozen"}, "bn_mode"),
])
def test_bad_settings_raise_clear_errors(mlp_setup, kwargs, message):
    model, x, y, _, _ = mlp_setup
    with pytest.raises(N.NoiseError, match=message):
        N.minibatch_noise(model, x, y, **kwargs)


def test_scale_invariant_weights_are_the_ones_before_batchnorm_and_prediction_adds_both_terms():
    from limiting_dynamics.models import build_model

    names = N.scale_invariant_tensors(build_model({"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64,
                                                   "stem": "imagenet"}, 10, 3))
    assert len(names) == 20 and "conv1.weight" in names and "layer2.0.downsample.0.weight" in names
    assert "fc.weight" not in names
    p = N.predicted_sq_step(lr=0.1, momentum=0.9, weight_decay=1e-3, trace_cov=2.0, sq_norm_scale_invariant=50.0)
    assert p["sq_step_predicted_noise"] == pytest.approx(0.01 * 2.0 / 0.19)
    assert p["sq_step_predicted_weight_decay"] == pytest.approx(0.01 * 1e-6 * 50.0 / 0.01)
    assert p["sq_step_predicted"] == pytest.approx(p["sq_step_predicted_noise"] + p["sq_step_predicted_weight_decay"])
