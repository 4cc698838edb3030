"""Over how many directions the gradient noise of independent minibatches spreads, at a cell's
theta_0, inside and outside its top Hessian eigenvectors (run by hand on a finished run).

    python bench/noise_directions.py CELL [--results results] [--config config/config.yaml] [--batches 400]

Draws ``--batches`` minibatch gradients at ``results/runs/CELL/theta0.pt`` as the cell's noise
stage drew them (batch size, sampling, augmentation, label noise and BatchNorm mode read from
its output ``results/noise/CELL.nc``; the stage's seed + 1, so not its own draws; the model and
data set from the config the run used) and prints the participation ratio ``(tr C)^2 / tr(C^2)``
of their covariance, whole and with the top eigenvectors of ``results/hessian/CELL.nc``
projected out (the bulk). Both traces come from two disjoint halves of the draws,
``tr(S_A) tr(S_B) / tr(S_A S_B)``: each factor is an unbiased estimate, so the ratio is not capped
by the number of draws as a sample covariance's own ratio is. Beside it, the participation ratio
the lag-MSD theory gives the bulk's noise: its SLQ nodes with their multiplicities, each
direction with ``sigma^2 ~ lam^s`` (``s`` = 1 and 0 shown), the near-zero cluster left out.
"""

from __future__ import annotations

import argparse

import numpy as np


def participation_ratio(x: np.ndarray) -> float:
    """``tr(S_A) tr(S_B) / tr(S_A S_B)`` from two disjoint halves of the rows of ``x`` (draws x
    dimensions), each half centred on its own mean."""
    half = x.shape[0] // 2
    a, b = x[:half] - x[:half].mean(0), x[half : 2 * half] - x[half : 2 * half].mean(0)
    na, nb = a.shape[0] - 1, b.shape[0] - 1
    tr_a, tr_b = (a * a).sum() / na, (b * b).sum() / nb
    cross = ((a @ b.T) ** 2).sum() / (na * nb)
    return float(tr_a * tr_b / cross)


def theory_ratio(nodes: np.ndarray, weights: np.ndarray, n_params: int, s: float) -> float:
    """Participation ratio of noise ``lam^s`` spread over ``weights * n_params`` directions per
    node (nodes at or below zero left out)."""
    keep = nodes > 0
    m, sigma2 = weights[keep] * n_params, nodes[keep] ** s
    return float((m * sigma2).sum() ** 2 / (m * sigma2**2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cell", help="a cell id, e.g. lr0.0001_bs64_mom0.99_wd0.0005_seed0")
    ap.add_argument("--results", default="results", help="the run's results directory")
    ap.add_argument("--config", default="config/config.yaml", help="the config the run used (model, data set)")
    ap.add_argument("--batches", type=int, default=400)
    a = ap.parse_args()
    import torch
    import yaml

    from limiting_dynamics import noise
    from limiting_dynamics.data.drawing import BatchDrawing
    from limiting_dynamics.result_files import open_result
    from limiting_dynamics.stages.common import theta0

    torch.set_num_threads(1)
    cfg = yaml.safe_load(open(a.config))
    stage = open_result(f"{a.results}/noise/{a.cell}.nc", "noise").attrs  # the settings the noise stage used
    args = argparse.Namespace(
        data=f"{a.results}/data/{cfg['data']['name']}.npz", checkpoint=f"{a.results}/runs/{a.cell}/theta0.pt", threads=1
    )
    device, d, model = theta0(args, {"device": "cpu", "deterministic": True, "model": cfg["model"]})
    batches = d.train_batches(int(stage["batch_size"]), BatchDrawing.from_settings(stage), int(stage["seed"]) + 1)
    m, params = noise._gradient_copy(model, stage["bn_mode"])
    grads = np.stack([noise._flat_grad(m, params, *batches.next()).double().numpy() for _ in range(a.batches)])
    h = open_result(f"{a.results}/hessian/{a.cell}.nc", "hessian")
    u = h.hessian_eigenvectors.values.astype(np.float64)
    bulk = grads - (grads @ u.T) @ u
    nodes, weights = h.slq_nodes.values.ravel(), h.slq_weights.values.ravel() / h.slq_weights.sizes["probe"]
    n_params = int(h.attrs["n_params"])
    print(
        f"{a.cell}: {a.batches} minibatch gradients of S = {stage['batch_size']}; participation ratio of the noise: "
        f"all {participation_ratio(grads):.0f}, outside the top {u.shape[0]} eigenvectors "
        f"{participation_ratio(bulk):.0f}; the theory's bulk (SLQ, {n_params} parameters): "
        f"{theory_ratio(nodes, weights, n_params, 1.0):.0f} with sigma^2 ~ lam, "
        f"{theory_ratio(nodes, weights, n_params, 0.0):.0f} with every direction alike"
    )


if __name__ == "__main__":
    main()
