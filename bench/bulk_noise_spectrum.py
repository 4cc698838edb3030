"""The gradient noise along many Hessian eigenvectors of a cell's theta_0, not only the top ten:
does ``sigma^2 / lam`` stay what the top modes show as the curvature falls? (run by hand)

    python bench/bulk_noise_spectrum.py CELL [--results results] [--config config/config.yaml] [--k 60] [--batches 400]
        [--out bench/bulk_noise_spectrum.json]

Takes the top ``--k`` eigenpairs of the Hessian the cell's Hessian stage takes (its loss, batches
and BatchNorm mode; Lanczos with full reorthogonalisation, relative residual ``--tol``), draws
``--batches`` minibatch gradients at theta_0 as the cell's noise stage drew them (settings read
from ``results/noise/CELL.nc``, its seed + 1) and prints, per band of eigenvectors, the curvature,
the noise variance ``sigma^2 = Var(u^T g_S)`` and ``sigma^2 / lam`` relative to the top 10. Each
mode's stationary variance, and so its share of the long-lag distance from theta_0, goes as
``sigma^2 / lam``: where the ratio grows down the spectrum, flatter directions carry more of the
distance than a noise with ``C ~ H`` gives them. The slope of ``log sigma^2`` against ``log lam``
over all ``k`` modes goes to ``--out`` (a JSON object, one entry per cell), which
``bench/exact_check_inputs.py --slopes`` reads (docs/measurements.md, "Where the exact check's
spread between seeds comes from").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cell", help="a cell id, e.g. lr0.0001_bs64_mom0.99_wd0.0005_seed0")
    ap.add_argument("--results", default="results", help="the run's results directory")
    ap.add_argument("--config", default="config/config.yaml", help="the config the run used")
    ap.add_argument("--k", type=int, default=60, help="eigenpairs")
    ap.add_argument("--tol", type=float, default=1e-2, help="relative residual of the k Ritz pairs")
    ap.add_argument("--max-iter", type=int, default=300, help="Lanczos iterations at most")
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--band", type=int, default=10, help="eigenvectors per printed band")
    ap.add_argument("--out", default="bench/bulk_noise_spectrum.json", help="JSON file the slope is added to")
    a = ap.parse_args()
    import torch
    import yaml

    from limiting_dynamics import hessian, noise
    from limiting_dynamics.data.drawing import BatchDrawing
    from limiting_dynamics.result_files import open_result
    from limiting_dynamics.stages.common import theta0
    from limiting_dynamics.stages.hessian import hessian_loss

    torch.set_num_threads(2)
    cfg = yaml.safe_load(open(a.config))
    stage = open_result(f"{a.results}/noise/{a.cell}.nc", "noise").attrs  # the settings the noise stage used
    h_attrs = open_result(f"{a.results}/hessian/{a.cell}.nc", "hessian").attrs
    args = argparse.Namespace(
        data=f"{a.results}/data/{cfg['data']['name']}.npz", checkpoint=f"{a.results}/runs/{a.cell}/theta0.pt", threads=2
    )
    p = {
        "device": "cpu",
        "deterministic": True,
        "model": cfg["model"],
        "hessian": cfg["hessian"],
        "cell_batch_size": int(stage["batch_size"]),
        "augment_shift": int(h_attrs["augment_shift"]),
        "label_noise": float(h_attrs["label_smoothing"]),
    }
    device, d, model = theta0(args, p)
    batches, _, _, label_noise = hessian_loss(p, d)
    op = hessian.operator_for(model, batches, cfg["hessian"], label_noise, device)
    start = time.perf_counter()
    res = hessian.lanczos(
        op.matvec, op.numel, a.k, tol=a.tol, max_iter=a.max_iter, seed=int(cfg["hessian"]["seed"]), device=device,
        dtype=op.dtype,
    )  # fmt: skip
    lam = np.asarray(res.eigenvalues, float)  # descending
    u = res.eigenvectors.T.double()  # rows
    rel = np.asarray(res.residuals, float) / np.abs(lam)
    print(f"{a.cell}: {res.n_products} Lanczos steps ({time.perf_counter() - start:.0f} s), converged {res.converged}")
    draws = d.train_batches(int(stage["batch_size"]), BatchDrawing.from_settings(stage), int(stage["seed"]) + 1)
    sigma2 = noise.minibatch_noise(model, draws, a.batches, u, bn_mode=stage["bn_mode"])["projection_var"]
    ratio = sigma2 / lam
    ref = float(np.median(ratio[: min(10, len(ratio))]))
    print(
        f"{a.batches} minibatch gradients of S = {stage['batch_size']}; sigma^2 / lam relative to the top 10's median"
    )
    print("modes | lam (range) | largest residual | sigma^2 (median) | sigma^2 / lam (median, range)")
    for lo in range(0, len(lam), a.band):
        s = slice(lo, min(lo + a.band, len(lam)))
        r = ratio[s] / ref
        print(
            f"{lo + 1}-{s.stop} | {lam[s].min():.3g}-{lam[s].max():.3g} | {rel[s].max():.1e} | "
            f"{np.median(sigma2[s]):.3g} | {np.median(r):.2f} ({r.min():.2f}-{r.max():.2f})"
        )
    ok = lam > 0
    slope = np.polyfit(np.log(lam[ok]), np.log(sigma2[ok]), 1)[0]
    print(f"slope of log sigma^2 against log lam over the {int(ok.sum())} modes: {slope:.2f} (1 for C ~ H)")
    out = Path(a.out)
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved[a.cell] = {"modes": int(ok.sum()), "slope": float(slope), "lam_min": float(lam.min())}
    out.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
