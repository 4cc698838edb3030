"""Over how many directions the gradient noise of independent minibatches spreads, at a cell's
theta_0, inside and outside its top Hessian eigenvectors (run by hand on a finished run).

    python bench/noise_directions.py --data results/data/digits.npz \\
        --checkpoint results/runs/CELL/theta0.pt --hessian results/hessian/CELL.nc \\
        --params "$(python bench/noise_directions.py --params-of CELL)" --batches 400

``--params`` is the gradient-noise stage's JSON (the same batches: size, sampling, label noise,
BatchNorm mode); ``--params-of CELL`` prints it from ``config/config.yaml`` for a cell id of the
default run. Draws ``--batches`` minibatch gradients (the noise stage's seed + 1, so not the
stage's own draws) and prints the participation ratio ``(tr C)^2 / tr(C^2)`` of their covariance,
whole and with the top eigenvectors projected out (the bulk). Both traces come from two disjoint
halves of the draws, ``tr(S_A) tr(S_B) / tr(S_A S_B)``: each factor is an unbiased estimate, so the
ratio is not capped by the number of draws as a sample covariance's own ratio is. Beside it, the
participation ratio the lag-MSD theory gives the bulk's noise: its SLQ nodes with their
multiplicities, each direction with ``sigma^2 ~ lam^s`` (``s`` = 1 and 0 shown), the near-zero
cluster left out.
"""

from __future__ import annotations

import argparse
import json

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


def _params_of(cell: str) -> str:
    import yaml

    from limiting_dynamics.config import cells_by_id

    cfg = yaml.safe_load(open("config/config.yaml"))
    hp = cells_by_id(cfg)[cell]
    lim = cfg["limiting"]
    return json.dumps(
        {
            "augment_shift": lim["augment_shift"],
            "batch_size": hp.batch_size,
            "cell": cell,
            "deterministic": cfg["compute"]["deterministic"],
            "device": "cpu",
            "label_noise": lim["label_noise"],
            "model": cfg["model"],
            "noise": cfg["noise"],
            "sampling": lim["sampling"],
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params-of", help="print the noise stage's params of this cell id and stop")
    ap.add_argument("--data")
    ap.add_argument("--checkpoint")
    ap.add_argument("--hessian")
    ap.add_argument("--params")
    ap.add_argument("--batches", type=int, default=400)
    a = ap.parse_args()
    if a.params_of:
        print(_params_of(a.params_of))
        return
    import torch

    from limiting_dynamics import noise
    from limiting_dynamics.data.drawing import BatchDrawing
    from limiting_dynamics.result_files import open_result
    from limiting_dynamics.stages.common import theta0

    torch.set_num_threads(1)
    a.snapshots, a.threads = None, 1
    p = json.loads(a.params)
    device, d, model = theta0(a, p)
    batches = d.train_batches(int(p["batch_size"]), BatchDrawing.from_settings(p), int(p["noise"]["seed"]) + 1)
    m, params = noise._gradient_copy(model, p["noise"]["bn_mode"])
    grads = np.stack([noise._flat_grad(m, params, *batches.next()).double().numpy() for _ in range(a.batches)])
    h = open_result(a.hessian, "hessian")
    u = h.hessian_eigenvectors.values.astype(np.float64)
    bulk = grads - (grads @ u.T) @ u
    nodes, weights = h.slq_nodes.values.ravel(), h.slq_weights.values.ravel() / h.slq_weights.sizes["probe"]
    n_params = int(h.attrs["n_params"])
    print(
        f"{p['cell']}: {a.batches} minibatch gradients of S = {p['batch_size']}; participation ratio of the noise: "
        f"all {participation_ratio(grads):.0f}, outside the top {u.shape[0]} eigenvectors "
        f"{participation_ratio(bulk):.0f}; the theory's bulk (SLQ, {n_params} parameters): "
        f"{theory_ratio(nodes, weights, n_params, 1.0):.0f} with sigma^2 ~ lam, "
        f"{theory_ratio(nodes, weights, n_params, 0.0):.0f} with every direction alike"
    )


if __name__ == "__main__":
    main()
