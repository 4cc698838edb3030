"""Training stages: convergence to theta_0, a cell's burn-in, and its recorded limiting run."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import checkpoints, models, run_record, training
from ..atomic import write_netcdf
from ..config import noise_snapshot_steps, weights_suffix
from ..data import datasets
from ..data.drawing import BatchDrawing
from ..errors import ConfigError, ResultFileError
from ..hyperparameters import Hyperparameters
from ..provenance import stamp
from ..recording import RecordingPlan
from ..result_files import open_result
from .common import (
    checkpointer_for,
    device_for,
    loader_workers,
    log,
    params,
    recording_divergence,
    set_threads,
    theta0,
)

if TYPE_CHECKING:  # xarray (0.3 s) is imported where a NetCDF file is read or written
    import xarray as xr


def history_dataset(history: dict, attrs: dict, first_epoch: int, params: dict, device) -> xr.Dataset:
    """The pretraining history (one row per epoch) as a CF-style data set."""
    import xarray as xr

    n = len(history["train_loss"])
    ds = xr.Dataset(
        {k: ("epoch", np.asarray(v, float)) for k, v in history.items()},
        coords={"epoch": np.arange(first_epoch, first_epoch + n)},
    )
    units = {"lr": "1", "train_loss": "nat", "test_loss": "nat", "train_accuracy": "1", "test_accuracy": "1"}
    for k in history:
        long_name = "learning rate at the start of the epoch" if k == "lr" else k.replace("_", " ") + " (eval mode)"
        ds[k].attrs.update(units=units[k], long_name=long_name)
    ds["epoch"].attrs.update(units="1", long_name="training epoch")
    return stamp(ds, "Reaching convergence: pretraining history", "converge", params, device, "float32", **attrs)


def cmd_converge(a) -> None:
    set_threads(a.threads)
    p = params(a)
    numerics = training.Numerics.from_config(p["numerics"])
    device = device_for(p)
    d = datasets.load_prepared(a.data, device, workers=loader_workers(a))
    torch.manual_seed(int(p["converge"]["seed"]))  # the initialisation is part of the run's seed
    model = models.build_model(p["model"], d.num_classes, d.in_channels)
    src = p["converge"]["checkpoint"]
    saver = None
    if src:
        try:
            checkpoints.load_weights(model, checkpoints.load_checkpoint(src)["model"], src)
        except checkpoints.CheckpointError as exc:
            raise checkpoints.CheckpointError(f"{exc}{weights_suffix(p['model']['arch'])}") from exc
        model.to(device)
        m = training.evaluate_all(model, d)
        history = {"lr": [float("nan")], **{k: [v] for k, v in m.items()}}
        log(f"loaded converged weights from {src}: " + " ".join(f"{k} {v:.4f}" for k, v in m.items()))
    else:
        with checkpoints.stop_on_signals() as stop:
            saver = checkpointer_for(a, "converge", p, device, {"data": a.data}, stop)
            history = training.pretrain(model, d, p["converge"], device, checkpointer=saver, log=log, numerics=numerics)
    n_params = models.count_parameters(model)
    checkpoints.save_checkpoint(
        {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_config": p["model"],
            "num_classes": d.num_classes,
            "in_channels": d.in_channels,
            "dataset": d.name,
            "n_params": n_params,
        },
        a.out_checkpoint,
    )
    attrs = {
        "dataset": d.name,
        "model": json.dumps(p["model"]),
        "n_params": n_params,
        "source": src or "trained from scratch",
        "numerics": numerics.describe(),
    }
    losses = history["train_loss"]
    if len(losses) >= 10:  # plateau check: change of train loss over the last 10% of epochs
        k = max(1, len(losses) // 10)
        change = abs(losses[-1] - losses[-1 - k]) / max(losses[-1], 1e-12)
        attrs["train_loss_relative_change_last_10pct_epochs"] = change
        log(
            f"train loss changed by {100 * change:.1f}% over the last {k} epochs"
            + ("" if change < 0.2 else " -- not a plateau; consider more epochs")
        )
    write_netcdf(history_dataset(history, attrs, 0 if src else 1, p, device), a.out_history)
    if saver is not None:
        saver.finish()
    log(f"theta_0 checkpoint ({n_params} parameters) -> {a.out_checkpoint}")


def cmd_burn_in(a) -> None:
    set_threads(a.threads)
    p = params(a)
    hp = Hyperparameters(**p["hyperparameters"])
    device, d, model = theta0(a, p)
    with checkpoints.stop_on_signals() as stop:
        ckpt = checkpointer_for(a, "burn-in", p, device, {"data": a.data, "checkpoint": a.checkpoint}, stop)
        state = recording_divergence(
            a,
            p,
            hp,
            lambda: training.burn_in(
                model,
                d,
                hp,
                steps=p["burn_in_steps"],
                drawing=BatchDrawing.from_settings(p),
                device=device,
                cell=p["cell"],
                checkpointer=ckpt,
                log=log,
                numerics=training.Numerics.from_config(p["numerics"]),
            ),
        )
    checkpoints.save_checkpoint({**state, "model_config": p["model"], "cell": p["cell"]}, a.out)
    ckpt.finish()
    log(f"cell {p['cell']}: theta_0 after {p['burn_in_steps']} burn-in steps -> {a.out}")


def cmd_limiting_run(a) -> None:
    set_threads(a.threads)
    p = params(a)
    hp = Hyperparameters(**p["hyperparameters"])
    device, d, model, start = theta0(a, p, with_checkpoint=True)
    n_params = models.count_parameters(model)
    phase = p["phase_space"]
    directions, eig = None, None
    if a.hessian and int(phase["modes"]) > 0:
        h = open_result(a.hessian, "hessian")
        k = int(phase["modes"])
        if h.sizes["mode"] < k or h.attrs["n_params"] != n_params:
            raise ResultFileError(
                f"{a.hessian}: has {h.sizes['mode']} eigenvectors over {h.attrs['n_params']} "
                f"parameters; this run needs {k} over the configured model's"
            )
        directions = torch.tensor(h.hessian_eigenvectors.values[:k], dtype=torch.float32)
        eig = h.hessian_eigenvalues.values[:k]
    sketch_dim = int(phase["sketch_dim"])
    if sketch_dim > n_params:
        raise ConfigError(f"limiting.phase_space.sketch_dim {sketch_dim} exceeds the model's {n_params} parameters")
    # the weights kept for later stages (--out-snapshots): where the noise is measured, and where the Hessian's
    # eigenvectors are tested
    noise_steps = noise_snapshot_steps(p["steps"], p["noise_points"]) if a.out_snapshots else []
    drift_steps = sorted(int(k) for k in p["drift_steps"]) if a.out_snapshots else []
    if drift_steps and not 1 <= drift_steps[0] <= drift_steps[-1] <= int(p["steps"]):
        raise ConfigError(f"hessian.drift_steps {drift_steps} must lie in 1..{p['steps']}, the run's steps")
    with checkpoints.stop_on_signals() as stop:
        ckpt = checkpointer_for(
            a, "limiting-run", p, device, {"data": a.data, "checkpoint": a.checkpoint, "hessian": a.hessian}, stop
        )
        record = recording_divergence(
            a,
            p,
            hp,
            lambda: training.limiting_run(
                model,
                d,
                hp,
                steps=p["steps"],
                start=start,
                eval_every=p["eval_every"],
                drawing=BatchDrawing.from_settings(p),
                device=device,
                recording=RecordingPlan(
                    tensor_every=p["tensor_every"],
                    compile=p["compile_recording"],
                    directions=directions,
                    sketch_dim=sketch_dim,
                    sketch_seed=int(phase["sketch_seed"]),
                ),
                cell=p["cell"],
                checkpointer=ckpt,
                log=log,
                numerics=training.Numerics.from_config(p["numerics"]),
                snapshot_steps=[*noise_steps, *drift_steps],
            ),
        )
    if eig is not None:
        record["hessian_eigenvalue"] = eig
    snapshots = record.pop("snapshots", {})
    if a.out_snapshots:
        steps = sorted(snapshots)
        checkpoints.save_checkpoint(
            {
                "cell": p["cell"],
                "steps": steps,
                "models": [snapshots[k] for k in steps],
                "noise_steps": noise_steps,
                "drift_steps": drift_steps,
                "model_config": p["model"],
            },
            a.out_snapshots,
        )
    run_record.save({**record, "device": str(device)}, a.out)
    ckpt.finish()
    log(f"cell {p['cell']}: {p['steps']} steps recorded -> {a.out}")
