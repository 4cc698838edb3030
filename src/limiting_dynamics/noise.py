"""Gradient noise at theta_0: the covariance the dynamics actually feel.

:func:`minibatch_noise` draws many independent minibatches of the cell's size S
(in train mode by default: BatchNorm then normalises with each batch's
statistics, as during SGD) and streams their gradients: the running mean and
``sum ||g_b - mean||^2`` (Welford, memory O(parameters)) give ``tr Cov(g_S)``, and
the projections on given directions (e.g. Hessian eigenvectors) give the
variance of the minibatch gradient along each of them. Nothing of size
``batches x parameters`` is stored.

:func:`per_sample_noise` computes per-sample gradients with ``torch.func``
(``vmap`` of ``grad`` over ``functional_call``) in chunks, in eval mode (a
per-sample gradient through BatchNorm in train mode is not defined), and gives
the per-sample covariance trace ``tr C`` (normalised by 1/N) and its variance
along the same directions. With batches drawn with replacement and a loss that
is a plain mean over samples, ``Cov(g_S) = C / S``.

Both work on a private copy of the model.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


class NoiseError(ValueError):
    """Settings the noise estimators cannot work with."""


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


def per_sample_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor | None = None,
                     chunk: int = 64) -> dict:
    """Per-sample gradient statistics over all of ``x`` in eval mode, with ``torch.func``.

    Returns ``trace_c`` (``tr C`` with 1/N), ``mean_grad`` norm squared and, for
    ``directions``, ``projection_var`` = ``u^T C u`` per direction.
    """
    m = copy.deepcopy(model).eval()
    params = {k: v.detach() for k, v in m.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in m.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(m, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    n = x.shape[0]
    n_params = sum(v.numel() for v in params.values())
    chunk = max(1, min(int(chunk), int(2e8 // n_params)))  # at most ~0.8 GB of float32 gradients at once
    total = None
    sq_total = 0.0
    proj = []
    for s in range(0, n, chunk):
        g = per_sample(params, x[s:s + chunk], y[s:s + chunk])
        flat = torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], dim=1)
        del g
        part = flat.sum(0, dtype=torch.float64)
        total = part if total is None else total + part
        sq_total += float(torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64).pow(2).sum())
        if directions is not None:
            proj.append((flat @ directions.to(flat.device, flat.dtype).T).double().cpu().numpy())
    mean = total / n
    out = {"trace_c": sq_total / n - float(mean.dot(mean)), "mean_grad_sq_norm": float(mean.dot(mean)),
           "n_samples": n}
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
