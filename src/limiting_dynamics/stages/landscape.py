"""The landscape stage: train and test loss on the plane of two Hessian eigenvectors around theta_0.

With ``--resume`` the finished rows of the grid are kept in a checkpoint (every
``--checkpoint-every`` rows and on SIGTERM/SIGINT); a rerun computes only the
rest, to the same numbers bit for bit."""

from __future__ import annotations

import time

import numpy as np
import torch
import xarray as xr

from .. import checkpoints, hessian, landscape, table_columns, trajectory
from ..atomic import write_netcdf
from ..errors import CheckpointError, ResultFileError
from ..provenance import stamp
from ..result_files import open_result
from .common import checkpointer_for, log, params, set_threads, theta0

GRIDS = ("train", "test")


def row_state(rows: int, losses: dict[str, np.ndarray]) -> dict:
    """The checkpoint of the first ``rows`` rows of the grid."""
    return {"rows": rows, **{k: torch.from_numpy(np.ascontiguousarray(losses[k][:rows])) for k in GRIDS}}


def finished_rows(ckpt, n: int) -> dict[str, np.ndarray] | None:
    """The rows a checkpoint holds (``None``: none, start at the first row)."""
    saved = ckpt.resume()
    if saved is None:
        return None
    rows = int(saved["rows"])
    done = {k: saved[k].numpy() for k in GRIDS}
    if any(v.shape != (rows, n) for v in done.values()) or rows > n:
        raise CheckpointError(
            f"checkpoint {ckpt.store.path} holds rows of shape {[v.shape for v in done.values()]}, not {rows} rows "
            f"of {n}; delete it to start over"
        )
    log(f"resuming after {rows} of {n} rows from {ckpt.store.path}")
    return done


def cmd_landscape(a) -> None:
    set_threads(a.threads)
    p = params(a)
    cfg = p["landscape"]
    device, d, model = theta0(a, p)
    i, j = (int(m) for m in cfg["modes"])
    h = open_result(a.hessian, "hessian")
    traj = trajectory.open_trajectory(a.trajectory)
    if "mode_position" not in traj or traj.sizes["mode"] < max(i, j):
        raise ResultFileError(
            f"{a.trajectory} has no projections on Hessian modes {i} and {j} "
            "(limiting.phase_space.modes must be >= the landscape modes)"
        )
    ta, tb = traj.mode_position.values[:, i - 1], traj.mode_position.values[:, j - 1]
    n = int(cfg["grid"])
    alphas = np.linspace(-1, 1, n) * landscape.grid_extent(ta, float(cfg["extent_factor"]))
    betas = np.linspace(-1, 1, n) * landscape.grid_extent(tb, float(cfg["extent_factor"]))
    vecs = torch.tensor(h.hessian_eigenvectors.values[[i - 1, j - 1]])
    ((xs, ys),) = hessian.fixed_batches(
        d.x_train, d.y_train, int(cfg["n_samples"]), int(cfg["n_samples"]), int(cfg["seed"])
    )
    start = time.perf_counter()
    inputs = {"data": a.data, "checkpoint": a.checkpoint, "hessian": a.hessian, "trajectory": a.trajectory}
    with checkpoints.stop_on_signals() as stop:
        ckpt = checkpointer_for(a, "landscape", p, device, inputs, stop)
        done = finished_rows(ckpt, n)

        def on_row(rows: int, losses: dict[str, np.ndarray]) -> None:
            if rows < n:  # after the last row the result is written at once
                ckpt(rows, "rows of the loss landscape", lambda: row_state(rows, losses))

        loss = landscape.loss_plane(
            model,
            vecs[0],
            vecs[1],
            alphas,
            betas,
            {"train": (xs, ys), "test": (d.x_test, d.y_test)},
            device,
            done=done,
            on_row=on_row,
            log=log,
        )
    ds = xr.Dataset(
        {
            "train_loss": (("alpha", "beta"), loss["train"]),
            "test_loss": (("alpha", "beta"), loss["test"]),
            "trajectory_a": ("step", ta),
            "trajectory_b": ("step", tb),
        },
        coords={"alpha": alphas, "beta": betas, "step": traj.step.values},
    )
    meta = {
        "alpha": ("1", f"coordinate along Hessian eigenvector u_{i} from theta_0"),
        "beta": ("1", f"coordinate along Hessian eigenvector u_{j} from theta_0"),
        "train_loss": ("nat", "mean cross-entropy on the training subset at theta_0 + alpha u_a + beta u_b"),
        "test_loss": ("nat", "mean cross-entropy on the test set at theta_0 + alpha u_a + beta u_b"),
        "trajectory_a": ("1", f"u_{i}^T (theta_k - theta_0) of the limiting run"),
        "trajectory_b": ("1", f"u_{j}^T (theta_k - theta_0) of the limiting run"),
        "step": ("1", "number of SGD updates since theta_0"),
    }
    table_columns.describe(ds, meta)
    stamp(
        ds,
        f"Loss landscape around theta_0 of cell {p['cell']}",
        "landscape",
        p,
        device,
        "float32",
        cell=p["cell"],
        mode_a=i,
        mode_b=j,
        eigenvalue_a=float(h.hessian_eigenvalues[i - 1]),
        eigenvalue_b=float(h.hessian_eigenvalues[j - 1]),
        n_train=len(ys),
        n_test=len(d.y_test),
        bn_mode="eval",
        extent_factor=float(cfg["extent_factor"]),
        seed=int(cfg["seed"]),
        seconds=time.perf_counter() - start,
    )
    write_netcdf(ds, a.out, {v: {"zlib": True, "complevel": 4} for v in ds.data_vars})
    ckpt.finish()
    log(
        f"loss landscape {n}x{n} in the (u{i}, u{j}) plane in {ds.attrs['seconds']:.1f} s: train loss "
        f"{loss['train'].min():.4g}..{loss['train'].max():.4g} -> {a.out}"
    )
