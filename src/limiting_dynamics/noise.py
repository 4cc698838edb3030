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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from .errors import NoiseError



def _flat_grad(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads])


def minibatch_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, n_batches: int,
                    directions: torch.Tensor | None = None, bn_mode: str = "train", seed: int = 0,
                    sampling: str = "replacement", transform=None) -> dict:
    """Statistics of ``n_batches`` independent minibatch gradients of size ``batch_size``.

    ``directions``: ``(k, n_params)`` unit vectors. Returns ``trace_cov`` (unbiased
    estimate of ``tr Cov(g_S)``) with ``trace_cov_stderr``, ``mean_grad_sq_norm``,
    ``projection_var`` (k,) with ``projection_var_stderr`` and the per-batch
    ``projections`` (n_batches, k). ``transform``: applied to each batch's inputs
    (the training augmentation, so that the noise is the one SGD sees).
    """
    if n_batches < 4:
        raise NoiseError("need at least 4 minibatches for a covariance and its error")
    if batch_size > x.shape[0]:
        raise NoiseError(f"batch size {batch_size} exceeds the {x.shape[0]} training examples")
    if bn_mode not in ("train", "eval"):
        raise NoiseError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    m = copy.deepcopy(model)
    m.train(bn_mode == "train")
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = 0.0  # batch statistics without touching the running ones
    params = [p for p in m.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    mean = None
    m2 = 0.0
    sq_dev = []  # ||g_b - running mean||^2 terms (for a rough error of the trace)
    grads_norm = []
    proj = []
    perm, pos = None, 0
    for b in range(n_batches):
        if sampling == "replacement":
            idx = torch.randint(n, (batch_size,), generator=gen)
        else:
            if perm is None or pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx, pos = perm[pos:pos + batch_size], pos + batch_size
        idx = idx.to(x.device)
        xb = x[idx] if transform is None else transform(x[idx])
        g = _flat_grad(m, params, xb, y[idx]).double()
        if mean is None:
            mean = torch.zeros_like(g)
        delta = g - mean
        mean += delta / (b + 1)
        inc = float(torch.dot(delta, g - mean))
        m2 += inc
        sq_dev.append(inc * (b + 1) / max(b, 1) if b > 0 else 0.0)
        grads_norm.append(float(torch.dot(g, g)))
        if directions is not None:
            proj.append((directions.to(g.device, torch.float64) @ g).cpu().numpy())
    trace = m2 / (n_batches - 1)
    dev = np.asarray(sq_dev[1:])
    out = {"trace_cov": trace, "trace_cov_stderr": float(dev.std(ddof=1) / math.sqrt(len(dev))),
           "mean_grad_sq_norm": float(mean.dot(mean)), "n_batches": n_batches, "batch_size": batch_size,
           "bn_mode": bn_mode, "sampling": sampling}
    if directions is not None:
        p = np.asarray(proj)
        var = p.var(axis=0, ddof=1)
        centred = (p - p.mean(axis=0)) ** 2
        out.update(projections=p, projection_var=var,
                   projection_var_stderr=centred.std(axis=0, ddof=1) / math.sqrt(n_batches))
    return out


PER_SAMPLE_METHODS = ("auto", "vmap", "loop")
AUTO_VMAP_MARGIN = 1.1  # "auto" takes vmap only if it is at least this much faster than the loop
AUTO_CLEAR_RATIO = 1.5  # "auto" stops its calibration after one piece of each when one is this much faster
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
        out = self._buf[:x.shape[0]]
        with torch.enable_grad():
            for i in range(x.shape[0]):
                t0 = time.perf_counter() if times is not None else 0.0
                loss = F.cross_entropy(self.model(x[i:i + 1]), y[i:i + 1])
                grads = torch.autograd.grad(loss, self.param_list)
                torch.cat([gr.reshape(-1) for gr in grads], out=out[i])
                if times is not None:
                    _sync(out.device)
                    times.append(time.perf_counter() - t0)
        return out


def per_sample_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor | None = None,
                     chunk: int = 64, method: str = "auto") -> dict:
    """Per-sample gradient statistics over all of ``x`` in eval mode.

    Returns ``trace_c`` (``tr C`` with 1/N), ``mean_grad`` norm squared and, for
    ``directions``, ``projection_var`` = ``u^T C u`` per direction.

    ``method``: how the per-sample gradients are computed, with the same result:
    ``"vmap"`` (``torch.func``, ``chunk`` samples per call: fast on small models),
    ``"loop"`` (ordinary autograd one sample at a time: as fast or faster on large
    convolutional models on a CPU, where the batched per-sample convolutions are
    slow) or ``"auto"``, which times both on the first samples (after one
    sample of vmap as its warm-up, one piece of each, of ``chunk`` samples or
    ``n/16`` if less, and a second one of each unless one was
    ``AUTO_CLEAR_RATIO`` times faster;
    every sample counted once in the statistics) and uses the faster for the
    rest (vmap only if at least ``AUTO_VMAP_MARGIN`` times faster than the
    loop; at the chunk it was timed at). Fewer than 32 samples: vmap, untimed.
    The result says which: ``method``, with the calibration's
    ``calibration_vmap_samples_per_s`` and ``calibration_loop_samples_per_s``
    (``None`` without a calibration), and ``chunk`` as used (after the cap of
    ~0.8 GB of gradients at once and, for "auto", the calibration's).
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
                b = flat[:, j:j + w]
            else:
                b = buf64[:rows, :w]
                b.copy_(flat[:, j:j + w])
            total[j:j + w] += b.sum(0)
            sq_total.add_(torch.linalg.vecdot(b, b).sum())
            if p is not None:  # while the block is in cache; the blocks' parts added in float64
                p += flat[:, j:j + w] @ dirs_t[j:j + w]
        if p is not None:
            proj.append(p.cpu().numpy())

    pos = 0
    rates = {"vmap": None, "loop": None}
    chosen = method
    if method == "auto":
        # Calibration on the first samples, every one of them counted once in the
        # statistics: one sample of vmap (its warm-up), then pieces of c samples
        # (a chunk, or n/16 if less, so that it stays a small part of the work):
        # loop, vmap, and where neither was AUTO_CLEAR_RATIO times faster, loop,
        # vmap again. The loop's first sample is its warm-up. Each method's rate
        # is the better of its pieces, so that a stall of a busy machine does not
        # decide. The statistics are left out of the timings (the same for both).
        c = min(chunk, n // 16)
        if c < 2:
            chosen = "vmap"  # too few samples for a timing to matter; the two give the same numbers
        else:
            device = psg.param_list[0].device
            accumulate(psg.vmap(x[:1], y[:1]))
            pos = 1
            rates = {"vmap": 0.0, "loop": 0.0}
            for first in (True, False):
                times = []
                accumulate(psg.loop(x[pos:pos + c], y[pos:pos + c], times=times))
                pos += c
                times = times[1:] if first else times
                rates["loop"] = max(rates["loop"], len(times) / max(sum(times), 1e-12))
                _sync(device)
                t0 = time.perf_counter()
                flat = psg.vmap(x[pos:pos + c], y[pos:pos + c])
                _sync(device)
                rates["vmap"] = max(rates["vmap"], c / max(time.perf_counter() - t0, 1e-12))
                accumulate(flat)
                del flat
                pos += c
                if max(rates["vmap"] / rates["loop"], rates["loop"] / rates["vmap"]) >= AUTO_CLEAR_RATIO:
                    break
            # On a near tie the loop: it never holds more than one sample's activations.
            chosen = "vmap" if rates["vmap"] > AUTO_VMAP_MARGIN * rates["loop"] else "loop"
            if chosen == "vmap":
                chunk = c  # the chunk it was timed at (less than asked only for small n)
    compute = psg.vmap if chosen == "vmap" else psg.loop
    for s in range(pos, n, chunk):
        flat = compute(x[s:s + chunk], y[s:s + chunk])
        accumulate(flat)
        del flat
    mean = total / n
    out = {"trace_c": float(sq_total) / n - float(mean.dot(mean)), "mean_grad_sq_norm": float(mean.dot(mean)),
           "n_samples": n, "method": chosen, "chunk": chunk,
           "calibration_vmap_samples_per_s": rates["vmap"], "calibration_loop_samples_per_s": rates["loop"]}
    if directions is not None:
        p = np.concatenate(proj)
        out["projection_var"] = p.var(axis=0)
    return out


def scale_invariant_tensors(model: nn.Module) -> list[str]:
    """Names of the weights whose scale the loss ignores: convolution/linear
    weights whose module is followed directly by a BatchNorm (in registration
    order, which is the forward order in torchvision's ResNets)."""
    mods = list(model.named_modules())
    out = []
    for (name, m), (_, nxt) in zip(mods, mods[1:]):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(nxt, nn.modules.batchnorm._BatchNorm):
            out.append(f"{name}.weight" if name else "weight")
    return out


def predicted_sq_step(lr: float, momentum: float, weight_decay: float, trace_cov: float,
                      sq_norm_scale_invariant: float) -> dict:
    """Parameter-free prediction of the stationary ``||theta_{t+1} - theta_t||^2``:
    the noise term ``lr^2 tr Cov(g_S) / (1 - beta^2)`` plus the deterministic
    shrink of the scale-invariant weights ``lr^2 wd^2 ||theta_SI||^2 / (1 - beta)^2``."""
    noise_term = lr**2 * trace_cov / (1 - momentum**2)
    wd_term = lr**2 * weight_decay**2 * sq_norm_scale_invariant / (1 - momentum) ** 2
    return {"sq_step_predicted_noise": noise_term, "sq_step_predicted_weight_decay": wd_term,
            "sq_step_predicted": noise_term + wd_term}
