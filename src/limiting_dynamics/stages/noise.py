"""The gradient-noise stage: noise of independent minibatches at theta_0 and along the limiting run
(and per-sample noise at theta_0)."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .. import noise, table_columns
from ..atomic import write_netcdf
from ..data.drawing import BatchDrawing
from ..progress import Progress
from ..provenance import stamp
from ..result_files import open_result
from .common import log, params, set_threads, theta0


def cmd_gradient_noise(a) -> None:
    from .. import checkpoints

    set_threads(a.threads)
    p = params(a)
    cfg = p["noise"]
    device, d, model = theta0(a, p)
    model.to(device)
    dirs, eig = None, None
    if a.hessian:
        h = open_result(a.hessian, "hessian")
        dirs = torch.tensor(h.hessian_eigenvectors.values, dtype=torch.float32, device=device)
        eig = h.hessian_eigenvalues.values
    # the points of the run: theta_0, then the weights the limiting run kept for the noise (--snapshots)
    points = [(0, None)]
    if a.snapshots:
        points += checkpoints.snapshots_at(a.snapshots, "noise_steps")
    bs = int(p["batch_size"])
    drawing = BatchDrawing.from_settings(p)
    # batches as the limiting runs draw them (sampling scheme, augmentation, label noise;
    # streamed crops and flips with data.loader: stream), from the noise stage's own seed
    batches = d.train_batches(bs, drawing, int(cfg["seed"]))
    # per-sample statistics at theta_0, before the snapshots' weights replace it (no second load)
    ps = (
        noise.per_sample_noise(model, d.x_train, d.y_train, directions=dirs, chunk=int(cfg["chunk"]))
        if cfg["per_sample"]
        else None
    )
    stats = []
    n_batches = int(cfg["n_batches"])
    progress = Progress(
        f"gradient noise at {len(points)} points of the run", n_batches * len(points), "minibatch gradients", log
    )
    for i, (step, weights) in enumerate(points):
        if weights is not None:
            checkpoints.load_weights(model, weights, a.snapshots)
        stats.append(
            noise.minibatch_noise(
                model,
                batches,
                n_batches,
                directions=dirs,
                bn_mode=cfg["bn_mode"],
                on_batch=lambda b, i=i: progress.update(i * n_batches + b),
            )
        )
        log(f"step {step}: tr Cov(g_S) = {stats[-1]['trace_cov']:.4g} +- {stats[-1]['trace_cov_stderr']:.2g}")
    progress.end(n_batches * len(points))
    per_point = {k: np.asarray([s[k] for s in stats]) for k in ("trace_cov", "trace_cov_stderr", "mean_grad_sq_norm")}
    attrs = {
        "cell": p["cell"],
        "n_train": int(d.n_train),
        "batch_size": bs,
        "augment_shift": drawing.augment_shift,
        "label_noise": drawing.label_noise,
        "trace_cov": float(per_point["trace_cov"].mean()),
        "trace_cov_stderr": float(np.sqrt((per_point["trace_cov_stderr"] ** 2).sum()) / len(points)),
        "trace_cov_theta0": float(per_point["trace_cov"][0]),
        "n_batches": int(cfg["n_batches"]),
        "bn_mode": cfg["bn_mode"],
        "sampling": drawing.sampling,
        "seed": int(cfg["seed"]),
        "batch_source": type(batches).__name__,
    }
    data_vars = {f"{k}_at_point": ("noise_step", v) for k, v in per_point.items()}
    if dirs is not None:
        data_vars["minibatch_var_along_eigenvector"] = (
            ("noise_step", "mode"),
            np.stack([s["projection_var"] for s in stats]),
        )
        data_vars["minibatch_var_along_eigenvector_stderr"] = (
            ("noise_step", "mode"),
            np.stack([s["projection_var_stderr"] for s in stats]),
        )
    if ps is not None:
        attrs["per_sample_trace_c_eval_mode"] = ps["trace_c"]
        attrs["per_sample_method"] = str(ps["method"])
        attrs["per_sample_chunk"] = int(ps["chunk"])
        if dirs is not None:
            data_vars["per_sample_var_along_eigenvector"] = ("mode", ps["projection_var"])
    coords = {"noise_step": np.asarray([k for k, _ in points], dtype=np.int64)}
    if dirs is not None:
        coords.update(mode=np.arange(1, len(eig) + 1), hessian_eigenvalue=("mode", eig))
    ds = xr.Dataset(data_vars, coords=coords)
    table_columns.describe(ds, noise.VARIABLES)
    stamp(
        ds,
        f"Gradient noise of independent minibatches along the limiting run of cell {p['cell']}, batch size {bs}",
        "gradient-noise",
        p,
        device,
        "float32",
        **attrs,
    )
    write_netcdf(ds, a.out)
    log(
        f"S={bs}: tr Cov(g_S) = {attrs['trace_cov']:.4g} +- {attrs['trace_cov_stderr']:.2g} "
        f"(mean over {len(points)} points of the run) -> {a.out}"
    )
