"""How long the Hessian eigenvectors of theta_0 stay eigenvectors along a run.

The per-mode theory projects the run on fixed directions, the top Hessian
eigenvectors ``u_i`` at theta_0. It can hold only while those stay
eigenvectors of the Hessian at the weights the run reaches: at each of a few
steps, :func:`track_eigenvectors` takes the Hessian there and reports the
Rayleigh quotient ``u_i^T H u_i`` (the curvature the mode feels) and the
relative residual ``||H u_i - (u_i^T H u_i) u_i|| / |u_i^T H u_i|`` (0 for an
eigenvector, about 1 once ``u_i`` is far from one). The weights come from any
iterator of ``(step, model)``: the workflow's stage loads the weights the
limiting run kept at its drift steps (``limiting_run(snapshot_steps=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from . import hessian


def track_eigenvectors(
    states: Iterable[tuple[int, torch.nn.Module]],
    vectors: torch.Tensor,
    operator: Callable[[torch.nn.Module], hessian.HessianOperator],
    log: Callable[[str], None] | None = None,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """For every ``(step, model)`` of ``states``: the Rayleigh quotients and
    relative residuals of the unit vectors ``vectors`` (rows) under the Hessian
    ``operator(model)`` at that model's weights (e.g. ``lambda m:
    hessian.operator_for(m, batches, cfg, label_noise, device)``: the loss over
    fixed batches). Returns the steps and two arrays of shape (steps, vectors).
    The model is not changed."""
    steps, rq, res = [], [], []
    for step, model in states:
        op = operator(model)
        r, e = hessian.rayleigh_and_residual(op.matvec, vectors)
        steps.append(int(step))
        rq.append(r)
        res.append(e)
        if log is not None:
            log(
                f"step {step}: Rayleigh quotient "
                + " ".join(f"{x:.3g}" for x in r)
                + "; relative residual "
                + " ".join(f"{x:.2f}" for x in e)
            )
    k = vectors.shape[0]
    return steps, np.asarray(rq).reshape(-1, k), np.asarray(res).reshape(-1, k)
