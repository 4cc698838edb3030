"""HeavyBall against torch.optim.SGD: bit-identical steps per kernel, state dicts both ways,
flat momentum buffers, and no torch._dynamo import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from limiting_dynamics.heavy_ball import FOREACH, FUSED, HeavyBall, kernel_of
from limiting_dynamics.models import build_model
from limiting_dynamics.recording import FlatParameters

SMALL = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}
HP = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}


def _pair(seed=0):
    torch.manual_seed(seed)
    a = build_model(SMALL, 10, 1)
    b = build_model(SMALL, 10, 1)
    b.load_state_dict(a.state_dict())
    return a, b


def _step(model, opt, k, lr=None):
    g = torch.Generator().manual_seed(k)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    if lr is not None:
        if isinstance(opt, HeavyBall):
            opt.lr = lr
        else:
            opt.param_groups[0]["lr"] = lr
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _same_parameters(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kernel", [FUSED, FOREACH])
def test_steps_are_bit_identical_to_torch_sgd_from_the_first_step(kernel):
    a, b = _pair()
    ref = torch.optim.SGD(a.parameters(), **HP, **{kernel: True})
    ours = HeavyBall(b.parameters(), **HP)
    ours.kernel = kernel
    for k in range(6):
        lr = 0.05 * (1 - k / 10)  # a schedule: lr changed between steps
        _step(a, ref, k, lr)
        _step(b, ours, k, lr)
        assert _same_parameters(a, b), f"step {k}"
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(ref.state[p]["momentum_buffer"], ours.state[q]["momentum_buffer"])


def test_the_two_kernels_round_differently_so_the_kernel_is_recorded():
    a, b = _pair(1)
    fused, foreach = HeavyBall(a.parameters(), **HP), HeavyBall(b.parameters(), **HP)
    foreach.kernel = FOREACH
    for k in range(20):
        _step(a, fused, k)
        _step(b, foreach, k)
    assert fused.name != foreach.name
    assert kernel_of(fused.name) == FUSED and kernel_of(foreach.name) == FOREACH
    assert kernel_of("torch.optim.SGD(fused)") == FUSED  # checkpoints written before HeavyBall
    diff = max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    assert 0 < diff < 1e-5


def test_flat_momentum_buffers_keep_the_steps_bit_identical():
    a, b = _pair(2)
    plain = HeavyBall(a.parameters(), **HP)
    flat = FlatParameters(b)
    ours = HeavyBall(b.parameters(), **HP)
    flat_v = flat.install_momentum_buffers(ours)
    for k in range(5):
        _step(a, plain, k)
        _step(b, ours, k)
        assert _same_parameters(a, b)
    expected = torch.cat([plain.state[p]["momentum_buffer"].reshape(-1) for p in a.parameters()])
    assert torch.equal(flat_v, expected)
    assert all(ours.state[p]["momentum_buffer"].data_ptr() >= flat_v.data_ptr() for p in b.parameters())


def test_state_dict_round_trips_through_torch_sgd_and_resumes_bit_identically():
    a, b = _pair(3)
    ours, ref = HeavyBall(a.parameters(), **HP), torch.optim.SGD(b.parameters(), **HP, fused=True)
    for k in range(3):
        _step(a, ours, k)
        _step(b, ref, k)
    # ours -> torch and torch -> ours, then both continue in step
    ref.load_state_dict(ours.state_dict())
    resumed = HeavyBall(a.parameters(), lr=1.0, momentum=0.0, weight_decay=0.0)
    resumed.load_state_dict(ref.state_dict())
    assert (resumed.lr, resumed.momentum, resumed.weight_decay) == (HP["lr"], HP["momentum"], HP["weight_decay"])
    for k in range(3, 6):
        _step(a, resumed, k)
        _step(b, ref, k)
    assert _same_parameters(a, b)


def test_load_state_dict_rejects_other_parameters_and_other_update_rules():
    a, _ = _pair()
    opt = HeavyBall(a.parameters(), **HP)
    other = torch.optim.SGD(list(a.parameters())[:2], **HP)
    with pytest.raises(ValueError, match="parameters"):
        opt.load_state_dict(other.state_dict())
    nesterov = torch.optim.SGD(a.parameters(), **HP, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        opt.load_state_dict(nesterov.state_dict())
    with pytest.raises(ValueError, match=">= 0"):
        HeavyBall(a.parameters(), lr=-1.0, momentum=0.9, weight_decay=0.0)


def test_zero_grad_and_parameters_without_gradient():
    a, _ = _pair()
    params = list(a.parameters())
    opt = HeavyBall(params, **HP)
    _step(a, opt, 0)
    frozen = params[0].detach().clone()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    params[0].grad = None  # a parameter without gradient is left alone, as torch.optim does
    opt.step()
    assert torch.equal(params[0], frozen)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_training_never_imports_torch_dynamo():
    """The point of the module: a training job's start does not pay for the compiler."""
    code = (
        "import sys, torch\n"
        "from limiting_dynamics.training import sgd\n"
        "from limiting_dynamics.models import build_model\n"
        "import torch.nn.functional as F\n"
        f"m = build_model({SMALL!r}, 10, 1)\n"
        "opt = sgd(m, 0.05, 0.9, 1e-3)\n"
        "x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])\n"
        "F.cross_entropy(m(x), y).backward(); opt.step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
