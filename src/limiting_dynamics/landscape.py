"""The loss on a plane through theta_0 spanned by two directions (Hessian eigenvectors).

The model is never modified: losses are evaluated with
``torch.func.functional_call`` on a private eval-mode copy, with parameters
``theta_0 + a u + b w`` for every grid point ``(a, b)``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


@torch.no_grad()
def loss_plane(
    model: nn.Module,
    u: torch.Tensor,
    w: torch.Tensor,
    alphas,
    betas,
    datasets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    batch_size: int = 1024,
) -> dict[str, np.ndarray]:
    """Mean cross-entropy (eval-mode BatchNorm) of each data set at
    ``theta_0 + a u + b w`` for ``a`` in ``alphas``, ``b`` in ``betas``.

    ``u`` and ``w`` are flat vectors over the trainable parameters in
    ``named_parameters()`` order. Returns ``{name: array (len(alphas), len(betas))}``.
    """
    net = copy.deepcopy(model).to(device).eval()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    base = [p.detach() for n, p in net.named_parameters() if p.requires_grad]
    sizes = [p.numel() for p in base]
    n = sum(sizes)
    if u.numel() != n or w.numel() != n:
        raise ValueError(f"directions have {u.numel()} and {w.numel()} entries, the model {n} parameters")
    us = [t.view_as(p) for t, p in zip(torch.split(u.to(device, base[0].dtype), sizes), base)]
    ws = [t.view_as(p) for t, p in zip(torch.split(w.to(device, base[0].dtype), sizes), base)]
    buffers = dict(net.named_buffers())
    out = {name: np.empty((len(alphas), len(betas))) for name in datasets}
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            params = {k: p0 + float(a) * du + float(b) * dw for k, p0, du, dw in zip(names, base, us, ws)}
            for name, (x, y) in datasets.items():
                total = 0.0
                for s in range(0, x.shape[0], batch_size):
                    logits = functional_call(net, (params, buffers), (x[s : s + batch_size],))
                    total += float(F.cross_entropy(logits, y[s : s + batch_size], reduction="sum"))
                out[name][i, j] = total / x.shape[0]
    return out


def grid_extent(projection: np.ndarray, factor: float, floor: float = 1e-3) -> float:
    """Half-width of the grid along one direction: ``factor`` times the largest
    excursion of the trajectory's projection (at least ``floor``)."""
    proj = np.asarray(projection, float)
    return float(max(factor * np.max(np.abs(proj)) if proj.size else 0.0, floor))
