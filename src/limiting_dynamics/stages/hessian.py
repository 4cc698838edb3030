"""Hessian stages: eigenpairs, spectral density and trace at theta_0, and how the eigenvectors hold along the run."""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import xarray as xr

from .. import checkpoints, eigenvector_drift, hessian, table_columns
from ..atomic import write_netcdf
from ..data.drawing import BatchDrawing
from ..hyperparameters import Hyperparameters
from ..provenance import stamp
from ..result_files import hessian_dataset, open_result
from .common import checkpointer_for, log, params, set_threads, theta0


def hessian_loss(p: dict, d):
    """The loss whose Hessian the stages take (the ``hessian`` config with the
    cell's batch size, augmentation and label noise): its fixed batches, the
    number of examples, the chunk (batch) size, and the label smoothing."""
    cfg = p["hessian"]
    n_samples, chunk = hessian.loss_batching(cfg, d.n_train, p["cell_batch_size"])
    batches = hessian.fixed_batches(
        d.x_train,
        d.y_train,
        n_samples,
        chunk,
        int(cfg["seed"]),
        draws=int(cfg["draws"]),
        shift=int(p["augment_shift"]),
        fill=d.background,
    )
    return batches, n_samples, chunk, float(p["label_noise"])


def bulk_noise_curvature(p: dict, d, model, batches, device, ds) -> dict:
    """``tr C`` and ``tr(H C)`` of independent minibatch noise outside the top
    eigenvectors (:func:`.noise.bulk_noise_curvature`): minibatches of the cell's
    S drawn as the runs draw them, from the Hessian stage's seed + 1."""
    from .. import noise

    cfg = p["hessian"]
    label_noise = float(p["label_noise"])
    op = hessian.operator_for(model, batches, cfg, label_noise, device)
    draws = d.train_batches(int(p["cell_batch_size"]), BatchDrawing.from_settings(p), int(cfg["seed"]) + 1)
    top = torch.tensor(ds.hessian_eigenvectors.values, dtype=op.dtype, device=device)
    start = time.perf_counter()
    out = noise.bulk_noise_curvature(
        model.to(device), draws, int(cfg["bulk_noise_batches"]), top, op.matvec, bn_mode=cfg["bn_mode"]
    )
    log(
        f"bulk noise outside the top {top.shape[0]}: tr C = {out['trace_cov_bulk']:.4g} "
        f"± {out['trace_cov_bulk_stderr']:.2g}, tr(H C) = {out['trace_hcov_bulk']:.4g} "
        f"± {out['trace_hcov_bulk_stderr']:.2g}, noise-weighted curvature {out['noise_weighted_curvature_bulk']:.4g} "
        f"({out['bulk_noise_batches']} minibatches, {time.perf_counter() - start:.1f} s)"
    )
    return out


def cmd_hessian(a) -> None:
    set_threads(a.threads)
    p = params(a)
    cfg = p["hessian"]
    device, d, model = theta0(a, p)
    batches, n_samples, chunk, label_noise = hessian_loss(p, d)
    shift = int(p["augment_shift"])
    start = time.perf_counter()
    with checkpoints.stop_on_signals() as stop:
        ckpt = checkpointer_for(a, "hessian", p, device, {"data": a.data, "checkpoint": a.checkpoint}, stop)
        result = hessian.analyze(model, batches, cfg, device, log=log, checkpointer=ckpt, label_smoothing=label_noise)
        ds = hessian_dataset(result, cfg, device)
        bulk = bulk_noise_curvature(p, d, model, batches, device, ds) if int(cfg["bulk_noise_batches"]) else {}
    stamp(
        ds,
        f"Hessian of the training loss at theta_0 of cell {p['cell']}",
        "hessian",
        p,
        device,
        cfg["precision"],
        dataset=d.name,
        cell=p["cell"],
        chunk_size=chunk,
        draws=int(cfg["draws"]),
        augment_shift=shift,
        label_smoothing=label_noise,
        n_samples=n_samples,
        n_examples_per_product=int(ds.attrs["n_samples"]),
        **bulk,
        model=json.dumps(p["model"]),
        seconds=time.perf_counter() - start,
    )
    enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype != object}
    write_netcdf(ds, a.out, enc)
    ckpt.finish()
    log(f"Hessian at theta_0: {ds.attrs['total_hvps']} HVPs in {ds.attrs['seconds']:.1f} s -> {a.out}")


def cmd_eigenvector_drift(a) -> None:
    set_threads(a.threads)
    p = params(a)
    cfg = p["hessian"]
    hp = Hyperparameters(**p["hyperparameters"])
    device, d, model = theta0(a, p)
    model.to(device)
    h = open_result(a.hessian, "hessian")
    k = min(int(cfg["drift_modes"]), h.sizes["mode"])
    vectors = torch.tensor(h.hessian_eigenvectors.values[:k], dtype=hessian.PRECISIONS[cfg["precision"]], device=device)
    eig = h.hessian_eigenvalues.values[:k]
    batches, n_samples, chunk, label_noise = hessian_loss(p, d)
    # the weights the limiting run kept at its drift steps (no second run of its steps)
    kept = checkpoints.snapshots_at(a.snapshots, "drift_steps")
    if not kept:
        raise checkpoints.CheckpointError(f"{a.snapshots}: the limiting run kept no weights at drift steps")
    steps = [0] + [step for step, _ in kept]
    # at theta_0 the Hessian stage's own Lanczos pairs: u^T H u = lam, residual |beta_m s_m| / lam
    rq0, res0 = eig, np.abs(h.hessian_eigenvalue_residual.values[:k]) / np.abs(eig)
    clock = time.perf_counter()

    def states():
        for step, weights in kept:
            checkpoints.load_weights(model, weights, a.snapshots)
            yield step, model

    _, along_rq, along_res = eigenvector_drift.track_eigenvectors(
        states(), vectors, lambda m: hessian.operator_for(m, batches, cfg, label_noise, device), log=log
    )
    rq, res = np.vstack([rq0[None], along_rq]), np.vstack([res0[None], along_res])
    ds = xr.Dataset(
        {
            "rayleigh_quotient": (("drift_step", "mode"), np.asarray(rq)),
            "relative_residual": (("drift_step", "mode"), np.asarray(res)),
        },
        coords={"drift_step": steps, "mode": np.arange(1, k + 1), "eigenvalue": ("mode", eig)},
    )
    meta = {
        "drift_step": ("1", "SGD steps since theta_0 (weights the limiting run kept)"),
        "mode": ("1", "Hessian eigenvector of theta_0 (1 = largest eigenvalue)"),
        "eigenvalue": ("1", "eigenvalue lam_i at theta_0"),
        "rayleigh_quotient": ("1", "u_i^T H u_i with the Hessian at the step and u_i from theta_0"),
        "relative_residual": ("1", "||H u_i - (u_i^T H u_i) u_i|| / |u_i^T H u_i|: 0 for an eigenvector"),
    }
    table_columns.describe(ds, meta)
    stamp(
        ds,
        f"Drift of the Hessian eigenvectors of theta_0 along the run of cell {p['cell']}",
        "eigenvector-drift",
        p,
        device,
        "float32",
        cell=p["cell"],
        **hp.as_dict(),
        n_samples=n_samples,
        chunk_size=chunk,
        draws=int(cfg["draws"]),
        label_smoothing=label_noise,
        bn_mode=cfg["bn_mode"],
        seconds=time.perf_counter() - clock,
    )
    write_netcdf(ds, a.out)
    log(f"eigenvector drift of {k} modes at steps {steps} in {ds.attrs['seconds']:.1f} s -> {a.out}")
