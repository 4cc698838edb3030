"""The per-step recorder: flat parameters, norms against naive ones, per-tensor rows,
the gradient read off the momentum buffers, the block-sign sketch, and
projections under channels-last layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from limiting_dynamics import models
from limiting_dynamics.models import build_model
from limiting_dynamics.recording import FlatParameters, StepRecorder, tensor_record_steps

ARCH = {"arch": "resnet", "blocks": [1], "width": 8, "stem": "cifar"}


SMALL = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}


def _batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _sgd_step(model, opt, seed):
    """One SGD step on the batch of ``seed``; its loss."""
    x, y = _batch(seed)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def _flat_sgd(seed, **sgd):
    """The small model with its parameters and momentum buffers in flat buffers."""
    torch.manual_seed(seed)
    model = build_model(SMALL, 10, 1)
    flat = FlatParameters(model)
    opt = torch.optim.SGD(model.parameters(), **{"lr": 0.05, "momentum": 0.9, **sgd})
    return model, flat, opt, flat.install_momentum_buffers(opt)


def _train(model, opt, steps, recorder=None):
    thetas = []
    for k in range(steps):
        loss = _sgd_step(model, opt, k)
        if recorder is not None:
            recorder.record(loss)
        thetas.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
    return thetas


def test_channels_last_views_keep_projections_in_the_standard_layout():
    torch.manual_seed(0)
    model = models.build_model(ARCH, 3, 3)

    def standard(m):  # each parameter flattened in its default (contiguous) order
        return torch.cat([q.detach().reshape(-1) for q in m.parameters()])

    vec = standard(model).clone()
    flat = FlatParameters(model, channels_last=True)
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters())
    assert torch.equal(standard(model), vec)  # same values
    u = torch.randn(2, vec.numel())
    assert torch.allclose(flat.from_standard_layout(u) @ flat.flat, u @ vec, rtol=1e-5)


def test_block_sign_sketch_is_linear_and_unbiased():
    from limiting_dynamics.recording import BlockSignSketch

    x = torch.randn(1001, dtype=torch.float64)
    y = torch.randn(1001, dtype=torch.float64)
    s = BlockSignSketch(1001, 10, seed=0, device="cpu", dtype=torch.float64)
    assert s.block == 101
    np.testing.assert_allclose(s(x + 2 * y).numpy(), (s(x) + 2 * s(y)).numpy(), atol=1e-12)
    # over many sign draws E||Sx||^2 = ||x||^2
    est = np.mean(
        [
            float((BlockSignSketch(1001, 10, seed=k, device="cpu", dtype=torch.float64)(x) ** 2).sum())
            for k in range(400)
        ]
    )
    assert abs(est / float(x @ x) - 1) < 0.05
    with pytest.raises(ValueError, match="sketch dimension"):
        BlockSignSketch(10, 11, 0, "cpu")


def test_block_sign_sketch_reads_a_displacement_confined_to_one_tensor():
    """A displacement that lives in one parameter tensor (here 100 consecutive
    coordinates of 10,000) falls in one block of the parameters' own order, so
    one number would carry it (a squared error of 2 on average, that of a
    chi-square with one degree of freedom); in the sketch's random order it
    spreads over the blocks, and one fixed sketch reads every such vector to
    within about sqrt(2 / blocks hit)."""
    from limiting_dynamics.recording import BlockSignSketch

    s = BlockSignSketch(10_000, 100, seed=0, device="cpu", dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    sq_err = []
    for _ in range(50):
        x = torch.zeros(10_000, dtype=torch.float64)
        x[:100] = torch.randn(100, generator=gen, dtype=torch.float64)
        sq_err.append((float((s(x) ** 2).sum()) / float(x @ x) - 1) ** 2)
    assert np.mean(sq_err) < 0.1


def test_flat_parameters_keep_outputs_and_share_storage():
    torch.manual_seed(0)
    model = build_model(SMALL, 10, 1)
    x, _ = _batch()
    before = model(x)
    flat = FlatParameters(model)
    assert torch.equal(model(x), before)
    flat.flat.zero_()
    assert all(float(p.detach().abs().sum()) == 0 for p in model.parameters())


@pytest.mark.parametrize("impl", [{"fused": True}, {"foreach": True}, {"foreach": False}])
def test_flat_momentum_buffers_are_bit_identical_to_plain_sgd(impl):
    torch.manual_seed(0)
    a = build_model(SMALL, 10, 1)
    b = build_model(SMALL, 10, 1)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3, **impl)
    flat = FlatParameters(b)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3, **impl)
    flat.install_momentum_buffers(opt_b)
    ta, tb = _train(a, opt_a, 5), _train(b, opt_b, 5)
    for x, y in zip(ta, tb):
        assert torch.equal(x, y)


def test_recorder_matches_naive_norms():
    lr = 0.05
    model, flat, opt, flat_v = _flat_sgd(1, lr=lr, weight_decay=1e-3)
    _train(model, opt, 3)  # non-zero velocity at theta_0
    theta0 = flat.flat.clone()
    rec = StepRecorder(flat, flat_v, steps=6, tensor_every=10, compile="never")
    prev = theta0.clone()
    for k in range(6):
        loss = _sgd_step(model, opt, 100 + k)
        rec.record(loss)
        theta = flat.flat
        row = rec.scalars[k]
        assert torch.isclose(row[0], loss.detach())
        assert torch.isclose(row[1], ((theta - theta0) ** 2).sum(), rtol=1e-5)
        v2 = sum(float((opt.state[p]["momentum_buffer"] ** 2).sum()) for p in model.parameters())
        assert abs(float(row[2]) - v2) < 1e-5 * v2
        assert torch.isclose(row[3], (theta**2).sum(), rtol=1e-5)
        # the step identity the recorder relies on: theta_k - theta_{k-1} = -lr v_k
        assert torch.allclose(theta - prev, -lr * flat_v, atol=1e-7)
        step2 = float(((theta - prev) ** 2).sum())
        assert abs(step2 - lr**2 * float(row[2])) < 1e-4 * step2
        per_tensor = torch.stack(
            [((p.detach() - t0) ** 2).sum() for p, t0 in zip(model.parameters(), flat.views(theta0))]
        )
        assert torch.allclose(rec.by_tensor[k, 0], per_tensor, rtol=1e-4, atol=1e-12)
        prev = theta.clone()
    assert rec.count == 6


def test_tensor_record_steps():
    assert tensor_record_steps(35, 10) == list(range(1, 11)) + [20, 30, 35]
    assert tensor_record_steps(5, 1) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("mode", ["never", "always"])
def test_plain_and_fused_norms_agree_and_sparse_tensor_rows_line_up(mode):
    model, flat, opt, flat_v = _flat_sgd(2)
    rec = StepRecorder(flat, flat_v, steps=7, tensor_every=3, compile=mode, log=lambda s: None)
    theta0 = flat.flat.clone()
    for k in range(7):
        loss = _sgd_step(model, opt, 200 + k)
        rec.record(loss)
        d2 = float(((flat.flat - theta0) ** 2).sum())
        assert abs(float(rec.scalars[k, 1]) - d2) <= 1e-4 * d2
        assert abs(float(rec.scalars[k, 2]) - float((flat_v**2).sum())) <= 1e-4 * float((flat_v**2).sum())
    assert rec.tensor_steps == [1, 2, 3, 6, 7]
    # per-tensor rows sum to the per-step total at the matching steps
    last = torch.stack(
        [((p.detach().double() - t0.double()) ** 2).sum() for p, t0 in zip(model.parameters(), flat.views(theta0))]
    )
    assert torch.allclose(rec.by_tensor[-1, 0].double(), last, rtol=1e-5, atol=0)
    for row, step in enumerate(rec.tensor_steps):
        assert torch.isclose(rec.by_tensor[row, 0].sum(), rec.scalars[step - 1, 1], rtol=1e-4)
        assert torch.isclose(rec.by_tensor[row, 1].sum(), rec.scalars[step - 1, 3], rtol=1e-5)


def test_compile_failure_falls_back_to_plain_kernels_with_a_warning():
    model, flat, opt, flat_v = _flat_sgd(3)
    said = []
    rec = StepRecorder(flat, flat_v, steps=3, tensor_every=2, compile="always", log=said.append)

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    rec._fused = rec._fused_segments = broken
    theta0 = flat.flat.clone()
    for k in range(3):
        loss = _sgd_step(model, opt, 300 + k)
        rec.record(loss)
        d2 = float(((flat.flat - theta0) ** 2).sum())
        assert abs(float(rec.scalars[k, 1]) - d2) <= 1e-5 * d2
    assert said == ["warning: fused recording unavailable (RuntimeError); using plain kernels"]
    assert rec._fused is None and rec._fused_segments is None
    assert torch.isfinite(rec.by_tensor).all()


@pytest.mark.parametrize("mode", ["never", "always"])
def test_per_tensor_velocity_and_the_gradient_read_off_the_momentum_buffers(mode):
    """Rows 2 and 3 of the per-tensor record are ||v_j||^2 and the squared norm of
    the minibatch gradient of that step, recovered from v_k, v_{k-1} and theta_k
    (PyTorch's update with weight decay); the gradient is compared with autograd's."""
    lr, beta, wd = 0.05, 0.9, 1e-2
    model, flat, opt, flat_v = _flat_sgd(4, lr=lr, momentum=beta, weight_decay=wd)
    _train(model, opt, 2)
    rec = StepRecorder(
        flat, flat_v, steps=6, tensor_every=2, compile=mode, log=lambda s: None, gradient_coefficients=(lr, beta, wd)
    )
    assert rec.TENSOR_ROWS[:4] == ("sq_dist_from_start", "sq_param_norm", "sq_velocity", "sq_grad")
    assert rec.TENSOR_ROWS[4:] == ("param_dot_grad", "velocity_dot_grad")
    row = 0
    for k in range(6):
        x, y = _batch(400 + k)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        before = [p.detach().double().clone() for p in model.parameters()]
        v_before = [v.detach().double().clone() for v in flat.views(flat_v)]
        opt.step()
        rec.record(loss)
        if k + 1 in rec.tensor_steps:
            g2 = torch.stack([(g.double() ** 2).sum() for g in grads])
            v2 = torch.stack([(v.double() ** 2).sum() for v in flat.views(flat_v)])
            # <theta_{k-1}, g_k> and <v_{k-1}, g_k> with autograd's gradient and the weights it was taken at
            wg = torch.stack([(w * g.double()).sum() for w, g in zip(before, grads)])
            vg = torch.stack([(v * g.double()).sum() for v, g in zip(v_before, grads)])
            assert torch.allclose(rec.by_tensor[row, 2].double(), v2, rtol=1e-5, atol=1e-10)
            assert torch.allclose(rec.by_tensor[row, 3].double(), g2, rtol=2e-3, atol=1e-8)
            scale_w = torch.stack([w.norm() * g.double().norm() for w, g in zip(before, grads)])
            scale_v = torch.stack([v.norm() * g.double().norm() for v, g in zip(v_before, grads)])
            assert torch.all((rec.by_tensor[row, 4].double() - wg).abs() <= 1e-3 * scale_w + 1e-10)
            assert torch.all((rec.by_tensor[row, 5].double() - vg).abs() <= 1e-3 * scale_v + 1e-10)
            row += 1
    assert row == len(rec.tensor_steps) == 4
