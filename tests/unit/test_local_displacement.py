"""Both predictions of the stationary step against a simulated scale-invariant
model with weight decay and momentum, recorded like a real run; stationarity."""

import numpy as np
import pytest
import torch
from torch import nn

from limiting_dynamics import local_displacement, trajectory
from limiting_dynamics.recording import FlatParameters, StepRecorder

LR, BETA, WD = 0.1, 0.9, 0.05


class ScaleInvariantToy(nn.Module):
    """Two scale-invariant tensors (the loss sees only ``w / ||w||``, as behind
    BatchNorm) and one ordinary tensor ``b`` in a weak quadratic; every step's
    "minibatch" is a fresh random target, so the gradients are noisy and, for
    ``w``, orthogonal to ``w`` and of size ``1/||w||``."""

    def __init__(self, dims=(300, 200), other=50, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(d, generator=g) * 3.0, requires_grad=True) for d in dims])
        self.b = nn.Parameter(torch.zeros(other))
        self.gen = torch.Generator().manual_seed(seed + 1)

    def loss(self) -> torch.Tensor:
        total = 0.0
        for w in self.ws:
            target = torch.randn(w.shape, generator=self.gen)
            total = total + 0.5 * ((w / w.norm() - target) ** 2).sum()
        target_b = torch.randn(self.b.shape, generator=self.gen)
        return total + 0.5 * 0.02 * ((self.b - target_b) ** 2).sum()


def _simulate(burn_in=600, steps=4000):
    model = ScaleInvariantToy()
    flat = FlatParameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=BETA, weight_decay=WD)
    flat_v = flat.install_momentum_buffers(opt)

    def step():
        loss = model.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(burn_in):  # the norms settle within a few (1 - beta) / (lr wd) = 20 steps
        step()
    rec = StepRecorder(flat, flat_v, steps, tensor_every=5, compile="never", gradient_coefficients=(LR, BETA, WD))
    for _ in range(steps):
        rec.record(step())
    scalars = rec.scalars.double().numpy()
    by_tensor = rec.by_tensor.double().numpy()
    record = {
        "step": np.arange(1, steps + 1),
        "train_loss": scalars[:, 0],
        "sq_dist_from_start": scalars[:, 1],
        "sq_velocity": scalars[:, 2],
        "sq_step": LR**2 * scalars[:, 2],
        "sq_param_norm": scalars[:, 3],
        "tensor_step": np.asarray(rec.tensor_steps),
        **{f"{r}_by_tensor": by_tensor[:, i] for i, r in enumerate(rec.TENSOR_ROWS)},
        "sq_param_norm_start_by_tensor": np.array([float((v.double() ** 2).sum()) for v in flat.views(rec.theta0)]),
        "tensor_name": list(flat.names),
        "tensor_size": np.asarray(flat.sizes),
        "tensor_scale_invariant": np.array([n.startswith("ws.") for n in flat.names], np.int8),
        "eval_step": np.array([0]),
        **{f"eval_{k}": np.array([0.0]) for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")},
        "sq_param_norm_start": 1.0,
        "sq_velocity_start": 1.0,
        "burn_in_steps": burn_in,
        "n_params": flat.numel,
    }
    attrs = {"lr": LR, "batch_size": 1, "momentum": BETA, "weight_decay": WD, "seed": 0}
    return trajectory.build_dataset(record, attrs)


@pytest.fixture(scope="module")
def toy():
    return _simulate()


def test_norm_equilibrium_and_noise_formula_predict_the_stationary_step(toy):
    p = local_displacement.predictions(toy, window=(0.0, 1.0))
    # the identity is exact at stationarity: only the Monte Carlo error of 4,000 steps is left
    assert p["measured_over_equilibrium_check_si"] == pytest.approx(1.0, abs=0.02)
    assert 0.98 < p["equilibrium_ratio_min"] <= p["equilibrium_ratio_max"] < 1.02
    # the noise formula with the gradients read off the run: free diffusion on the spheres, a weak quadratic
    assert p["measured_over_in_run_check"] == pytest.approx(1.0, abs=0.04)
    assert p["measured_over_in_run_check_si"] == pytest.approx(1.0, abs=0.04)
    assert p["measured_over_in_run_check_other"] == pytest.approx(1.0, abs=0.05)
    assert p["measured_over_equilibrium_check"] == pytest.approx(1.0, abs=0.03)
    assert abs(p["norm_drift_fraction"]) < 0.05
    # the previous prediction added lr^2 wd^2 ||theta_SI||^2 / (1 - beta)^2 to the noise term: once the norm
    # has settled that term is cancelled by the tangential steps, and here it overshoots by ~45%
    norm_si = float(toy.sq_param_norm_by_tensor.sel(tensor=["ws.0", "ws.1"]).sum("tensor").mean())
    old = p["sq_step_in_run_check"] + LR**2 * WD**2 * norm_si / (1 - BETA) ** 2
    assert p["sq_step_measured"] / old < 0.75
    # and the identity holds for each sphere: the measured share of the rest is the weak quadratic's
    assert p["sq_step_measured_si"] + p["sq_step_measured_other"] == pytest.approx(p["sq_step_measured"], rel=0.02)


def test_gradients_read_off_the_buffers_are_the_noise_of_the_toy(toy):
    # each sphere's gradient is (I - w w^T / |w|^2) xi / |w| with xi standard normal: E|g|^2 = (d - 1) / |w|^2
    g2 = toy.sq_grad_by_tensor.sel(tensor=["ws.0", "ws.1"]).mean("tensor_step").values
    n2 = toy.sq_param_norm_by_tensor.sel(tensor=["ws.0", "ws.1"]).mean("tensor_step").values
    np.testing.assert_allclose(g2 * n2, [299, 199], rtol=0.03)


def test_shares_windows_and_norm_drift_read_off_the_recorded_tensors(toy):
    """What the share of the other parameters, a window's gradient norm and the
    norm drift are, computed here by name from the recorded tensors."""
    p = local_displacement.predictions(toy, window=(0.0, 1.0))
    v2 = toy.sq_velocity_by_tensor.mean("tensor_step")
    assert p["other_fraction"] == pytest.approx(float(v2.sel(tensor="b") / v2.sum()), rel=1e-9)
    assert 0.0 < p["other_fraction"] < 0.5
    late = toy.sq_grad_by_tensor.where(toy.tensor_step > 0.5 * float(toy.tensor_step[-1]), drop=True)
    assert local_displacement.grad_sq_norm(toy, (0.5, 1.0)) == pytest.approx(float(late.sum("tensor").mean()), rel=1e-9)
    # the spheres' squared norms grow by 30% over the run, linearly: in units of the relaxation
    # rate 2 lr wd / (1 - beta), the drift is 0.3 / (steps x mean) of the norm
    ts = toy.tensor_step.values.astype(float)
    ramp = toy.copy(deep=True)
    n2 = ramp.sq_param_norm_by_tensor.transpose("tensor_step", "tensor")
    spheres = [list(ramp.tensor.values).index(name) for name in ("ws.0", "ws.1")]
    values = n2.values.copy()
    values[:, spheres] = values[:, spheres].mean(axis=0) * (1 + 0.3 * (ts - ts[0]) / (ts[-1] - ts[0]))[:, None]
    ramp["sq_param_norm_by_tensor"] = n2.copy(data=values)
    mean_growth = float(np.mean(1 + 0.3 * (ts - ts[0]) / (ts[-1] - ts[0])))  # 1.15 at evenly spaced steps
    expected = (1 - BETA) * 0.3 / (ts[-1] - ts[0]) / (2 * LR * WD * mean_growth)
    got = local_displacement.predictions(ramp, window=(0.0, 1.0))["norm_drift_fraction"]
    assert got == pytest.approx(expected, rel=1e-9)


def test_stationarity_ratio_tells_a_stationary_series_from_relaxation_cycles():
    rng = np.random.default_rng(0)
    x = np.empty(8000)
    x[0] = 0.0
    for k in range(1, 8000):  # AR(1) fluctuations around a constant level
        x[k] = 0.9 * x[k - 1] + rng.standard_normal()
    stationary = np.exp(0.1 * x / x.std()) * 1e-3
    assert local_displacement.stationarity_ratio(stationary, 200) < 1.3
    cycles = 1e-3 * np.where((np.arange(8000) // 700) % 2 == 0, 1.0, 20.0)  # quiet and active phases
    assert local_displacement.stationarity_ratio(cycles, 200) == pytest.approx(20.0)
    np.testing.assert_allclose(local_displacement.rolling_mean(np.arange(5.0), 2), [0.5, 1.5, 2.5, 3.5])


def test_scale_invariance_is_measured_not_declared(toy):
    """The spheres' gradients are orthogonal to them (cosine at round-off), the quadratic's
    is not; a wrong declaration is caught, and the identity uses the measured set."""
    cos = dict(zip(toy.tensor.values, local_displacement.scale_invariance(toy, window=(0.0, 1.0))))
    assert max(cos["ws.0"], cos["ws.1"]) < 1e-5 and cos["b"] > 1e-2
    p = local_displacement.predictions(toy, window=(0.0, 1.0))
    assert (p["scale_invariant_declared"], p["scale_invariant_measured"], p["scale_invariant_disagreements"]) == (
        2,
        2,
        0,
    )
    wrong = toy.assign(tensor_scale_invariant=("tensor", (toy.tensor.values != "ws.1").astype(np.int8)))
    q = local_displacement.predictions(wrong, window=(0.0, 1.0))
    assert q["scale_invariant_disagreements"] == 2 and q["scale_invariant_measured"] == 2
    assert q["measured_over_equilibrium_check_si"] == pytest.approx(p["measured_over_equilibrium_check_si"])
    # free diffusion on the spheres and a weak quadratic: the momentum hardly correlates with the next gradient
    assert abs(p["momentum_gradient_correlation"]) < 0.05


@pytest.mark.parametrize("batchnorm", [True, False])
def test_scale_invariance_of_a_convolution_with_and_without_batchnorm(batchnorm):
    """A convolution feeding a BatchNorm (train mode) has a gradient orthogonal to its weight;
    without the BatchNorm it does not: the recorder's inner products tell them apart."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1, bias=False)] + ([nn.BatchNorm2d(4)] if batchnorm else [])
    model = nn.Sequential(*layers, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    flat = FlatParameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    flat_v = flat.install_momentum_buffers(opt)
    rec = StepRecorder(flat, flat_v, 40, tensor_every=1, compile="never", gradient_coefficients=(0.05, 0.9, 1e-3))
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        x, y = torch.randn(16, 1, 6, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.record(loss)
    rows = dict(zip(rec.TENSOR_ROWS, rec.by_tensor.double().unbind(1)))
    cos = (rows["param_dot_grad"].abs() / (rows["sq_param_norm"] * rows["sq_grad"]).sqrt()).median(0).values
    conv = flat.names.index("0.weight")
    if batchnorm:
        assert cos[conv] < 1e-4
    else:
        assert cos[conv] > local_displacement.SCALE_INVARIANT_COSINE
    assert cos[flat.names.index(f"{len(layers) + 2}.weight")] > local_displacement.SCALE_INVARIANT_COSINE
