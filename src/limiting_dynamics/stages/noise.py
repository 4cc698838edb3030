"""The gradient-noise stage: minibatch (and per-sample) noise at theta_0."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .. import noise, table_columns
from ..atomic import write_netcdf
from ..provenance import stamp
from ..result_files import open_result
from .common import log, params, set_threads, theta0


def cmd_gradient_noise(a) -> None:
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
    bs = int(p["batch_size"])
    shift = int(p["augment_shift"])
    # batches as the limiting runs draw them (sampling scheme, augmentation; streamed
    # crops and flips with data.loader: stream), from the noise stage's own seed
    batches = d.train_batches(bs, p["sampling"], int(cfg["seed"]), shift, float(p.get("label_noise", 0.0)))
    mb = noise.minibatch_noise(model, batches, int(cfg["n_batches"]), directions=dirs, bn_mode=cfg["bn_mode"])
    attrs = {
        "cell": p.get("cell", ""),
        "n_train": int(d.n_train),
        "batch_size": bs,
        "augment_shift": shift,
        "label_noise": float(p.get("label_noise", 0.0)),
        "trace_cov": mb["trace_cov"],
        "trace_cov_stderr": mb["trace_cov_stderr"],
        "mean_grad_sq_norm": mb["mean_grad_sq_norm"],
        "n_batches": int(cfg["n_batches"]),
        "bn_mode": cfg["bn_mode"],
        "sampling": p["sampling"],
        "seed": int(cfg["seed"]),
        "batch_source": type(batches).__name__,
    }
    data_vars = {}
    if dirs is not None:
        data_vars["minibatch_var_along_eigenvector"] = ("mode", mb["projection_var"])
        data_vars["minibatch_var_along_eigenvector_stderr"] = ("mode", mb["projection_var_stderr"])
    if cfg["per_sample"]:
        ps = noise.per_sample_noise(model, d.x_train, d.y_train, directions=dirs, chunk=int(cfg["chunk"]))
        attrs["per_sample_trace_c_eval_mode"] = ps["trace_c"]
        attrs["per_sample_method"] = str(ps["method"])
        attrs["per_sample_chunk"] = int(ps["chunk"])
        if dirs is not None:
            data_vars["per_sample_var_along_eigenvector"] = ("mode", ps["projection_var"])
    coords = {"mode": np.arange(1, len(eig) + 1), "hessian_eigenvalue": ("mode", eig)} if dirs is not None else {}
    ds = xr.Dataset(data_vars, coords=coords)
    table_columns.describe(ds, noise.VARIABLES)
    stamp(
        ds,
        f"Gradient noise at theta_0 of cell {p.get('cell', '')}, batch size {bs}",
        "gradient-noise",
        p,
        device,
        "float32",
        **attrs,
    )
    write_netcdf(ds, a.out)
    log(
        f"S={bs}: tr Cov(g_S) = {mb['trace_cov']:.4g} +- {mb['trace_cov_stderr']:.2g} "
        f"(S x = {bs * mb['trace_cov']:.4g}) -> {a.out}"
    )
