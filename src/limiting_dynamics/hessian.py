"""The Hessian of the training loss at theta_0: Hessian-vector products,
Lanczos with full reorthogonalisation for the top eigenpairs, stochastic Lanczos
quadrature (SLQ) for the spectral density, Hutchinson for the trace, and the
block power iteration the paper's code used (kept as a baseline).

Everything works on flat float vectors over the trainable parameters (in
``model.named_parameters()`` order). :class:`HessianOperator` works on its own
copy of the model: the caller's parameters, buffers (BatchNorm running
statistics) and train/eval flag are never touched. The BatchNorm mode, the data
(a fixed list of batches), the device and the precision are explicit, and every
random vector comes from an explicit seed.

The Lanczos loops can be stopped after any step and resumed from their state
(basis so far, tridiagonal, generator) to the same numbers bit for bit;
:func:`analyze` keeps that state in its checkpoints.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, HessianError
from .progress import Progress

BN_MODES = ("eval", "train")


class HessianOperator:
    """``v -> H v`` for the mean loss over fixed batches.

    ``bn_mode="eval"``: BatchNorm uses its running statistics (the loss is a
    plain function of the parameters). ``"train"``: BatchNorm normalises with the
    statistics of each batch, as during training (the running statistics of the
    private copy are frozen so that repeated products are identical). Both
    ``bn_mode`` and ``reuse_graph`` are required: the pipeline takes them from
    the config's ``hessian`` section, the one place they are set.

    ``reuse_graph=False``: every product rebuilds the graph (forward,
    ``create_graph`` gradient, backward of ``<g, v>``) batch by batch, so memory
    holds one batch's graph. ``True``: the ``create_graph`` gradient of every
    batch is built once, on the first product, and kept; each product is then
    only the backward of ``<g, v>`` (the same operations, so the same result, for
    about 0.7x the time per product in ``bench/hvp_cost.py``), but memory holds
    the double-backward graph of all batches at once.

    ``stack_examples`` (train mode): consecutive batches of one size are run as
    one forward pass of at most this many examples (at least one batch), with
    BatchNorm normalising each batch on its own statistics
    (:class:`_StackedBatchNorm`): the same loss, in fewer and larger kernels
    (0.68x the time per product for four batches of 64 on a CPU core, 0.61x
    for sixteen: ``bench/stacked_batch_norm.py``). Products agree with unstacked ones to float
    rounding; one batch per stack runs the module exactly as before. Eval mode
    ignores it (its chunks are already ``batch_size`` examples).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        *,
        bn_mode: str,
        reuse_graph: bool,
        device: torch.device | str,
        dtype: torch.dtype,
        loss: Callable,
        stack_examples: int,
    ):
        if bn_mode not in BN_MODES:
            raise HessianError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if not batches:
            raise HessianError("no data: give at least one batch")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = copy.deepcopy(model).to(device=self.device, dtype=dtype)
        self.model.train(bn_mode == "train")
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0  # train mode: use batch statistics, never update the running ones
        self.bn_mode = bn_mode
        self.param_names = [name for name, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.numel = sum(p.numel() for p in self.params)
        if isinstance(batches, FixedBatches):  # cut on access: the data stay in memory once
            self.batches = batches.to(self.device, dtype)
            self.n_samples = sum(len(i) for i in batches.index)
        else:
            self.batches = [
                (x.to(self.device, dtype if x.is_floating_point() else x.dtype), y.to(self.device)) for x, y in batches
            ]
            self.n_samples = sum(int(y.shape[0]) for _, y in self.batches)
        self.loss = loss
        self.n_products = 0
        self.reuse_graph = bool(reuse_graph)
        self._grads: list[tuple[torch.Tensor, ...]] | None = None  # kept create_graph gradients (reuse_graph)
        sizes = (
            [int(y.shape[0]) for _, y in self.batches]
            if not isinstance(self.batches, FixedBatches)
            else [len(i) for i in self.batches.index]
        )
        self.stacks = _stacks(sizes, int(stack_examples) if bn_mode == "train" else 1)
        self._stacked_bn = _stack_batch_norms(self.model) if any(len(s) > 1 for s in self.stacks) else []

    def _forward_batches(self):
        """``(x, y)`` of each stack of batches, with every :class:`_StackedBatchNorm`
        set to normalise per batch of the stack."""
        for stack in self.stacks:
            parts = [self.batches[i] for i in stack]
            group = int(parts[0][1].shape[0])
            for m in self._stacked_bn:
                m.group = group
            if len(parts) == 1:
                yield parts[0]
            else:
                yield torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], 0
        for p in self.params:
            out.append(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        return out

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def gradient(self) -> torch.Tensor:
        """Gradient of the mean loss over the batches (flat)."""
        total = torch.zeros(self.numel, device=self.device, dtype=self.dtype)
        for x, y in self._forward_batches():
            loss = self.loss(self.model(x), y) * (x.shape[0] / self.n_samples)
            grads = torch.autograd.grad(loss, self.params)
            total += torch.cat([g.reshape(-1) for g in grads])
        return total

    def loss_value(self) -> float:
        with torch.no_grad():
            return float(
                sum(self.loss(self.model(x), y) * (x.shape[0] / self.n_samples) for x, y in self._forward_batches())
            )

    def _graph_gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = self.loss(self.model(x), y) * (x.shape[0] / self.n_samples)
        return torch.autograd.grad(loss, self.params, create_graph=True)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` by double backward, stack by stack (memory: one stack's graph,
        or all of them with ``reuse_graph``)."""
        v = v.to(self.device, self.dtype)
        vs = self._split(v)
        total = torch.zeros(self.numel, device=self.device, dtype=self.dtype)
        if self.reuse_graph:
            if self._grads is None:
                self._grads = [self._graph_gradient(x, y) for x, y in self._forward_batches()]
            gradients = iter(self._grads)
        else:
            gradients = (self._graph_gradient(x, y) for x, y in self._forward_batches())
        for grads in gradients:
            dot = sum((g * u).sum() for g, u in zip(grads, vs))
            hv = torch.autograd.grad(dot, self.params, retain_graph=self.reuse_graph)
            total += torch.cat([h.reshape(-1) for h in hv])
        self.n_products += 1
        return total


def _stacks(sizes: list[int], stack_examples: int) -> list[list[int]]:
    """Consecutive batch indices grouped into stacks of batches of one size,
    each of at most ``stack_examples`` examples (at least one batch)."""
    stacks: list[list[int]] = []
    for i, n in enumerate(sizes):
        last = stacks[-1] if stacks else None
        if last and sizes[last[0]] == n and (len(last) + 1) * n <= stack_examples:
            last.append(i)
        else:
            stacks.append([i])
    return stacks


class _StackedBatchNorm(nn.Module):
    """A train-mode BatchNorm layer (the wrapped ``bn``, whose parameters it
    uses) over a stack of batches of ``group`` examples each: every batch is
    normalised on its own statistics, as if it had been run alone. The stack
    ``(k * group, C, ...)`` is viewed as ``(group, k * C, ...)``, so one native
    batch-norm call normalises each (batch, channel) pair; running statistics
    are neither read nor updated (the operator's copy keeps them frozen)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.bn = bn
        self.group = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, rest = x.shape[0], x.shape[1], x.shape[2:]
        k = n // self.group
        if k == 1:
            return self.bn(x)
        z = x.reshape(k, self.group, c, *rest).transpose(0, 1).reshape(self.group, k * c, *rest)
        weight = self.bn.weight.repeat(k) if self.bn.weight is not None else None
        bias = self.bn.bias.repeat(k) if self.bn.bias is not None else None
        z = F.batch_norm(z, None, None, weight, bias, True, 0.0, self.bn.eps)
        return z.reshape(self.group, k, c, *rest).transpose(0, 1).reshape(n, c, *rest)


def _stack_batch_norms(model: nn.Module) -> list[_StackedBatchNorm]:
    """Replace every BatchNorm layer of ``model`` (in place: the operator's own
    copy) by a :class:`_StackedBatchNorm` around it; the parameters keep their
    order. Returns the new layers."""
    out = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                wrapped = _StackedBatchNorm(child)
                setattr(parent, name, wrapped)
                out.append(wrapped)
    return out


PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def operator_for(model, batches, cfg: dict, label_noise: float, device) -> HessianOperator:
    """The :class:`HessianOperator` of the config's ``hessian`` settings (``bn_mode``,
    ``precision``, ``reuse_graph``) for the expected loss under ``label_noise``
    (:func:`expected_loss`)."""
    return HessianOperator(
        model,
        batches,
        bn_mode=cfg["bn_mode"],
        device=device,
        dtype=PRECISIONS[cfg["precision"]],
        reuse_graph=bool(cfg["reuse_graph"]),
        loss=expected_loss(label_noise),
        stack_examples=int(cfg["batch_size"]),
    )


def expected_loss(label_noise: float) -> Callable:
    """The cross-entropy SGD descends on average when every drawn label is
    replaced by a uniformly random class with probability ``label_noise``:
    the cross-entropy with that label smoothing (plain for 0)."""
    return functools.partial(F.cross_entropy, label_smoothing=float(label_noise)) if label_noise else F.cross_entropy


def rayleigh_and_residual(
    matvec: Callable[[torch.Tensor], torch.Tensor], vectors: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """For each unit vector ``u`` (rows of ``vectors``): the Rayleigh quotient
    ``u^T H u`` and the relative residual ``||H u - (u^T H u) u|| / |u^T H u|``
    (0 for an eigenvector; about 1 once ``u`` is no longer close to one)."""
    rq, res = [], []
    for u in vectors:
        hu = matvec(u).to(u.device, u.dtype)
        r = float(torch.dot(u, hu))
        rq.append(r)
        res.append(float((hu - r * u).norm()) / max(abs(r), 1e-30))
    return np.asarray(rq), np.asarray(res)


def _random_unit(n: int, generator: torch.Generator, dtype, device, rademacher: bool = False) -> torch.Tensor:
    if rademacher:
        v = torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1
    else:
        v = torch.randn(n, generator=generator, dtype=torch.float64).to(dtype)
    v = v.to(device)
    return v / v.norm()


@dataclass
class LanczosResult:
    eigenvalues: np.ndarray  # descending
    eigenvectors: torch.Tensor | None  # (n, k) Ritz vectors, columns in the same order
    residuals: np.ndarray  # ||H y - theta y|| estimates, |beta_m s_m|
    n_products: int
    converged: bool
    # the tridiagonal T_m of the run (alphas, betas): its leading block is an SLQ probe
    # from the run's start vector (:func:`quadrature`); None for block power iteration
    tridiagonal: tuple[np.ndarray, np.ndarray] | None = None


class _Basis:
    """Orthonormal vectors kept as rows of blocks of ``block`` vectors, so that
    the basis grows without ever being copied (a ``torch.stack`` of the list per
    iteration held it twice: 28 instead of 14 GB for 300 vectors of ResNet-18)."""

    def __init__(self, n: int, device, dtype, block: int = 64):
        self.n, self.device, self.dtype, self.block = n, device, dtype, block
        self.blocks: list[torch.Tensor] = []
        self.count = 0

    def append(self, v: torch.Tensor) -> None:
        row = self.count % self.block
        if row == 0:
            self.blocks.append(torch.empty(self.block, self.n, device=self.device, dtype=self.dtype))
        self.blocks[-1][row].copy_(v)
        self.count += 1

    def _filled(self):
        for j, b in enumerate(self.blocks):
            yield b[: min(self.block, self.count - j * self.block)]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.blocks[i // self.block][i % self.block]

    def project_out(self, w: torch.Tensor) -> torch.Tensor:
        """``w - Q Q^T w`` (one classical Gram-Schmidt pass: every coefficient from the same ``w``)."""
        coefficients = [b @ w for b in self._filled()]
        for b, c in zip(self._filled(), coefficients):
            w = w - b.T @ c
        return w

    def combine(self, s: torch.Tensor) -> torch.Tensor:
        """``Q s`` for ``s`` of shape ``(m, k)``, block by block (memory: the ``n x k`` result)."""
        out = torch.zeros(self.n, s.shape[1], device=self.device, dtype=self.dtype)
        for j, b in enumerate(self._filled()):
            out += b.T @ s[j * self.block : j * self.block + b.shape[0]]
        return out

    def rows(self) -> list[torch.Tensor]:
        """The vectors so far, block by block, on the CPU (a copy only of a block on another device or
        of the last, partly filled one: a full CPU block is saved as it is)."""
        return [
            b if b.device.type == "cpu" and len(b) == self.block else b.to("cpu", copy=True) for b in self._filled()
        ]


@dataclass
class _Krylov:
    """What a run of :func:`_lanczos_iteration` leaves: the orthonormal basis
    ``q_1..q_m``, the tridiagonal ``T_m`` (``alphas``, ``betas``) and the norm
    ``beta`` of the last residual (``H Q_m = Q_m T_m + beta q_{m+1} e_m^T``)."""

    basis: _Basis
    alphas: np.ndarray  # (m,)
    betas: np.ndarray  # (m - 1,)
    beta: float
    breakdown: bool  # the Krylov space became invariant (beta ~ 0)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of ``T_m``."""
        return _ritz(self.alphas, self.betas)


def _ritz(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(alphas) > 1:
        return scipy.linalg.eigh_tridiagonal(alphas, betas)
    return np.asarray(alphas, dtype=float), np.ones((1, 1))


def quadrature(alphas: np.ndarray, betas: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature of the spectral measure of a Lanczos run's unit start
    vector ``q``: the Ritz values of the leading ``iterations x iterations``
    block of its tridiagonal (exactly what a run of ``iterations`` steps from
    ``q`` gives) and the squared first components of their eigenvectors, so that
    ``q^T f(H) q ~ sum_j w_j f(theta_j)``. Zero-padded to ``iterations`` when
    the run has fewer steps (breakdown: the Krylov space became invariant)."""
    m = min(len(alphas), int(iterations))
    theta, s = _ritz(np.asarray(alphas[:m]), np.asarray(betas[: m - 1]))
    pad = int(iterations) - m
    return np.pad(theta, (0, pad)), np.pad(s[0] ** 2, (0, pad))


def _krylov_state(basis: _Basis, alphas: list[float], betas: list[float]) -> dict:
    """What :func:`_lanczos_iteration` continues from after step ``m``: the ``m + 1``
    basis vectors (CPU blocks), ``alpha_1..alpha_m`` and ``beta_1..beta_m`` (float64)."""
    return {
        "basis": basis.rows(),
        "alphas": torch.tensor(alphas, dtype=torch.float64),
        "betas": torch.tensor(betas, dtype=torch.float64),
        "iterations": len(alphas),
    }


def _restore_basis(state: dict, device, dtype) -> tuple[_Basis, list[float], list[float]]:
    """The basis, alphas and betas of a :func:`_krylov_state`. Its vectors are moved
    into the new basis: ``state["basis"]`` is emptied block by block as they are
    copied (memory holds one saved block beside the basis, not a second basis)."""
    blocks = state["basis"]
    alphas = [float(a) for a in state["alphas"].tolist()]
    betas = [float(b) for b in state["betas"].tolist()]
    count = sum(int(b.shape[0]) for b in blocks)
    if any(b.dtype != dtype for b in blocks):
        raise CheckpointError(
            f"the saved Lanczos basis holds {blocks[0].dtype} vectors, this run works in {dtype}: "
            "it belongs to another problem"
        )
    if count != len(alphas) + 1 or len(betas) != len(alphas):
        raise CheckpointError(
            f"the saved Lanczos state is inconsistent ({count} basis vectors, {len(alphas)} alphas, {len(betas)} betas)"
        )
    basis = _Basis(int(blocks[0].shape[1]), device, dtype)
    while blocks:
        for v in blocks.pop(0):
            basis.append(v)
    return basis, alphas, betas


def _lanczos_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    q: torch.Tensor | None,
    max_iter: int,
    device,
    dtype,
    stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None,
    resume: dict | None = None,
    on_step: Callable[[int, Callable[[], dict]], None] | None = None,
) -> _Krylov:
    """The one Lanczos loop (used by :func:`lanczos` and :func:`slq`): at most
    ``max_iter`` products from the unit vector ``q``, each new vector fully
    reorthogonalised against the whole basis (two passes of classical
    Gram-Schmidt). After step ``m`` it stops when ``stop(alphas, betas, beta)``
    is true (``alphas``: ``m`` values, ``betas``: ``m - 1``, ``beta``: the norm
    of the new residual), on breakdown (``beta < 1e-10 max(1, |alpha_m|)``) or at
    ``max_iter``.

    ``on_step(m, state)``: called after every step ``m`` the loop goes on from,
    with a function returning its state then (:func:`_krylov_state`), which
    ``resume`` (with ``q`` ignored) continues from: the same operations on the
    same numbers, so the same result bit for bit, without the first ``m`` products.
    """
    if resume is None:
        basis, alphas, betas = _Basis(q.numel(), device, dtype), [], []
        basis.append(q)
    else:
        basis, alphas, betas = _restore_basis(resume, device, dtype)
        if len(alphas) >= max_iter:
            raise CheckpointError(f"the saved Lanczos state has {len(alphas)} steps, this run at most {max_iter}")
    beta, breakdown = 0.0, False
    for m in range(len(alphas) + 1, max_iter + 1):
        w = matvec(basis[m - 1]).to(device, dtype)
        alpha = float(torch.dot(w, basis[m - 1]))
        alphas.append(alpha)
        for _ in range(2):  # full reorthogonalisation
            w = basis.project_out(w)
        beta = float(w.norm())
        if stop is not None and stop(np.asarray(alphas), np.asarray(betas), beta):
            break
        if beta < 1e-10 * max(1.0, abs(alpha)):
            breakdown = True
            break
        if m == max_iter:
            break
        betas.append(beta)
        basis.append(w / beta)
        if on_step is not None:
            on_step(m, lambda: _krylov_state(basis, alphas, betas))
    return _Krylov(basis, np.asarray(alphas), np.asarray(betas), beta, breakdown)


def _top(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    return np.argsort(-theta if which == "LA" else -np.abs(theta))[:k]


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    k: int,
    *,
    tol: float,
    max_iter: int,
    seed: int,
    device: torch.device | str,
    dtype: torch.dtype,
    which: str = "LA",
    vectors: bool = True,
    min_iter: int = 0,
    start: torch.Tensor | None = None,
    resume: dict | None = None,
    on_step: Callable[[int, Callable[[], dict], float], None] | None = None,
) -> LanczosResult:
    """Top-``k`` eigenpairs of a symmetric operator by Lanczos with full
    reorthogonalisation (two passes of classical Gram-Schmidt per step).

    Stops when each of the ``k`` wanted Ritz values has residual
    ``|beta_m s_{m,i}| <= tol * |theta_i|``. ``which``: ``"LA"`` largest
    algebraic, ``"LM"`` largest magnitude. The basis is kept in ``dtype`` on
    ``device`` (``n * iterations`` numbers). ``min_iter``: take at least this
    many steps (unless ``max_iter`` or a breakdown ends the run first), so that
    the run's tridiagonal also serves as an SLQ probe of ``min_iter`` steps
    (:func:`quadrature`).

    ``on_step(m, state, residual)``: called after every step ``m`` but the last,
    with a function returning the state to continue from (basis so far,
    tridiagonal, the start vector's generator) and the largest relative residual
    ``|beta_m s_{m,i}| / |theta_i|`` of the wanted Ritz pairs (nan before ``k``
    steps). ``resume``: such a state; the result is then that of an
    uninterrupted run, bit for bit.
    """
    if k < 1 or k > n:
        raise HessianError(f"k must be in [1, {n}], got {k}")
    max_iter = min(max_iter, n)
    gen = torch.Generator().manual_seed(seed)
    if resume is not None:
        q = None
        gen.set_state(resume["rng"])
    else:
        q = start.to(device, dtype) / start.norm() if start is not None else _random_unit(n, gen, dtype, device)
    residual = [math.nan]

    def wanted_converged(alphas, betas, beta):
        if len(alphas) < k:
            return False
        theta, s = _ritz(alphas, betas)
        top = _top(theta, k, which)
        scale = np.maximum(np.abs(theta[top]), 1e-30)
        res = np.abs(beta * s[-1, top])
        residual[0] = float(np.max(res / scale))
        return len(alphas) >= min_iter and bool(np.all(res <= tol * scale))

    def step(m: int, state: Callable[[], dict]) -> None:
        on_step(m, lambda: {**state(), "rng": gen.get_state()}, residual[0])

    if resume is not None and int(resume["basis"][0].shape[1]) != n:
        raise CheckpointError(f"the saved Lanczos basis has vectors of {resume['basis'][0].shape[1]} entries, not {n}")
    kry = _lanczos_iteration(
        matvec,
        q,
        max_iter,
        device,
        dtype,
        stop=wanted_converged,
        resume=resume,
        on_step=step if on_step is not None else None,
    )
    theta, s = kry.ritz()
    top = _top(theta, k, which)
    res = np.abs(kry.beta * s[-1, top])
    m = len(kry.alphas)
    converged = m >= k and (kry.breakdown or bool(np.all(res <= tol * np.maximum(np.abs(theta[top]), 1e-30))))
    vecs = None
    if vectors:
        vecs = kry.basis.combine(torch.as_tensor(s[:, top], dtype=dtype, device=kry.basis.device))
    return LanczosResult(theta[top], vecs, res, m, converged, (kry.alphas, kry.betas))


def block_power_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    k: int,
    *,
    tol: float,
    max_iter: int,
    seed: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> LanczosResult:
    """Subspace iteration with QR (the paper's code): ``V <- qr(H V)`` until the
    Rayleigh-Ritz values change by less than ``tol`` (relative). Counts products."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, k, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    v, _ = torch.linalg.qr(v)
    prev = None
    products = 0
    for _ in range(max_iter):
        hv = torch.stack([matvec(v[:, j]) for j in range(k)], dim=1).to(device, dtype)
        products += k
        small = (v.T @ hv).double().cpu().numpy()
        vals = np.sort(np.linalg.eigvalsh(0.5 * (small + small.T)))[::-1]
        v, _ = torch.linalg.qr(hv)
        if prev is not None and np.all(np.abs(vals - prev) <= tol * np.abs(vals)):
            return LanczosResult(vals, v, np.full(k, np.nan), products, True)
        prev = vals
    return LanczosResult(prev, v, np.full(k, np.nan), products, False)


@dataclass
class SpectralDensity:
    nodes: np.ndarray  # (n_vectors, iterations) Ritz values
    weights: np.ndarray  # (n_vectors, iterations) squared first components

    def density(self, grid: np.ndarray, width: float) -> np.ndarray:
        """Gaussian-smoothed density on ``grid`` (integrates to 1 over the real line)."""
        g = np.asarray(grid)[:, None, None]
        kern = np.exp(-0.5 * ((g - self.nodes[None]) / width) ** 2) / (width * math.sqrt(2 * math.pi))
        return (kern * self.weights[None]).sum(axis=-1).mean(axis=-1)

    def moment(self, j: int) -> float:
        """Estimate of ``tr(H^j) / n``."""
        return float((self.weights * self.nodes**j).sum(axis=-1).mean())


def slq_probe(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    iterations: int,
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype,
    resume: dict | None = None,
    on_step: Callable[[int, Callable[[], dict], float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One probe of stochastic Lanczos quadrature: ``iterations`` Lanczos steps
    (full reorthogonalisation) from a Rademacher start drawn from ``generator``;
    nodes and weights, zero-padded to ``iterations`` on early breakdown.

    ``on_step`` and ``resume`` as for :func:`lanczos` (the state holds
    ``generator`` after the start was drawn; resuming sets it back there; the
    residual passed is nan)."""
    if resume is not None:
        start = None
        generator.set_state(resume["rng"])
        if int(resume["basis"][0].shape[1]) != n:
            raise CheckpointError(f"the saved SLQ basis has vectors of {resume['basis'][0].shape[1]} entries, not {n}")
    else:
        start = _random_unit(n, generator, dtype, device, rademacher=True)

    def step(m: int, state: Callable[[], dict]) -> None:
        on_step(m, lambda: {**state(), "rng": generator.get_state()}, math.nan)

    kry = _lanczos_iteration(matvec, start, iterations, device, dtype, resume=resume, on_step=step if on_step else None)
    return quadrature(kry.alphas, kry.betas, iterations)


def slq(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    n_vectors: int,
    iterations: int,
    seed: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature over ``n_vectors`` probes (:func:`slq_probe`)."""
    gen = torch.Generator().manual_seed(seed)
    probes = [slq_probe(matvec, n, iterations, gen, device, dtype) for _ in range(n_vectors)]
    return SpectralDensity(np.asarray([p[0] for p in probes]), np.asarray([p[1] for p in probes]))


def hutchinson_probe(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype,
) -> float:
    """``z^T H z`` for one Rademacher vector ``z`` drawn from ``generator``."""
    z = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(device=device, dtype=dtype)
    return float(torch.dot(z, matvec(z).to(device, dtype)))


def _mean_stderr(values) -> tuple[float, float]:
    vals = np.asarray(values, dtype=float)
    return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(len(vals)))


def _check_probes(n_samples: int) -> None:
    if n_samples < 2:
        raise HessianError("Hutchinson needs at least 2 probe vectors for an error estimate")


def hutchinson_trace(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    n_samples: int,
    seed: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[float, float]:
    """``tr H`` from Rademacher probes: mean and its standard error."""
    _check_probes(n_samples)
    gen = torch.Generator().manual_seed(seed)
    return _mean_stderr([hutchinson_probe(matvec, n, gen, device, dtype) for _ in range(n_samples)])


def loss_batching(cfg: dict, n_train: int, cell_batch_size: int | None = None) -> tuple[int, int]:
    """``(n_samples, chunk)`` of the loss whose Hessian is taken.

    ``n_samples`` ``"all"`` is the ``n_train`` training examples. Eval mode:
    ``cfg["batch_size"]`` only bounds memory. Train mode with a cell's batch
    size: BatchNorm normalises within each chunk, so the chunks are batches of
    the cell's ``S`` (the loss SGD descends) and ``n_samples`` is rounded down
    to a multiple of it (at least one batch).
    """
    chunk = int(cfg["batch_size"])
    n_samples = int(n_train) if cfg["n_samples"] == "all" else int(cfg["n_samples"])
    if cfg["bn_mode"] == "train" and cell_batch_size is not None:
        chunk = int(cell_batch_size)
        n_samples = max(chunk, n_samples // chunk * chunk)
    return n_samples, chunk


class FixedBatches(Sequence):
    """Fixed batches ``(x[i_b], y[i_b])`` cut from the data when accessed (and
    normalised, for :class:`.data.Images`, and moved to ``device``/``dtype``
    then), so memory holds the data once plus one batch however many batches
    there are: at paper scale (40,960 images of 224 x 224 x 3, 6.2 GB as
    uint8) a materialised list would hold 24.7 GB in float32. With ``shift``
    > 0, batch ``i`` is translated by :func:`.data.images.random_shift` with a
    generator seeded ``(seed, i)``: the same images every time it is cut."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        index: list[torch.Tensor],
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        shift: int = 0,
        fill: torch.Tensor | None = None,
        seed: int = 0,
    ):
        self.x, self.y, self.index = x, y, index
        self.device, self.dtype = device or x.device, dtype or x.dtype
        self.shift, self.fill, self.seed = int(shift), fill, int(seed)

    def to(self, device: torch.device, dtype: torch.dtype) -> FixedBatches:
        return FixedBatches(self.x, self.y, self.index, device, dtype, self.shift, self.fill, self.seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.index[i]
        x = self.x[idx]
        if self.shift:
            from .data.images import random_shift

            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            x = random_shift(x, self.shift, gen, self.fill.to(x.device, x.dtype))
        return x.to(self.device, self.dtype), self.y[idx].to(self.device)


def fixed_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    n_samples: int,
    batch_size: int,
    seed: int,
    draws: int = 1,
    shift: int = 0,
    fill: torch.Tensor | None = None,
) -> FixedBatches:
    """A seeded subset of ``n_samples`` training examples cut into fixed batches,
    ``draws`` times: the first draw in the subset's order, each further one a
    fresh permutation of it (new batch compositions, which change the loss in
    train-mode BatchNorm) and, with ``shift``, fresh translations of every
    image, so the loss averages over the distribution SGD samples."""
    if n_samples > x.shape[0]:
        raise HessianError(f"hessian.n_samples = {n_samples} exceeds the {x.shape[0]} training examples")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=gen)[:n_samples]
    index = []
    for d in range(int(draws)):
        order = idx if d == 0 else idx[torch.randperm(n_samples, generator=gen)]
        order = order.to(x.device)
        index += [order[s : s + batch_size] for s in range(0, n_samples, batch_size)]
    return FixedBatches(x, y, index, shift=shift, fill=fill, seed=seed)


@dataclass
class HessianAnalysis:
    """What :func:`analyze` measured at the model's parameters (the NetCDF layout
    of it is :func:`.result_files.hessian_dataset`)."""

    top: LanczosResult  # the top eigenpairs (Lanczos)
    density: SpectralDensity  # the spectral density's quadrature (SLQ)
    trace: float  # Hutchinson's estimate of tr H, and its standard error
    trace_stderr: float
    n_params: int
    n_samples: int  # examples per Hessian-vector product
    n_batches: int
    total_products: int  # Hessian-vector products, all parts together
    loss: float  # the loss and the gradient's norm at the parameters
    grad_norm: float
    tensor_names: list[str]  # the parameter tensors in the flattened order, and their sizes
    tensor_sizes: list[int]
    reuse_graph: bool
    batches_per_pass: int  # most batches stacked into one forward pass (train mode; 1 = none)

    @property
    def eigenvectors(self) -> np.ndarray:
        """The top eigenvectors as a ``(mode, parameter)`` float32 array."""
        return self.top.eigenvectors.detach().to("cpu", torch.float32).numpy().T


class _Parts:
    """The resumable parts of :func:`analyze` (the Lanczos run, each SLQ probe,
    the Hutchinson probes): the results so far (``state``), checkpointed when a
    part ends, on the schedule and on a signal."""

    def __init__(self, op: HessianOperator, checkpointer, log: Callable[[str], None], progress_every: float):
        self.op, self.checkpointer, self.log, self.progress_every = op, checkpointer, log, progress_every
        self.state = (checkpointer.resume() if checkpointer is not None else None) or {}
        # an unfinished Lanczos run or SLQ probe: its state, consumed when the loop continues from it
        self.lanczos_partial = self.state.pop("lanczos_partial", None)
        self.slq_partial = self.state.pop("slq_partial", None)
        if self.state:
            op.n_products = int(self.state["n_products"])
            log(f"resuming after {self.state['parts_done']} from {checkpointer.store.path}")

    def finished(self, part: str, schedule: bool = False) -> None:
        self.state.update(n_products=self.op.n_products, parts_done=part)
        if self.checkpointer is None:
            return
        save = self.checkpointer if schedule else self.checkpointer.save
        save(self.op.n_products, f"Hessian-vector products ({part})", lambda: self.state)

    def stepper(self, part: str, key: str, progress: Progress, note: Callable[[float], str], tag: dict | None = None):
        """``on_step`` of a Lanczos loop: a progress line when due, and a checkpoint
        holding the loop's state (under ``key``, with ``tag``) on the schedule or a signal."""

        def on_step(m: int, krylov_state: Callable[[], dict], residual: float) -> None:
            progress.update(m, note(residual))
            if self.checkpointer is not None:
                self.checkpointer(
                    self.op.n_products,
                    f"Hessian-vector products ({part})",
                    lambda: {
                        **self.state,
                        "n_products": self.op.n_products,
                        "parts_done": f"{m} products of {part}",
                        key: {**krylov_state(), **(tag or {})},
                    },
                )

        return on_step


def _top_pairs(op: HessianOperator, cfg: dict, parts: _Parts) -> LanczosResult:
    """The Lanczos part: the top eigenpairs, from the checkpoint when it holds them."""
    state, top_k, tol = parts.state, int(cfg["top_k"]), float(cfg["tol"])

    def residual_note(residual: float) -> str:
        if not math.isfinite(residual):
            return ""
        return f", largest relative residual of the top {top_k} Ritz pairs {residual:.2g} (tol {tol:g})"

    if "lanczos_eigenvalues" in state:
        if "lanczos_alphas" not in state:
            raise CheckpointError(
                "the Hessian checkpoint holds a Lanczos run without its tridiagonal (written by an older "
                "version, whose first SLQ probe was a separate run): delete it and rerun"
            )
        return LanczosResult(
            state["lanczos_eigenvalues"].numpy(),
            state["lanczos_eigenvectors"].to(op.device, op.dtype),
            state["lanczos_residuals"].numpy(),
            int(state["lanczos_products"]),
            bool(state["lanczos_converged"]),
            (state["lanczos_alphas"].numpy(), state["lanczos_betas"].numpy()),
        )
    max_iter = min(int(cfg["max_iter"]), op.numel)
    partial, parts.lanczos_partial = parts.lanczos_partial, None
    done = int(partial["iterations"]) if partial is not None else 0
    progress = Progress("Lanczos", max_iter, "products", parts.log, parts.progress_every, done=done, at_most=True)
    top = lanczos(
        op.matvec,
        op.numel,
        top_k,
        tol=tol,
        max_iter=max_iter,
        seed=int(cfg["seed"]),
        device=op.device,
        dtype=op.dtype,
        min_iter=int(cfg["slq_iterations"]),  # the run is also the first SLQ probe (_density)
        resume=partial,
        on_step=parts.stepper("the Lanczos run", "lanczos_partial", progress, residual_note),
    )
    progress.end(
        top.n_products, residual_note(float(np.max(top.residuals / np.maximum(np.abs(top.eigenvalues), 1e-30))))
    )
    state.update(
        lanczos_eigenvalues=torch.from_numpy(np.ascontiguousarray(top.eigenvalues)),
        lanczos_eigenvectors=top.eigenvectors.detach().cpu(),
        lanczos_residuals=torch.from_numpy(np.ascontiguousarray(top.residuals)),
        lanczos_products=top.n_products,
        lanczos_converged=bool(top.converged),
        lanczos_alphas=torch.from_numpy(np.ascontiguousarray(top.tridiagonal[0])),
        lanczos_betas=torch.from_numpy(np.ascontiguousarray(top.tridiagonal[1])),
    )
    parts.finished("the Lanczos run")
    return top


def _density(op: HessianOperator, cfg: dict, parts: _Parts, top: LanczosResult) -> SpectralDensity:
    """The SLQ part. Probe 1 is the Lanczos run itself: the quadrature of the
    first ``slq_iterations`` steps of its tridiagonal (its start vector is
    uniform on the sphere, as valid a probe as a Rademacher one, and
    independent of the others), so it costs no products. The others follow one
    after another, each resumable, from the generator seeded ``seed + 1``."""
    state = parts.state
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    if "slq_rng" in state:
        gen.set_state(state["slq_rng"])
    nodes, weights = list(state.get("slq_nodes", [])), list(state.get("slq_weights", []))
    iterations = int(cfg["slq_iterations"])
    if not nodes:
        theta, w = quadrature(*top.tridiagonal, iterations)
        nodes, weights = [torch.from_numpy(theta)], [torch.from_numpy(w)]
        state.update(slq_nodes=list(nodes), slq_weights=list(weights))
        parts.log(
            f"SLQ probe 1 of {cfg['slq_vectors']}: the first {min(iterations, len(top.tridiagonal[0]))} "
            "steps of the Lanczos run (no further products)"
        )
    for i in range(len(nodes), int(cfg["slq_vectors"])):
        part = f"SLQ probe {i + 1}"
        partial, parts.slq_partial = parts.slq_partial, None
        if partial is not None and int(partial["probe"]) != i + 1:
            raise CheckpointError(f"the checkpoint holds SLQ probe {partial['probe']} unfinished, not {i + 1}")
        done = int(partial["iterations"]) if partial is not None else 0
        progress = Progress(
            f"{part} of {cfg['slq_vectors']}", iterations, "products", parts.log, parts.progress_every, done
        )
        step = parts.stepper(part, "slq_partial", progress, lambda residual: "", {"probe": i + 1})
        before = op.n_products - done
        theta, w = slq_probe(op.matvec, op.numel, iterations, gen, op.device, op.dtype, resume=partial, on_step=step)
        progress.end(op.n_products - before)
        nodes.append(torch.from_numpy(theta))
        weights.append(torch.from_numpy(w))
        state.update(slq_nodes=list(nodes), slq_weights=list(weights), slq_rng=gen.get_state())
        parts.finished(part)
    return SpectralDensity(np.stack([t.numpy() for t in nodes]), np.stack([t.numpy() for t in weights]))


def _trace(op: HessianOperator, cfg: dict, parts: _Parts) -> tuple[float, float]:
    """The Hutchinson part: the probes so far kept, from the generator seeded ``seed + 2``."""
    state = parts.state
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + 2)
    if "hutchinson_rng" in state:
        gen.set_state(state["hutchinson_rng"])
    values = list(state.get("hutchinson_values", []))
    for j in range(len(values), int(cfg["hutchinson_samples"])):
        values.append(hutchinson_probe(op.matvec, op.numel, gen, op.device, op.dtype))
        state.update(hutchinson_values=list(values), hutchinson_rng=gen.get_state())
        if j + 1 < int(cfg["hutchinson_samples"]):
            parts.finished("Hutchinson probes", schedule=True)
    return _mean_stderr(values)


def analyze(
    model: nn.Module,
    batches,
    cfg: dict,
    device: torch.device,
    *,
    label_smoothing: float,
    log=print,
    checkpointer=None,
    progress_every: float = 30.0,
) -> HessianAnalysis:
    """Top eigenpairs (Lanczos), spectral density (SLQ) and trace (Hutchinson) of
    the training-loss Hessian at the model's parameters. The Lanczos run takes at
    least ``slq_iterations`` steps and is the first SLQ probe (:func:`_density`),
    so the density costs ``(slq_vectors - 1) x slq_iterations`` further products.

    ``cfg``: ``bn_mode``, ``precision`` (float32/float64), ``top_k``, ``tol``,
    ``max_iter``, ``slq_vectors``, ``slq_iterations``, ``hutchinson_samples``,
    ``reuse_graph`` (see :class:`HessianOperator`), ``seed``.
    ``label_smoothing``: the loss is the cross-entropy with this label
    smoothing, the expected loss under the runs' label noise (:mod:`.batches`).

    ``checkpointer`` (a :class:`.checkpoints.Checkpointer`): the work is done
    in parts (the Lanczos run, each SLQ probe, the Hutchinson probes). A
    checkpoint holds the results so far and the generators' states, and, in
    the middle of a Lanczos run or SLQ probe, its state (basis vectors so far,
    tridiagonal, the start vector's generator); it is written after each of the
    first two kinds of part, every ``checkpointer.every`` Hessian-vector
    products (counted over the whole job) and, on a signal, as soon as the
    product under way is done (the signal is polled after every product).
    A rerun continues from the checkpoint with the same numbers, bit for bit,
    without redoing the products before it.

    ``progress_every``: seconds between progress lines of the Lanczos run and
    of each SLQ probe (``log``; also one at the start and one at the end).
    """
    _check_probes(int(cfg["hutchinson_samples"]))  # before any work
    op = operator_for(model, batches, cfg, label_smoothing, device)
    grad = op.gradient()
    parts = _Parts(op, checkpointer, log, progress_every)
    top = _top_pairs(op, cfg, parts)
    log(
        f"Lanczos: top {cfg['top_k']} eigenvalues in {top.n_products} Hessian-vector products "
        f"(converged: {top.converged}): " + " ".join(f"{v:.4g}" for v in top.eigenvalues)
    )
    density = _density(op, cfg, parts, top)
    trace, trace_err = _trace(op, cfg, parts)
    log(f"trace {trace:.4g} +- {trace_err:.2g} (Hutchinson), {density.moment(1) * op.numel:.4g} (SLQ)")
    return HessianAnalysis(
        top=top,
        density=density,
        trace=trace,
        trace_stderr=trace_err,
        n_params=op.numel,
        n_samples=op.n_samples,
        n_batches=len(batches),
        total_products=op.n_products,
        loss=op.loss_value(),
        grad_norm=float(grad.norm()),
        tensor_names=op.param_names,
        tensor_sizes=[p.numel() for p in op.params],
        reuse_graph=bool(op.reuse_graph),
        batches_per_pass=max(len(stack) for stack in op.stacks),
    )
