"""The loss on a plane through theta_0 spanned by two directions (Hessian eigenvectors).

The model is never modified: losses are evaluated with
``torch.func.functional_call`` on a private eval-mode copy, with parameters
``theta_0 + a u + b w`` for every grid point ``(a, b)``. The grid is computed
row by row, each point on its own, so finished rows (from a checkpoint) can be
kept and the rest computed to the same numbers, bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .progress import Progress


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
    done: dict[str, np.ndarray] | None = None,
    on_row: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress_every: float = 30.0,
) -> dict[str, np.ndarray]:
    """Mean cross-entropy (eval-mode BatchNorm) of each data set at
    ``theta_0 + a u + b w`` for ``a`` in ``alphas``, ``b`` in ``betas``.

    ``u`` and ``w`` are flat vectors over the trainable parameters in
    ``named_parameters()`` order. Returns ``{name: array (len(alphas), len(betas))}``.

    Rows (one ``a``, every ``b``) are computed in order. ``done``: the first
    ``r`` rows of every data set (``{name: array (r, len(betas))}``, e.g. from a
    checkpoint), taken as they are. ``on_row(r, rows)``: called after each row
    computed here with the ``r`` rows so far (views of the result). ``log``:
    progress lines (rows done, rate, time left) at the start, at most every
    ``progress_every`` seconds and at the end.
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
    first = 0
    if done:
        first = int(next(iter(done.values())).shape[0])
        shapes = {name: np.shape(done.get(name)) for name in datasets}
        if any(shape != (first, len(betas)) for shape in shapes.values()) or first > len(alphas):
            raise ValueError(f"finished rows {shapes} do not fit a {len(alphas)} x {len(betas)} grid")
        for name in datasets:
            out[name][:first] = done[name]
    progress = Progress("loss landscape", len(alphas), "rows", log, progress_every, first) if log else None
    for i in range(first, len(alphas)):
        a = alphas[i]
        for j, b in enumerate(betas):
            params = {k: p0 + float(a) * du + float(b) * dw for k, p0, du, dw in zip(names, base, us, ws)}
            for name, (x, y) in datasets.items():
                total = 0.0
                for s in range(0, x.shape[0], batch_size):
                    logits = functional_call(net, (params, buffers), (x[s : s + batch_size],))
                    total += float(F.cross_entropy(logits, y[s : s + batch_size], reduction="sum"))
                out[name][i, j] = total / x.shape[0]
        if progress is not None:
            progress.update(i + 1)
        if on_row is not None:
            on_row(i + 1, {name: out[name][: i + 1] for name in out})
    if progress is not None:
        progress.end(len(alphas))
    return out


def grid_extent(projection: np.ndarray, factor: float, floor: float = 1e-3) -> float:
    """Half-width of the grid along one direction: ``factor`` times the largest
    excursion of the trajectory's projection (at least ``floor``)."""
    proj = np.asarray(projection, float)
    return float(max(factor * np.max(np.abs(proj)) if proj.size else 0.0, floor))
