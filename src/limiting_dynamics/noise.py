"""Gradient noise at theta_0: the covariance the dynamics actually feel.

:func:`minibatch_noise` draws many independent minibatches of the cell's size S
(in train mode by default: BatchNorm then normalises with each batch's
statistics, as during SGD) and streams their gradients: the running mean and
``sum ||g_b - mean||^2`` (Welford, memory O(parameters)) give ``tr Cov(g_S)``, and
the projections on given directions (e.g. Hessian eigenvectors) give the
variance of the minibatch gradient along each of them. Nothing of size
``batches x parameters`` is stored.

:func:`per_sample_noise` computes per-sample gradients with ``torch.func``
(``vmap`` of ``grad`` over ``functional_call``) in chunks or with a plain
autograd loop, whichever a short calibration finds faster on the model and
device at hand, in eval mode (a
per-sample gradient through BatchNorm in train mode is not defined), and gives
the per-sample covariance trace ``tr C`` (normalised by 1/N) and its variance
along the same directions. With batches drawn with replacement and a loss that
is a plain mean over samples, ``Cov(g_S) = C / S``.

Both work on a private copy of the model.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .errors import NoiseError

# units and long names of the gradient-noise file's variables (the stage applies them with table_columns.describe)
VARIABLES = {
    "mode": ("1", "Hessian eigen-mode at theta_0 (1 = largest eigenvalue)"),
    "hessian_eigenvalue": ("1", "Hessian eigenvalue of the mode at theta_0"),
    "noise_step": ("1", "step of the limiting run at which the noise was measured (0 = theta_0)"),
    "trace_cov_at_point": ("1", "tr Cov(g_S) of independent minibatch gradients at the point of the run"),
    "trace_cov_stderr_at_point": ("1", "standard error of trace_cov_at_point"),
    "mean_grad_sq_norm_at_point": ("1", "squared norm of the mean of the minibatch gradients at the point"),
    "minibatch_var_along_eigenvector": (
        "1",
        "variance of u_i^T g_S over independent minibatch gradients at the point (u_i: eigenvector at theta_0)",
    ),
    "minibatch_var_along_eigenvector_stderr": ("1", "standard error of minibatch_var_along_eigenvector"),
    "per_sample_var_along_eigenvector": ("1", "per-sample gradient variance u_i^T C u_i (eval mode)"),
}


def _flat_grad(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads])


def _gradient_copy(model: nn.Module, bn_mode: str) -> tuple[nn.Module, list[torch.Tensor]]:
    """A copy of ``model`` for minibatch gradients in ``bn_mode`` (BatchNorm's running
    statistics left untouched) and its trainable parameters; the caller's model is not changed."""
    m = copy.deepcopy(model)
    m.train(bn_mode == "train")
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = 0.0  # batch statistics without touching the running ones
    return m, [p for p in m.parameters() if p.requires_grad]


def minibatch_noise(
    model: nn.Module,
    batches,
    n_batches: int,
    directions: torch.Tensor | None = None,
    *,
    bn_mode: str,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Statistics of ``n_batches`` independent minibatch gradients.

    ``batches``: a batch source (``next() -> (x, y)``, see :mod:`.batches`),
    normally ``data.train_batches(S, drawing, seed)``: batches of the
    size and drawing (sampling, augmentation, label noise) the limiting runs use (random
    translations in memory, random-resized crops and flips when streamed), so
    that the noise is the one SGD sees; its seed should differ from the runs'.
    ``directions``: ``(k, n_params)`` unit vectors. Returns ``trace_cov``
    (unbiased estimate of ``tr Cov(g_S)``) with ``trace_cov_stderr``,
    ``mean_grad_sq_norm``, ``projection_var`` (k,) with
    ``projection_var_stderr`` and the per-batch ``projections`` (n_batches, k).
    ``on_batch(b)`` is called after the ``b``-th gradient (e.g. progress lines).
    """
    if n_batches < 4:
        raise NoiseError("need at least 4 minibatches for a covariance and its error")
    if bn_mode not in ("train", "eval"):
        raise NoiseError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    m, params = _gradient_copy(model, bn_mode)
    mean = None
    m2 = 0.0
    sq_dev = []  # ||g_b - running mean||^2 terms (for a rough error of the trace)
    proj = []
    batch_size = None
    for b in range(n_batches):
        xb, yb = batches.next()
        batch_size = int(yb.shape[0])
        g = _flat_grad(m, params, xb, yb).double()
        if mean is None:
            mean = torch.zeros_like(g)
        delta = g - mean
        mean += delta / (b + 1)
        inc = float(torch.dot(delta, g - mean))
        m2 += inc
        sq_dev.append(inc * (b + 1) / max(b, 1) if b > 0 else 0.0)
        if directions is not None:
            proj.append((directions.to(g.device, torch.float64) @ g).cpu().numpy())
        if on_batch is not None:
            on_batch(b + 1)
    trace = m2 / (n_batches - 1)
    dev = np.asarray(sq_dev[1:])
    out = {
        "trace_cov": trace,
        "trace_cov_stderr": float(dev.std(ddof=1) / math.sqrt(len(dev))),
        "mean_grad_sq_norm": float(mean.dot(mean)),
        "n_batches": n_batches,
        "batch_size": batch_size,
        "bn_mode": bn_mode,
    }
    if directions is not None:
        p = np.asarray(proj)
        var = p.var(axis=0, ddof=1)
        centred = (p - p.mean(axis=0)) ** 2
        out.update(
            projections=p, projection_var=var, projection_var_stderr=centred.std(axis=0, ddof=1) / math.sqrt(n_batches)
        )
    return out


def bulk_noise_curvature(
    model: nn.Module, batches, n_batches: int, directions: torch.Tensor, hvp, *, bn_mode: str
) -> dict:
    """How the minibatch noise outside the top eigenvectors meets the curvature.

    Draws ``n_batches`` independent minibatch gradients as :func:`minibatch_noise`
    does, removes their mean and their components along ``directions`` (the
    top Hessian eigenvectors, ``(k, n_params)`` orthonormal rows), and returns,
    unbiased over the draws, ``trace_cov_bulk`` (``tr Cov(g_S)`` outside the top
    modes) and ``trace_hcov_bulk`` (``tr(H Cov(g_S))`` there, one
    Hessian-vector product ``hvp`` per draw), with standard errors and their
    ratio ``noise_weighted_curvature_bulk``: the bulk's curvature averaged with
    the noise as weight. Directions of zero curvature add noise to the first
    but nothing to the second, so the ratio tells how much of the bulk's noise
    sits in the near-zero cluster (docs/theory.md). Memory: the ``n_batches``
    gradients are kept (float32)."""
    if n_batches < 4:
        raise NoiseError("need at least 4 minibatches for a covariance and its error")
    m, params = _gradient_copy(model, bn_mode)
    grads = torch.stack([_flat_grad(m, params, *batches.next()).float() for _ in range(n_batches)])
    dev = grads - grads.mean(dim=0, keepdim=True)
    u = directions.to(dev.device, dev.dtype)
    dev = dev - (dev @ u.T) @ u
    sq = (dev.double() ** 2).sum(dim=1).cpu().numpy()
    quad = np.asarray([float(torch.dot(d.double(), hvp(d).double())) for d in dev])
    scale = n_batches / (n_batches - 1)  # deviations from the sample mean
    trace_c, trace_hc = scale * sq.mean(), scale * quad.mean()
    return {
        "trace_cov_bulk": float(trace_c),
        "trace_cov_bulk_stderr": float(scale * sq.std(ddof=1) / math.sqrt(n_batches)),
        "trace_hcov_bulk": float(trace_hc),
        "trace_hcov_bulk_stderr": float(scale * quad.std(ddof=1) / math.sqrt(n_batches)),
        "noise_weighted_curvature_bulk": float(trace_hc / trace_c) if trace_c > 0 else float("nan"),
        "bulk_noise_batches": int(n_batches),
    }


PER_SAMPLE_METHODS = ("auto", "vmap", "loop")
AUTO_VMAP_MARGIN = 1.1  # "auto" takes vmap only if it is at least this much faster than the loop
AUTO_TRIAL_BUDGET = 0.01  # "auto" lets trying vmap cost at most this fraction of the loop's time for all samples
AUTO_LOOP_PIECE = 8  # samples of the loop timed first (the first one is its warm-up)
AUTO_FIRST_TRIAL = 10.0  # a first vmap sample is budgeted at this many loop samples
_STATS_BLOCK = 1 << 20  # elements of per-sample gradients converted to float64 at a time (8 MB: in cache)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PerSampleGradients:
    """Per-sample gradients of the cross-entropy, flattened to rows of one matrix.

    Two ways of computing the same thing on a model already in eval mode:
    ``vmap`` of ``grad`` over ``functional_call`` (one batched call per chunk) and
    a loop of ordinary autograd, one sample at a time, writing into a reused
    ``(chunk, n_params)`` buffer. Memory is that of one chunk of gradients either way.
    """

    def __init__(self, model: nn.Module, chunk: int):
        self.model = model
        named = [(k, v) for k, v in model.named_parameters() if v.requires_grad]
        self.param_list = [v for _, v in named]
        self.params = {k: v.detach() for k, v in named}
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}
        self.n_params = sum(v.numel() for v in self.param_list)
        self.chunk = chunk
        self._buf = None

        def loss_one(p, xi, yi):
            out = functional_call(model, (p, self.buffers), (xi.unsqueeze(0),))
            return F.cross_entropy(out, yi.unsqueeze(0))

        self._vmapped = vmap(grad(loss_one), in_dims=(None, 0, 0))

    def vmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = self._vmapped(self.params, x, y)
        return torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], dim=1)

    def loop(self, x: torch.Tensor, y: torch.Tensor, times: list | None = None) -> torch.Tensor:
        """Rows of a reused buffer (valid until the next call). ``times``: gets the
        wall time of each sample (synchronised), for the calibration."""
        ref = self.param_list[0]
        if self._buf is None:
            # zeros, not empty: its pages touched now rather than inside a timed piece
            self._buf = torch.zeros(self.chunk, self.n_params, dtype=ref.dtype, device=ref.device)
        out = self._buf[: x.shape[0]]
        with torch.enable_grad():
            for i in range(x.shape[0]):
                t0 = time.perf_counter() if times is not None else 0.0
                loss = F.cross_entropy(self.model(x[i : i + 1]), y[i : i + 1])
                grads = torch.autograd.grad(loss, self.param_list)
                torch.cat([gr.reshape(-1) for gr in grads], out=out[i])
                if times is not None:
                    _sync(out.device)
                    times.append(time.perf_counter() - t0)
        return out


def _calibrate(psg: _PerSampleGradients, x: torch.Tensor, y: torch.Tensor, chunk: int, accumulate):
    """Choose between the loop and vmap on the first samples of ``x``, every
    one of them computed once and passed to ``accumulate`` (nothing is thrown
    away). Returns ``(method, chunk, samples done, calibration)``.

    The loop runs first on ``AUTO_LOOP_PIECE`` samples; the median of its
    per-sample times (the first, its warm-up, left out) predicts the loop's
    time ``T`` for all ``n`` samples. vmap is then tried on pieces of 1, 2, 4,
    ... samples up to ``chunk``, each only if its predicted cost beyond the
    loop's for as many samples still fits in a budget of
    ``AUTO_TRIAL_BUDGET * T``, counting what the pieces before it cost beyond
    the loop's time. A piece is predicted at twice the per-sample time of the
    one before (a new size allocates anew), the first sample at
    ``AUTO_FIRST_TRIAL`` loop samples. Trying stops when the budget would be
    exceeded, at ``chunk``, or when vmap is slower than the loop and its
    per-sample time no longer falls by a fifth per doubling. vmap is chosen at
    the chunk of its fastest piece of two or more samples if that was at least
    ``AUTO_VMAP_MARGIN`` times the loop's rate, otherwise the loop. So on a
    small job (under ``(AUTO_FIRST_TRIAL - 1) / AUTO_TRIAL_BUDGET`` = 900
    samples) "auto" is the loop itself, and otherwise trying vmap costs at
    most the budget plus what the last piece took beyond its prediction.
    """
    n = x.shape[0]
    device = psg.param_list[0].device
    k = min(n, AUTO_LOOP_PIECE)
    times: list[float] = []
    for s in range(0, k, chunk):  # the loop's buffer holds a chunk
        accumulate(psg.loop(x[s : min(k, s + chunk)], y[s : min(k, s + chunk)], times=times))
    t_loop = max(float(np.median(times[1:] if k > 1 else times)), 1e-9)
    budget, spent, pos = AUTO_TRIAL_BUDGET * n * t_loop, 0.0, k
    best_rate, best_chunk, previous = 0.0, chunk, None
    c = 1
    while pos + c <= n:
        predicted = c * (2.0 * previous if previous is not None else AUTO_FIRST_TRIAL * t_loop)
        if spent + max(0.0, predicted - c * t_loop) > budget:
            break
        _sync(device)
        t0 = time.perf_counter()
        flat = psg.vmap(x[pos : pos + c], y[pos : pos + c])
        _sync(device)
        dt = time.perf_counter() - t0
        accumulate(flat)
        del flat
        pos += c
        spent += max(0.0, dt - c * t_loop)
        per_sample = dt / c
        if c >= 2 and c / dt >= best_rate:  # on a tie the larger chunk
            best_rate, best_chunk = c / dt, c
        if c == chunk or (c >= 4 and per_sample > t_loop and per_sample > 0.8 * previous):
            break
        previous, c = per_sample, min(2 * c, chunk)
    method = "vmap" if best_rate > AUTO_VMAP_MARGIN / t_loop else "loop"
    calib = {"vmap": best_rate, "loop": 1.0 / t_loop, "trial_s": spent}
    return method, (best_chunk if method == "vmap" else chunk), pos, calib


def per_sample_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    directions: torch.Tensor | None = None,
    *,
    chunk: int,
    method: str = "auto",
) -> dict:
    """Per-sample gradient statistics over all of ``x`` in eval mode.

    Returns ``trace_c`` (``tr C`` with 1/N), ``mean_grad`` norm squared and, for
    ``directions``, ``projection_var`` = ``u^T C u`` per direction.

    ``method``: how the per-sample gradients are computed, with the same result:
    ``"vmap"`` (``torch.func``, ``chunk`` samples per call: fast on small models),
    ``"loop"`` (ordinary autograd one sample at a time: as fast or faster on large
    convolutional models on a CPU, where the batched per-sample convolutions are
    slow) or ``"auto"``, the faster of the two, never slower than the loop by
    more than ``AUTO_TRIAL_BUDGET`` of its time (see :func:`_calibrate`).
    The result says which: ``method``, with the calibration's
    ``calibration_vmap_samples_per_s`` (``0.0`` if vmap was not tried) and
    ``calibration_loop_samples_per_s`` (both ``None`` without a calibration),
    ``calibration_trial_s`` (what trying vmap cost beyond the loop's time for
    the same samples), and ``chunk`` as used (after the cap of ~0.8 GB of
    gradients at once and, for "auto", the calibration's).
    """
    if method not in PER_SAMPLE_METHODS:
        raise NoiseError(f"method must be one of {PER_SAMPLE_METHODS}, got {method!r}")
    m = copy.deepcopy(model).eval()
    n = x.shape[0]
    n_params = sum(v.numel() for v in m.parameters() if v.requires_grad)
    chunk = max(1, min(int(chunk), int(2e8 // n_params)))  # at most ~0.8 GB of float32 gradients at once
    psg = _PerSampleGradients(m, chunk)
    ref = psg.param_list[0]
    total = torch.zeros(n_params, dtype=torch.float64, device=ref.device)
    sq_total = torch.zeros((), dtype=torch.float64, device=ref.device)
    # Sums in float64 over blocks of columns converted into a small buffer: as
    # exact as converting the whole chunk, without its memory, and several times
    # faster than reductions with dtype=float64 (which dominated the time on
    # ResNet-18: 0.9 s of statistics for 0.23 s of gradients per 8 samples).
    block = min(n_params, max(4096, _STATS_BLOCK // chunk))
    buf64 = None if ref.dtype == torch.float64 else torch.empty(chunk, block, dtype=torch.float64, device=ref.device)
    dirs_t = None if directions is None else directions.to(ref.device, ref.dtype).T
    proj = []

    def accumulate(flat: torch.Tensor) -> None:
        rows = flat.shape[0]
        p = None if dirs_t is None else torch.zeros(rows, dirs_t.shape[1], dtype=torch.float64, device=ref.device)
        for j in range(0, n_params, block):
            w = min(block, n_params - j)
            if buf64 is None:
                b = flat[:, j : j + w]
            else:
                b = buf64[:rows, :w]
                b.copy_(flat[:, j : j + w])
            total[j : j + w] += b.sum(0)
            sq_total.add_(torch.linalg.vecdot(b, b).sum())
            if p is not None:  # while the block is in cache; the blocks' parts added in float64
                p += flat[:, j : j + w] @ dirs_t[j : j + w]
        if p is not None:
            proj.append(p.cpu().numpy())

    pos, chosen, calib = 0, method, {"vmap": None, "loop": None, "trial_s": None}
    if method == "auto":
        chosen, chunk, pos, calib = _calibrate(psg, x, y, chunk, accumulate)
    compute = psg.vmap if chosen == "vmap" else psg.loop
    for s in range(pos, n, chunk):
        flat = compute(x[s : s + chunk], y[s : s + chunk])
        accumulate(flat)
        del flat
    mean = total / n
    out = {
        "trace_c": float(sq_total) / n - float(mean.dot(mean)),
        "mean_grad_sq_norm": float(mean.dot(mean)),
        "n_samples": n,
        "method": chosen,
        "chunk": chunk,
        "calibration_vmap_samples_per_s": calib["vmap"],
        "calibration_loop_samples_per_s": calib["loop"],
        "calibration_trial_s": calib["trial_s"],
    }
    if directions is not None:
        p = np.concatenate(proj)
        out["projection_var"] = p.var(axis=0)
    return out
