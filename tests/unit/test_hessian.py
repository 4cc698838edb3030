"""Hessian estimators on a known matrix and on a small network against the exact
Hessian from torch.autograd.functional.hessian; a stopped Hessian job resumes
to the same numbers."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import StopAt
from small_networks import Small
from torch.func import functional_call

from limiting_dynamics import hessian as Hs
from limiting_dynamics.checkpoints import (
    Checkpointer,
    ResumeStore,
    read_checkpoint,
)
from limiting_dynamics.errors import Interrupted
from limiting_dynamics.models import build_model

MODEL = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}


CPU = torch.device("cpu")


QUIET = {"log": lambda s: None}


def known_operator(n=200, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.concatenate(
        [np.array([50.0, 30.0, 20.0, 12.0, 9.0, 7.0, 5.5, 4.5, 3.7, 3.1]), rng.uniform(-0.5, 2.0, n - 10)]
    )
    mat = torch.tensor(q @ np.diag(eig) @ q.T)
    return (lambda v: mat @ v), np.sort(eig)[::-1], mat


@pytest.fixture(scope="module")
def small_setup():
    torch.manual_seed(0)
    model = Small().double()
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(24, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (24,))
    batches = [(x[:12], y[:12]), (x[12:], y[12:])]
    return model, x, y, batches


def exact_hessian(model, x, y, bn_mode):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    m = Small().double()
    m.load_state_dict(model.state_dict())
    m.train(bn_mode == "train")
    buffers = {n: b.clone() for n, b in m.named_buffers()}

    def loss(flat):
        params, off = {}, 0
        for n, s, k in zip(names, shapes, sizes):
            params[n] = flat[off : off + k].view(s)
            off += k
        out = torch.cat([functional_call(m, ({**params, **buffers}), (xb,)) for xb in (x[:12], x[12:])])
        return F.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss, flat0)


def test_hessian_stopped_in_each_part_and_resumed_gives_the_same_numbers(digits, tmp_path):
    """Stopped during the Lanczos run (nothing to keep yet), during the second
    SLQ probe, and among the Hutchinson probes: the resumed result equals an
    uninterrupted one in every number, the count of products included."""
    from limiting_dynamics import hessian

    torch.manual_seed(0)
    model = build_model(MODEL, 10, 1)
    batches = hessian.fixed_batches(digits.x_train, digits.y_train, 64, 32, seed=0)
    cfg = {
        "bn_mode": "train",
        "precision": "float32",
        "top_k": 3,
        "tol": 1e-2,
        "max_iter": 20,
        "slq_vectors": 3,
        "slq_iterations": 6,
        "hutchinson_samples": 5,
        "reuse_graph": False,
        "seed": 0,
    }

    calls, marks = [], {}

    def counting():
        calls.append(1)

    def log(msg):
        for part in ("(the Lanczos run)", "(SLQ probe 1)"):
            if part in msg:
                marks[part] = len(calls)

    def run(stop, name="h.pt", log=lambda s: None):
        store = ResumeStore(tmp_path / name, {"cell": "c"}, **QUIET)
        return hessian.analyze(
            model, batches, cfg, CPU, log=lambda s: None, checkpointer=Checkpointer(store, every=0, stop=stop, log=log)
        ), store

    whole, _ = run(counting, "ref.pt", log)
    with pytest.raises(Interrupted, match="during the Hessian .* nothing to resume from"):
        run(StopAt(marks["(the Lanczos run)"] - 2))
    with pytest.raises(Interrupted, match="during the Hessian .* keeps the parts finished before"):
        run(StopAt(marks["(SLQ probe 1)"] + 3))
    assert read_checkpoint(tmp_path / "h.pt")["parts_done"] == "SLQ probe 1"
    # resumed: SLQ probes 2 and 3 (6 products and a checkpoint each), then Hutchinson probe 1 and its check
    with pytest.raises(Interrupted, match="after 1 Hutchinson probes"):
        run(StopAt(2 * 7 + 2))
    resumed, store = run(None)
    assert resumed.attrs == whole.attrs
    for name in whole.variables:
        np.testing.assert_array_equal(resumed[name].values, whole[name].values, err_msg=name)


def test_lanczos_finds_the_top_eigenpairs_of_a_known_matrix():
    mv, eig, mat = known_operator()
    res = Hs.lanczos(mv, 200, 10, tol=1e-8, max_iter=200, dtype=torch.float64)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, eig[:10], rtol=1e-8)
    for i in range(10):
        v = res.eigenvectors[:, i]
        assert torch.allclose(mat @ v, res.eigenvalues[i] * v, atol=1e-6 * eig[0])
    assert res.n_products < 120


def test_lanczos_needs_far_fewer_products_than_block_power_iteration():
    mv, eig, _ = known_operator()
    lz = Hs.lanczos(mv, 200, 10, tol=1e-3, dtype=torch.float64)
    bp = Hs.block_power_iteration(mv, 200, 10, tol=1e-3, max_iter=500, dtype=torch.float64)
    np.testing.assert_allclose(lz.eigenvalues, eig[:10], rtol=1e-3)
    assert lz.n_products * 3 < bp.n_products


@pytest.mark.parametrize("reuse_graph", [False, True])
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_hvp_and_lanczos_match_the_exact_hessian_of_a_small_network(small_setup, bn_mode, reuse_graph):
    model, x, y, batches = small_setup
    h = exact_hessian(model, x, y, bn_mode)
    op = Hs.HessianOperator(model, batches, bn_mode=bn_mode, dtype=torch.float64, reuse_graph=reuse_graph)
    assert op.numel == h.shape[0]
    v = torch.randn(op.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(op.matvec(2 * v), 2 * (h @ v), rtol=1e-9, atol=1e-10)  # a second product
    eig = np.sort(np.linalg.eigvalsh(h.numpy()))[::-1]
    res = Hs.lanczos(op.matvec, op.numel, 5, tol=1e-9, dtype=torch.float64)
    np.testing.assert_allclose(res.eigenvalues, eig[:5], rtol=1e-6)


@pytest.mark.parametrize("reuse_graph", [False, True])
def test_the_callers_model_is_never_mutated(small_setup, reuse_graph):
    model, x, y, batches = small_setup
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = Hs.HessianOperator(model, batches, bn_mode="train", dtype=torch.float64, reuse_graph=reuse_graph)
    for _ in range(3):
        op.matvec(torch.ones(op.numel, dtype=torch.float64))
    op.gradient()
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # and the private copy's running statistics stay frozen, so products repeat exactly
    a = op.matvec(torch.ones(op.numel, dtype=torch.float64))
    b = op.matvec(torch.ones(op.numel, dtype=torch.float64))
    assert torch.equal(a, b)


def test_hutchinson_and_slq_estimate_trace_and_moments(small_setup):
    model, x, y, batches = small_setup
    h = exact_hessian(model, x, y, "eval").numpy()
    op = Hs.HessianOperator(model, batches, bn_mode="eval", dtype=torch.float64)
    n = op.numel
    mean, err = Hs.hutchinson_trace(op.matvec, n, n_samples=64, seed=3, dtype=torch.float64)
    assert abs(mean - np.trace(h)) < 4 * err
    dens = Hs.slq(op.matvec, n, n_vectors=16, iterations=30, seed=4, dtype=torch.float64)
    assert dens.moment(0) == pytest.approx(1.0)
    assert dens.moment(1) == pytest.approx(np.trace(h) / n, rel=0.15)
    assert dens.moment(2) == pytest.approx(np.trace(h @ h) / n, rel=0.25)
    grid = np.linspace(-5, 5, 4001)
    assert np.trapezoid(dens.density(grid, 0.05), grid) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, b: Hs.HessianOperator(m, b, bn_mode="frozen"), "bn_mode"),
        (lambda m, b: Hs.HessianOperator(m, [], bn_mode="eval"), "no data"),
        (lambda m, b: Hs.lanczos(lambda v: v, 10, 11), "k must be"),
        (lambda m, b: Hs.hutchinson_trace(lambda v: v, 10, n_samples=1), "at least 2"),
    ],
)
def test_bad_settings_raise_clear_errors(small_setup, call, message):
    model, _, _, batches = small_setup
    with pytest.raises(Hs.HessianError, match=message):
        call(model, batches)


def test_loss_batching_uses_the_cells_batches_in_train_mode():
    cfg = {"batch_size": 256, "n_samples": 500, "bn_mode": "train"}
    assert Hs.loss_batching(cfg, 1438, 64) == (448, 64)
    assert Hs.loss_batching(cfg, 1438, 1000) == (1000, 1000)
    assert Hs.loss_batching({**cfg, "bn_mode": "eval"}, 1438, 64) == (500, 256)
    assert Hs.loss_batching(cfg, 1438) == (500, 256)
    assert Hs.loss_batching({**cfg, "n_samples": "all"}, 1438, 64) == (1408, 64)  # every training example


def test_fixed_batches_draw_new_compositions_and_shifts_reproducibly():
    x = torch.arange(40, dtype=torch.float32).view(10, 1, 2, 2).repeat(1, 1, 2, 2)
    y = torch.arange(10)
    one = Hs.fixed_batches(x, y, 8, 4, seed=0)
    two = Hs.fixed_batches(x, y, 8, 4, seed=0, draws=2)
    assert len(one) == 2 and len(two) == 4
    for i in range(2):  # the first draw is the one-draw batches; the second covers the same subset anew
        assert torch.equal(one[i][1], two[i][1])
    first = torch.cat([two[i][1] for i in range(2)]).sort().values
    second = torch.cat([two[i][1] for i in range(2, 4)])
    assert torch.equal(first, second.sort().values) and not torch.equal(torch.cat([two[0][1], two[1][1]]), second)
    shifted = Hs.fixed_batches(x, y, 8, 4, seed=0, shift=1, fill=torch.zeros(1, 1, 1, 1))
    a, b = shifted[0][0], shifted[0][0]
    assert torch.equal(a, b) and not torch.equal(a, one[0][0])  # translated, the same every time it is cut


def test_label_smoothing_hessian_is_the_expected_hessian_under_label_noise():
    """Labels replaced by a uniform class with probability p: the expected loss is
    (1 - p) CE(y) + p mean_c CE(c), the cross-entropy with label smoothing p."""
    torch.manual_seed(0)
    model = Small(activation=torch.tanh).double().eval()
    x, y = torch.randn(12, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (12,))
    p = 0.3
    smooth = Hs.HessianOperator(
        model, [(x, y)], bn_mode="eval", dtype=torch.float64, loss=functools.partial(F.cross_entropy, label_smoothing=p)
    )
    clean = Hs.HessianOperator(model, [(x, y)], bn_mode="eval", dtype=torch.float64)
    each = [
        Hs.HessianOperator(model, [(x, torch.full_like(y, c))], bn_mode="eval", dtype=torch.float64) for c in range(4)
    ]
    v = torch.randn(smooth.numel, dtype=torch.float64)
    expected = (1 - p) * clean.matvec(v) + p * sum(op.matvec(v) for op in each) / 4
    assert torch.allclose(smooth.matvec(v), expected, rtol=1e-10, atol=1e-12)


def test_rayleigh_quotient_and_residual_tell_an_eigenvector_from_a_turned_one():
    op, eig, mat = known_operator()
    vecs = torch.linalg.eigh(mat).eigenvectors.flip(1)  # columns, largest eigenvalue first
    u = vecs[:, 0].clone()
    rq, res = Hs.rayleigh_and_residual(op, torch.stack([u]))
    assert rq[0] == pytest.approx(eig[0], rel=1e-10) and res[0] < 1e-10
    w = torch.cos(torch.tensor(0.3, dtype=u.dtype)) * u + torch.sin(torch.tensor(0.3, dtype=u.dtype)) * vecs[:, 5]
    rq, res = Hs.rayleigh_and_residual(op, torch.stack([w]))
    assert rq[0] < eig[0] and res[0] > 0.1
