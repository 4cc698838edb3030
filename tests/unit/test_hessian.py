"""Hessian estimators on a known matrix and on a small network against the exact
Hessian from torch.autograd.functional.hessian; a stopped Hessian job (also in
the middle of its Lanczos run) resumes to the same numbers, bit for bit,
without redoing the products before its checkpoint."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import StopAt, assert_same_result
from small_networks import Small
from torch.func import functional_call

from limiting_dynamics import hessian as Hs
from limiting_dynamics.checkpoints import (
    Checkpointer,
    ResumeStore,
    read_checkpoint,
    save_checkpoint,
)
from limiting_dynamics.errors import CheckpointError, Interrupted
from limiting_dynamics.models import build_model
from limiting_dynamics.result_files import hessian_dataset

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


def eval_operator(model, batches, loss=F.cross_entropy):
    """The float64 eval-mode operator of the small tests (products rebuilt each time)."""
    return Hs.HessianOperator(
        model,
        batches,
        bn_mode="eval",
        reuse_graph=False,
        dtype=torch.float64,
        device="cpu",
        loss=loss,
        stack_examples=12,
    )


DIGITS_CFG = {
    "bn_mode": "train",
    "precision": "float32",
    "top_k": 3,
    "tol": 1e-2,
    "max_iter": 20,
    "slq_vectors": 3,
    "slq_iterations": 6,
    "hutchinson_samples": 5,
    "reuse_graph": False,
    "batch_size": 64,  # train mode: the two batches of 32 in one forward pass
    "seed": 0,
}


@pytest.fixture
def digits_problem(digits):
    """The small ResNet at its initialisation and 64 digits in two batches."""
    torch.manual_seed(0)
    return build_model(MODEL, 10, 1), Hs.fixed_batches(digits.x_train, digits.y_train, 64, 32, seed=0)


@pytest.fixture
def products(monkeypatch):
    """The Hessian-vector products computed (one entry per product, whatever operator)."""
    done = []
    matvec = Hs.HessianOperator.matvec

    def counting(self, v):
        done.append(1)
        return matvec(self, v)

    monkeypatch.setattr(Hs.HessianOperator, "matvec", counting)
    return done


def _assert_same_result(a, b):
    assert a.attrs == b.attrs
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=name)


def _analyze(problem, path, stop=None, every=0, log=lambda s: None, **kw):
    model, batches = problem
    store = ResumeStore(path, {"cell": "c"}, **QUIET)
    ckpt = Checkpointer(store, every=every, stop=stop, log=log)
    result = Hs.analyze(model, batches, DIGITS_CFG, CPU, label_smoothing=0.0, log=log, checkpointer=ckpt, **kw)
    return hessian_dataset(result, DIGITS_CFG, CPU)


def test_hessian_stopped_again_and_again_resumes_to_the_same_numbers_without_redoing_a_product(
    digits_problem, products, tmp_path
):
    """A signal every 5 polls (after a Lanczos step, an SLQ step, a finished part
    or a Hutchinson probe): each run writes a checkpoint and stops; the next one
    continues from it, the first time in the middle of the Lanczos run. The
    result equals an uninterrupted run's in every number, and the products of
    all the runs add up to the uninterrupted run's: none is done twice."""
    whole = _analyze(digits_problem, tmp_path / "ref.pt")
    full = len(products)
    lanczos_products = whole.attrs["lanczos_hvps"]
    assert lanczos_products > 5 and full == whole.attrs["total_hvps"]

    path, counts, messages = tmp_path / "h.pt", [], []
    while True:
        products.clear()
        try:
            resumed = _analyze(digits_problem, path, StopAt(5))
            counts.append(len(products))
            break
        except Interrupted as exc:
            counts.append(len(products))
            messages.append(str(exc))
            if len(messages) == 1:  # the first stop: 5 steps into the Lanczos run, its state kept
                saved = read_checkpoint(path)
                assert saved["parts_done"] == "5 products of the Lanczos run"
                partial = saved["lanczos_partial"]
                assert partial["iterations"] == 5 and sum(len(b) for b in partial["basis"]) == 6
                assert len(partial["alphas"]) == len(partial["betas"]) == 5 and "rng" in partial
    assert messages[0].startswith("stopped by SIGTERM after 5 Hessian-vector products (the Lanczos run); checkpoint")
    assert any("(SLQ probe 2)" in m for m in messages) and any("(Hutchinson probes)" in m for m in messages)
    assert counts[0] == 5 and counts[1] < lanczos_products  # the second run continued the Lanczos run
    assert sum(counts) == full
    _assert_same_result(whole, resumed)


def test_hessian_killed_between_checkpoints_resumes_from_the_last_one_on_the_schedule(
    digits_problem, products, monkeypatch, tmp_path
):
    """Checkpoints every 4 products, then a hard stop (as SIGKILL: no last
    checkpoint) inside the 11th product: the rerun continues from the checkpoint
    after 8 products, in the middle of the Lanczos run, and redoes only 2."""
    lines = []
    whole = _analyze(digits_problem, tmp_path / "ref.pt", every=4, log=lines.append)
    full = len(products)
    assert "checkpoint after 8 Hessian-vector products (the Lanczos run) -> " + str(tmp_path / "ref.pt") in lines

    matvec = Hs.HessianOperator.matvec

    class Killed(Exception):
        pass

    def killed(self, v):
        if len(products) == 10:
            raise Killed
        return matvec(self, v)

    products.clear()
    with monkeypatch.context() as m:
        m.setattr(Hs.HessianOperator, "matvec", killed)
        with pytest.raises(Killed):
            _analyze(digits_problem, tmp_path / "h.pt", every=4)
    assert read_checkpoint(tmp_path / "h.pt")["lanczos_partial"]["iterations"] == 8
    products.clear()
    lines.clear()
    resumed = _analyze(digits_problem, tmp_path / "h.pt", every=4, log=lines.append)
    assert any("resuming after 8 products of the Lanczos run" in line for line in lines)
    assert len(products) == full - 8
    _assert_same_result(whole, resumed)


def test_hessian_logs_progress_of_the_lanczos_run_and_each_slq_probe(digits_problem):
    lines = []
    result = Hs.analyze(*digits_problem, DIGITS_CFG, CPU, label_smoothing=0.0, log=lines.append, progress_every=0)
    m = result.top.n_products
    assert result.batches_per_pass == 2  # the two batches of 32 in one pass of at most 64 examples
    assert lines[0] == "Lanczos: started (at most 20 products)"
    steps = [line for line in lines if line.startswith("Lanczos: ") and "/20 products, " in line]
    assert len(steps) == m - 1  # one after every step but the last (the end line)
    assert steps[0].startswith("Lanczos: 1/20 products, ") and " left" in steps[0]
    assert "largest relative residual of the top 3 Ritz pairs" in steps[-1] and "(tol 0.01)" in steps[-1]
    assert "largest relative residual" not in steps[1]  # before 3 steps there are no 3 Ritz pairs
    end = next(line for line in lines if line.startswith("Lanczos: done"))
    assert end.startswith(f"Lanczos: done, {m} products in ") and "largest relative residual" in end
    assert m >= DIGITS_CFG["slq_iterations"]  # the Lanczos run is long enough to be the first probe
    assert result.total_products == m + 2 * 6 + DIGITS_CFG["hutchinson_samples"]  # probes 2 and 3, Hutchinson
    assert np.array_equal(result.density.nodes[0], Hs.quadrature(*result.top.tridiagonal, 6)[0])
    assert "SLQ probe 1 of 3: the first 6 steps of the Lanczos run (no further products)" in lines
    assert not any(line.startswith("SLQ probe 1 of 3: started") for line in lines)
    for i in (2, 3):
        assert f"SLQ probe {i} of 3: started (6 products)" in lines
        assert f"SLQ probe {i} of 3: 5/6 products, " in " ".join(lines)
        assert any(line.startswith(f"SLQ probe {i} of 3: done, 6 products in ") for line in lines)


def test_progress_lines_come_at_most_every_interval():
    lines, now = [], [100.0]
    progress = Hs.Progress(
        "Lanczos", 120, "products", lines.append, every=30, done=20, at_most=True, clock=lambda: now[0]
    )
    for m in range(21, 41):
        now[0] += 10.0  # 10 s per product
        progress.update(m, ", note")
    progress.end(40)
    assert lines[0] == "Lanczos: started (at most 120 products, resumed after 20)"
    assert lines[1:-1] == [  # every third product: 30 s apart; the rate counts only this process's products
        "Lanczos: 23/120 products, 0.1 products/s, at most 16 min 10 s left, note",
        "Lanczos: 26/120 products, 0.1 products/s, at most 15 min 40 s left, note",
        "Lanczos: 29/120 products, 0.1 products/s, at most 15 min 10 s left, note",
        "Lanczos: 32/120 products, 0.1 products/s, at most 14 min 40 s left, note",
        "Lanczos: 35/120 products, 0.1 products/s, at most 14 min 10 s left, note",
        "Lanczos: 38/120 products, 0.1 products/s, at most 13 min 40 s left, note",
    ]
    assert lines[-1] == "Lanczos: done, 40 products in 3 min 20 s (0.1 products/s)"


@pytest.mark.parametrize("stop_at", [1, 7, 15])
def test_lanczos_resumed_after_any_step_gives_the_same_eigenpairs_bit_for_bit(tmp_path, stop_at):
    """The state handed to ``on_step`` goes through a checkpoint file; the run
    resumed from it returns the same eigenvalues, eigenvectors and residuals,
    bit for bit, after only the products that were left."""
    mv, eig, _ = known_operator()
    calls = []

    def counting(v):
        calls.append(1)
        return mv(v)

    kw = {"tol": 1e-8, "max_iter": 200, "device": "cpu", "dtype": torch.float64, "seed": 3}
    whole = Hs.lanczos(counting, 200, 10, **kw)
    full = len(calls)
    assert whole.converged and full == whole.n_products > stop_at

    class Stopped(Exception):
        pass

    residuals = []

    def on_step(m, state, residual):
        residuals.append(residual)
        if m == stop_at:
            save_checkpoint(state(), tmp_path / "l.pt")
            raise Stopped

    calls.clear()
    with pytest.raises(Stopped):
        Hs.lanczos(counting, 200, 10, on_step=on_step, **kw)
    assert len(calls) == stop_at and np.isnan(residuals[0])
    calls.clear()
    resumed = Hs.lanczos(counting, 200, 10, resume=read_checkpoint(tmp_path / "l.pt"), **kw)
    assert len(calls) == full - stop_at
    assert np.array_equal(resumed.eigenvalues, whole.eigenvalues)
    assert torch.equal(resumed.eigenvectors, whole.eigenvectors)
    assert np.array_equal(resumed.residuals, whole.residuals)
    assert (resumed.n_products, resumed.converged) == (whole.n_products, whole.converged)


def test_slq_probe_resumed_past_the_first_block_of_the_basis_gives_the_same_nodes(tmp_path):
    """100 steps (the basis spans two blocks of 64 vectors), stopped after 70: the
    resumed probe draws nothing new and leaves the generator where the whole one does."""
    mv, _, _ = known_operator()
    whole_gen, cut_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = Hs.slq_probe(mv, 200, 100, whole_gen, dtype=torch.float64, device="cpu")

    class Stopped(Exception):
        pass

    def on_step(m, state, residual):
        if m == 70:
            save_checkpoint(state(), tmp_path / "p.pt")
            raise Stopped

    with pytest.raises(Stopped):
        Hs.slq_probe(mv, 200, 100, cut_gen, dtype=torch.float64, on_step=on_step, device="cpu")
    saved = read_checkpoint(tmp_path / "p.pt")
    assert [len(b) for b in saved["basis"]] == [64, 7]
    gen = torch.Generator().manual_seed(99)  # put back where the probe left it by the resumed state
    resumed = Hs.slq_probe(mv, 200, 100, gen, dtype=torch.float64, resume=saved, device="cpu")
    for a, b in zip(whole, resumed):
        assert np.array_equal(a, b)
    assert torch.equal(gen.get_state(), whole_gen.get_state())


def test_a_lanczos_state_of_another_problem_is_refused():
    mv, _, _ = known_operator()
    state = {}

    def on_step(m, s, residual):
        state.update(s())
        raise StopIteration

    with pytest.raises(StopIteration):
        Hs.lanczos(mv, 200, 3, dtype=torch.float64, on_step=on_step, tol=1e-3, max_iter=200, seed=0, device="cpu")
    with pytest.raises(CheckpointError, match="200 entries, not 100"):
        Hs.lanczos(lambda v: v, 100, 3, dtype=torch.float64, resume=state, tol=1e-3, max_iter=200, seed=0, device="cpu")
    with pytest.raises(CheckpointError, match="holds torch.float64 vectors, this run works in torch.float32"):
        Hs.lanczos(mv, 200, 3, dtype=torch.float32, resume=state, tol=1e-3, max_iter=200, seed=0, device="cpu")


def test_lanczos_finds_the_top_eigenpairs_of_a_known_matrix():
    mv, eig, mat = known_operator()
    res = Hs.lanczos(mv, 200, 10, tol=1e-8, max_iter=200, dtype=torch.float64, seed=0, device="cpu")
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, eig[:10], rtol=1e-8)
    for i in range(10):
        v = res.eigenvectors[:, i]
        assert torch.allclose(mat @ v, res.eigenvalues[i] * v, atol=1e-6 * eig[0])
    assert res.n_products < 120


def test_lanczos_needs_far_fewer_products_than_block_power_iteration():
    mv, eig, _ = known_operator()
    lz = Hs.lanczos(mv, 200, 10, tol=1e-3, dtype=torch.float64, max_iter=200, seed=0, device="cpu")
    bp = Hs.block_power_iteration(mv, 200, 10, tol=1e-3, max_iter=500, dtype=torch.float64, seed=0, device="cpu")
    np.testing.assert_allclose(lz.eigenvalues, eig[:10], rtol=1e-3)
    assert lz.n_products * 3 < bp.n_products


@pytest.mark.parametrize("stack_examples", [12, 24])  # each batch alone; both batches in one forward pass
@pytest.mark.parametrize("reuse_graph", [False, True])
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_hvp_and_lanczos_match_the_exact_hessian_of_a_small_network(small_setup, bn_mode, reuse_graph, stack_examples):
    model, x, y, batches = small_setup
    h = exact_hessian(model, x, y, bn_mode)
    op = Hs.HessianOperator(
        model,
        batches,
        bn_mode=bn_mode,
        dtype=torch.float64,
        reuse_graph=reuse_graph,
        device="cpu",
        loss=F.cross_entropy,
        stack_examples=stack_examples,
    )
    assert op.numel == h.shape[0]
    assert len(op.stacks) == (1 if bn_mode == "train" and stack_examples == 24 else 2)
    assert op.param_names == [n for n, _ in model.named_parameters()]
    v = torch.randn(op.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(op.matvec(2 * v), 2 * (h @ v), rtol=1e-9, atol=1e-10)  # a second product
    eig = np.sort(np.linalg.eigvalsh(h.numpy()))[::-1]
    res = Hs.lanczos(op.matvec, op.numel, 5, tol=1e-9, dtype=torch.float64, max_iter=200, seed=0, device="cpu")
    np.testing.assert_allclose(res.eigenvalues, eig[:5], rtol=1e-6)


@pytest.mark.parametrize("reuse_graph", [False, True])
def test_the_callers_model_is_never_mutated(small_setup, reuse_graph):
    model, x, y, batches = small_setup
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = Hs.HessianOperator(
        model,
        batches,
        bn_mode="train",
        dtype=torch.float64,
        reuse_graph=reuse_graph,
        device="cpu",
        loss=F.cross_entropy,
        stack_examples=24,  # the stacked BatchNorm replaces the copy's layers, never the caller's
    )
    for _ in range(3):
        op.matvec(torch.ones(op.numel, dtype=torch.float64))
    op.gradient()
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert isinstance(model.bn, torch.nn.BatchNorm2d)
    # and the private copy's running statistics stay frozen, so products repeat exactly
    a = op.matvec(torch.ones(op.numel, dtype=torch.float64))
    b = op.matvec(torch.ones(op.numel, dtype=torch.float64))
    assert torch.equal(a, b)


def test_hutchinson_and_slq_estimate_trace_and_moments(small_setup):
    model, x, y, batches = small_setup
    h = exact_hessian(model, x, y, "eval").numpy()
    op = eval_operator(model, batches)
    n = op.numel
    mean, err = Hs.hutchinson_trace(op.matvec, n, n_samples=64, seed=3, dtype=torch.float64, device="cpu")
    assert abs(mean - np.trace(h)) < 4 * err
    dens = Hs.slq(op.matvec, n, n_vectors=16, iterations=30, seed=4, dtype=torch.float64, device="cpu")
    assert dens.moment(0) == pytest.approx(1.0)
    assert dens.moment(1) == pytest.approx(np.trace(h) / n, rel=0.15)
    assert dens.moment(2) == pytest.approx(np.trace(h @ h) / n, rel=0.25)
    grid = np.linspace(-5, 5, 4001)
    assert np.trapezoid(dens.density(grid, 0.05), grid) == pytest.approx(1.0, abs=1e-3)


def test_the_lanczos_run_is_an_slq_probe_of_its_start_vector():
    """The leading block of the Lanczos run's tridiagonal is Gauss quadrature for
    its start vector ``q``: ``sum_j w_j theta_j^p = q^T H^p q`` exactly for
    ``p < 2 x iterations``, the same nodes and weights as a separate SLQ run of
    ``iterations`` steps from ``q``; ``min_iter`` makes the run long enough."""
    mv, _, mat = known_operator()
    q = torch.randn(200, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    q = q / q.norm()
    kw = {"tol": 1e-2, "max_iter": 200, "device": "cpu", "dtype": torch.float64, "seed": 0, "start": q}
    short = Hs.lanczos(mv, 200, 2, **kw)
    top = Hs.lanczos(mv, 200, 2, min_iter=short.n_products + 7, **kw)
    assert top.n_products == short.n_products + 7 and top.converged
    it = short.n_products + 3
    nodes, weights = Hs.quadrature(*top.tridiagonal, it)
    alone = Hs._lanczos_iteration(mv, q, it, "cpu", torch.float64)
    assert np.array_equal((nodes, weights), Hs.quadrature(alone.alphas, alone.betas, it))
    hp_q = q.clone()
    for p in range(2 * it):
        assert (weights * nodes**p).sum() == pytest.approx(float(q @ hp_q), rel=1e-9, abs=1e-12)
        hp_q = mat @ hp_q
    assert nodes.shape == (it,) and len(top.tridiagonal[0]) == it + 4  # the block, not the whole run


def test_quadrature_of_a_run_shorter_than_asked_is_zero_padded():
    alphas, betas = np.array([2.0, 1.0]), np.array([0.5])
    nodes, weights = Hs.quadrature(alphas, betas, 5)
    assert nodes.shape == weights.shape == (5,)
    assert np.array_equal(weights[2:], np.zeros(3)) and weights.sum() == pytest.approx(1.0)
    assert (weights * nodes).sum() == pytest.approx(2.0)  # q^T H q = alpha_1


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m, b: Hs.HessianOperator(
                m,
                b,
                bn_mode="frozen",
                reuse_graph=False,
                device="cpu",
                dtype=torch.float32,
                loss=F.cross_entropy,
                stack_examples=12,
            ),
            "bn_mode",
        ),
        (
            lambda m, b: Hs.HessianOperator(
                m,
                [],
                bn_mode="eval",
                reuse_graph=False,
                device="cpu",
                dtype=torch.float32,
                loss=F.cross_entropy,
                stack_examples=12,
            ),
            "no data",
        ),
        (
            lambda m, b: Hs.lanczos(
                lambda v: v, 10, 11, tol=1e-3, max_iter=200, seed=0, device="cpu", dtype=torch.float32
            ),
            "k must be",
        ),
        (
            lambda m, b: Hs.hutchinson_trace(lambda v: v, 10, n_samples=1, seed=0, device="cpu", dtype=torch.float32),
            "at least 2",
        ),
    ],
)
def test_bad_settings_raise_clear_errors(small_setup, call, message):
    model, _, _, batches = small_setup
    with pytest.raises(Hs.HessianError, match=message):
        call(model, batches)


@pytest.mark.parametrize(
    "sizes, stack_examples, stacks",
    [
        ([4, 4, 4, 3], 8, [[0, 1], [2], [3]]),  # at most 8 examples; a batch of another size starts its own stack
        ([4, 4, 4, 3], 100, [[0, 1, 2], [3]]),
        ([4, 4, 4], 2, [[0], [1], [2]]),  # smaller than one batch: every batch alone
        ([4, 3, 4], 100, [[0], [1], [2]]),  # only consecutive batches of one size share a pass
    ],
)
def test_stacks_group_consecutive_batches_of_one_size_up_to_the_bound(sizes, stack_examples, stacks):
    assert Hs._stacks(sizes, stack_examples) == stacks


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
    smooth = eval_operator(model, [(x, y)], loss=functools.partial(F.cross_entropy, label_smoothing=p))
    clean = eval_operator(model, [(x, y)])
    each = [eval_operator(model, [(x, torch.full_like(y, c))]) for c in range(4)]
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


def test_hessian_command_stopped_by_sigterm_mid_lanczos_resumes_to_the_same_file(
    digits, products, monkeypatch, tmp_path, one_thread, capsys
):
    """``limiting-dynamics hessian`` on the tiny config's Hessian settings, sent a
    real SIGTERM during its 4th product (in the Lanczos run): it finishes that
    product, writes the Lanczos state and exits with status 75; the same command
    again continues from there and writes the file an uninterrupted run writes,
    every variable and attribute bit for bit (but the time stamp and duration)."""
    import json
    import os
    import signal

    import xarray as xr
    from conftest import TINY

    from limiting_dynamics.cli import EXIT_INTERRUPTED, main
    from limiting_dynamics.data import datasets as data

    data.save_prepared(data.prepare(TINY["data"]), tmp_path / "digits.npz")
    torch.manual_seed(0)
    save_checkpoint({"model": build_model(MODEL, 10, 1).state_dict()}, tmp_path / "theta0.pt")
    cfg = {k: v for k, v in TINY["hessian"].items() if k not in ("enabled", "cells")}
    params = {
        "device": "cpu",
        "deterministic": True,
        "model": MODEL,
        "hessian": cfg,
        "cell": "c",
        "cell_batch_size": 32,
    }
    params.update(augment_shift=1, label_noise=0.1, sampling="replacement")

    def command(out: str, *extra: str) -> list[str]:
        return ["hessian", "--data", str(tmp_path / "digits.npz"), "--checkpoint", str(tmp_path / "theta0.pt")] + [
            "--params",
            json.dumps(params),
            "--out",
            str(tmp_path / out),
            *extra,
        ]

    assert main(command("ref.nc")) == 0
    full = len(products)
    resume = tmp_path / "hessian_resume.pt"
    matvec = Hs.HessianOperator.matvec

    def sigterm_in_the_fourth(self, v):
        if len(products) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return matvec(self, v)

    products.clear()
    with monkeypatch.context() as m:
        m.setattr(Hs.HessianOperator, "matvec", sigterm_in_the_fourth)
        assert main(command("h.nc", "--resume", str(resume))) == EXIT_INTERRUPTED
    assert len(products) == 4 and not (tmp_path / "h.nc").exists()
    err = capsys.readouterr().err
    assert "interrupted: stopped by SIGTERM after 4 Hessian-vector products (the Lanczos run); checkpoint" in err
    assert read_checkpoint(resume)["parts_done"] == "4 products of the Lanczos run"
    products.clear()
    assert main(command("h.nc", "--resume", str(resume))) == 0
    assert len(products) == full - 4 and not resume.exists()
    ref, cut = xr.load_dataset(tmp_path / "ref.nc"), xr.load_dataset(tmp_path / "h.nc")
    assert ref.attrs["lanczos_hvps"] > 4
    assert_same_result(ref, cut)


def test_track_eigenvectors_tells_an_eigenvector_from_a_random_direction(digits_problem):
    """The drift science as a notebook calls it: at the weights where it was computed a
    converged Lanczos eigenvector has a small relative residual and its Rayleigh quotient is
    its eigenvalue; a random unit direction has a residual of order one; the model is left as it was."""
    from limiting_dynamics.eigenvector_drift import track_eigenvectors

    model, batches = digits_problem
    cfg = {"bn_mode": "train", "precision": "float32", "reuse_graph": False, "batch_size": 64}
    op = Hs.operator_for(model, batches, cfg, 0.0, CPU)
    top = Hs.lanczos(op.matvec, op.numel, 1, tol=1e-4, max_iter=60, seed=0, device=CPU, dtype=torch.float32)
    random = torch.randn(op.numel, generator=torch.Generator().manual_seed(1))
    vectors = torch.stack([top.eigenvectors[:, 0].float(), random / random.norm()])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps, rq, res = track_eigenvectors(
        [(0, model), (5, model)], vectors, lambda m: Hs.operator_for(m, batches, cfg, 0.0, CPU)
    )
    assert steps == [0, 5] and rq.shape == res.shape == (2, 2)
    assert rq[0, 0] == pytest.approx(float(top.eigenvalues[0]), rel=1e-3)
    assert res[0, 0] < 0.02 and res[0, 1] > 0.5
    np.testing.assert_array_equal(rq[0], rq[1])  # the same weights: the same numbers
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
