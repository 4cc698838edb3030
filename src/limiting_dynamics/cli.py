"""Command-line entry points, one per workflow stage: ``limiting-dynamics STAGE ...``.

Every stage reads its settings as one JSON object (``--params``), writes its
outputs atomically, and turns expected failures into a one-line message on
stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json

EXIT_ERROR = 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; rerunning continues


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def _loader_workers(a) -> int:
    """DataLoader processes for a streamed data set: the job's threads but one."""
    return max(0, int(getattr(a, "threads", 1)) - 1)


def _theta0(a, p: dict, with_checkpoint: bool = False):
    """Device, prepared data (``--data``) and the model with the theta_0 weights
    (``--checkpoint``); with ``with_checkpoint`` also the checkpoint dict."""
    from . import checkpoints, models, training
    from .data import datasets as data

    device = training.resolve_device(p["device"])
    d = data.load_prepared(a.data, device, workers=_loader_workers(a))
    ckpt = checkpoints.load_checkpoint(a.checkpoint)
    model = models.build_model(p["model"], d.num_classes, d.in_channels)
    checkpoints.load_weights(model, ckpt["model"], a.checkpoint)
    return (device, d, model, ckpt) if with_checkpoint else (device, d, model)


def _checkpointer(a, stage: str, p: dict, device, inputs: dict, stop):
    """The :class:`.checkpoints.Checkpointer` of a long stage: checkpoints in
    ``--resume`` every ``--checkpoint-every`` steps/epochs and on a signal, tied
    to the stage's settings, the contents of its input files, the device, the
    thread count and the torch version (what a bit-identical continuation needs)."""
    import torch

    from . import checkpoints

    if not a.resume:
        return checkpoints.Checkpointer(None, 0, stop, _log)
    settings = {
        "stage": stage,
        "params": p,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "inputs": {k: checkpoints.file_identity(v) for k, v in inputs.items() if v},
    }
    return checkpoints.Checkpointer(checkpoints.ResumeStore(a.resume, settings, _log), a.checkpoint_every, stop, _log)


def cmd_prepare_data(a) -> None:
    from .data import datasets as data

    p = json.loads(a.params)
    prepared = data.prepare(p, workers=a.threads)
    data.save_prepared(prepared, a.out)
    _log(
        f"{prepared.name}: {len(prepared.y_train)} train / {len(prepared.y_test)} test images "
        f"of shape {prepared.image_shape}, {prepared.num_classes} classes -> {a.out}"
    )


def _history_dataset(history: dict, attrs: dict, first_epoch: int):
    import xarray as xr

    from .trajectory import now_iso

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
    ds.attrs.update(
        Conventions="CF-1.10",
        title="Reaching convergence: pretraining history",
        history=f"{now_iso()} created by limiting-dynamics converge",
        **attrs,
    )
    return ds


def cmd_converge(a) -> None:
    from . import checkpoints, models, training, trajectory
    from .data import datasets as data
    from .trajectory import provenance_attrs

    _threads(a.threads)
    p = json.loads(a.params)
    numerics = training.Numerics.from_config(p.get("numerics"))
    device = training.resolve_device(p["device"])
    d = data.load_prepared(a.data, device, workers=_loader_workers(a))
    import torch

    torch.manual_seed(int(p["converge"]["seed"]))  # the initialisation is part of the run's seed
    model = models.build_model(p["model"], d.num_classes, d.in_channels)
    src = p["converge"].get("checkpoint")
    saver = None
    if src:
        from .config import weights_suffix

        try:
            checkpoints.load_weights(model, checkpoints.load_checkpoint(src)["model"], src)
        except checkpoints.CheckpointError as exc:
            raise checkpoints.CheckpointError(f"{exc}{weights_suffix(p['model']['arch'])}") from exc
        model.to(device)
        m = training.evaluate_all(model, d)
        history = {"lr": [float("nan")], **{k: [v] for k, v in m.items()}}
        _log(f"loaded converged weights from {src}: " + " ".join(f"{k} {v:.4f}" for k, v in m.items()))
    else:
        with checkpoints.stop_on_signals() as stop:
            saver = _checkpointer(a, "converge", p, device, {"data": a.data}, stop)
            history = training.pretrain(
                model, d, p["converge"], device, checkpointer=saver, log=_log, numerics=numerics
            )
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
        **provenance_attrs(p, device, "float32"),
    }
    losses = history["train_loss"]
    if len(losses) >= 10:  # plateau check: change of train loss over the last 10% of epochs
        k = max(1, len(losses) // 10)
        change = abs(losses[-1] - losses[-1 - k]) / max(losses[-1], 1e-12)
        attrs["train_loss_relative_change_last_10pct_epochs"] = change
        _log(
            f"train loss changed by {100 * change:.1f}% over the last {k} epochs"
            + ("" if change < 0.2 else " -- not a plateau; consider more epochs")
        )
    trajectory.write_netcdf(_history_dataset(history, attrs, first_epoch=0 if src else 1), a.out_history)
    if saver is not None:
        saver.finish()
    _log(f"theta_0 checkpoint ({n_params} parameters) -> {a.out_checkpoint}")


def _diverged(a, p: dict, hp, run):
    """Run ``run()``; on divergence leave ``--diverged-record`` (a JSON note) and re-raise."""
    from . import training

    diverged = Path(a.diverged_record)
    diverged.unlink(missing_ok=True)
    try:
        return run()
    except training.DivergenceError as exc:
        write_json({"cell": p["cell"], "error": str(exc), "hyperparameters": hp.as_dict()}, diverged)
        raise


def cmd_burn_in(a) -> None:
    from . import checkpoints, training

    _threads(a.threads)
    p = json.loads(a.params)
    hp = training.Hyperparameters(**p["hyperparameters"])
    device, d, model = _theta0(a, p)
    with checkpoints.stop_on_signals() as stop:
        ckpt = _checkpointer(a, "burn-in", p, device, {"data": a.data, "checkpoint": a.checkpoint}, stop)
        state = _diverged(
            a,
            p,
            hp,
            lambda: training.burn_in(
                model,
                d,
                hp,
                steps=p["burn_in_steps"],
                sampling=p["sampling"],
                device=device,
                augment_shift=p["augment_shift"],
                cell=p["cell"],
                checkpointer=ckpt,
                log=_log,
                numerics=training.Numerics.from_config(p.get("numerics")),
                label_noise=p["label_noise"],
            ),
        )
    checkpoints.save_checkpoint({**state, "model_config": p["model"], "cell": p["cell"]}, a.out)
    ckpt.finish()
    _log(f"cell {p['cell']}: theta_0 after {p['burn_in_steps']} burn-in steps -> {a.out}")


def cmd_run_cell(a) -> None:
    from . import checkpoints, models, training
    from .errors import ConfigError, ResultFileError
    from .result_files import open_result

    _threads(a.threads)
    p = json.loads(a.params)
    hp = training.Hyperparameters(**p["hyperparameters"])
    device, d, model, start = _theta0(a, p, with_checkpoint=True)
    n_params = models.count_parameters(model)
    phase = p.get("phase_space", {})
    directions, eig = None, None
    if a.hessian and int(phase.get("modes", 0)) > 0:
        import torch

        h = open_result(a.hessian, "hessian")
        k = int(phase["modes"])
        if h.sizes["mode"] < k or h.attrs["n_params"] != n_params:
            raise ResultFileError(
                f"{a.hessian}: has {h.sizes['mode']} eigenvectors over {h.attrs['n_params']} "
                f"parameters; this run needs {k} over the configured model's"
            )
        directions = torch.tensor(h.hessian_eigenvectors.values[:k], dtype=torch.float32)
        eig = h.hessian_eigenvalues.values[:k]
    sketch_dim = int(phase.get("sketch_dim", 0))
    if sketch_dim > n_params:
        raise ConfigError(f"limiting.phase_space.sketch_dim {sketch_dim} exceeds the model's {n_params} parameters")
    with checkpoints.stop_on_signals() as stop:
        ckpt = _checkpointer(
            a, "run-cell", p, device, {"data": a.data, "checkpoint": a.checkpoint, "hessian": a.hessian}, stop
        )
        record = _diverged(
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
                sampling=p["sampling"],
                device=device,
                augment_shift=p["augment_shift"],
                tensor_every=p["tensor_every"],
                compile=p["compile_recording"],
                directions=directions,
                sketch_dim=sketch_dim,
                sketch_seed=int(phase.get("sketch_seed", 0)),
                cell=p["cell"],
                checkpointer=ckpt,
                log=_log,
                numerics=training.Numerics.from_config(p.get("numerics")),
                label_noise=p["label_noise"],
            ),
        )
    if eig is not None:
        record["hessian_eigenvalue"] = eig
    record["tensor_name"] = np.asarray(record["tensor_name"], dtype=str)
    with atomic_path(a.out) as tmp:
        with open(tmp, "wb") as fh:
            text = ("optimizer", "precision", "numerics")
            np.savez(
                fh,
                **{k: np.asarray(v) for k, v in record.items() if k not in text},
                device=np.str_(str(device)),
                **{k: np.str_(record[k]) for k in text},
            )
    ckpt.finish()
    _log(f"cell {p['cell']}: {p['steps']} steps recorded -> {a.out}")


def cmd_export_trajectory(a) -> None:
    from . import trajectory

    p = json.loads(a.params)
    with np.load(a.raw, allow_pickle=False) as f:
        record = {k: f[k] for k in f.files}
    for k in ("sq_param_norm_start", "sq_velocity_start", "burn_in_steps", "n_params", "sketch_seed", "sketch_block"):
        if k in record:
            record[k] = record[k].item()
    record["tensor_name"] = [str(s) for s in record["tensor_name"]]
    attrs = {
        **p["hyperparameters"],
        "cell": p["cell"],
        "dataset": p["dataset"],
        "model": json.dumps(p["model"]),
        "sampling": p["sampling"],
        "augment_shift": p["augment_shift"],
        "label_noise": p["label_noise"],
        "optimizer": str(record["optimizer"]),
        "numerics": str(record["numerics"]),
        **trajectory.provenance_attrs(p, str(record["device"]), str(record["precision"])),
    }
    ds = trajectory.build_dataset(record, attrs)
    trajectory.validate_trajectory(ds, a.out)
    trajectory.write_netcdf(ds, a.out, trajectory.encoding_for(ds))
    _log(f"trajectory of {p['cell']} ({ds.sizes['step']} steps) -> {a.out}")


def cmd_combine(a) -> None:
    from . import trajectory

    ds = trajectory.combine(a.inputs, a.cells)
    trajectory.write_netcdf(ds, a.out, trajectory.encoding_for(ds))
    _log(f"{len(a.cells)} cells -> {a.out}")


def cmd_analyze_cell(a) -> None:
    from . import diffusion, trajectory

    p = json.loads(a.params)
    ds = trajectory.open_trajectory(a.trajectory)
    row = diffusion.analyze_trajectory(ds, p)
    row["cell"] = ds.attrs["cell"]
    write_json(row, a.out)
    _log(
        f"{row['cell']}: c = {row['c']:.3f} [{row['c_low']:.3f}, {row['c_high']:.3f}], "
        f"stationary sq_step = {row['sq_step_mean']:.4g} ± {row['sq_step_stderr']:.2g}"
    )


def cmd_summarize(a) -> None:
    import pandas as pd

    from . import replicates
    from .trajectory import HYPERPARAMETER_ATTRS, write_netcdf

    rows = [json.loads(Path(f).read_text()) for f in a.inputs]
    df = pd.DataFrame(rows)
    lead = [
        "cell",
        *HYPERPARAMETER_ATTRS,
        "burn_in_steps",
        "steps",
        "c",
        "c_low",
        "c_high",
        "c_geodesic",
        "c_geodesic_low",
        "c_geodesic_high",
        "c_small_angle",
        "c_small_angle_low",
        "c_small_angle_high",
        "rotation_angle_fit_end",
        "small_angle_steps",
        "small_angle_fit",
        "stationarity_ratio",
        "c_radial",
        "c_radial_low",
        "c_radial_high",
        "c_angular",
        "c_angular_low",
        "c_angular_high",
        "sq_step_mean",
        "sq_step_stderr",
        "theory_scale",
        "noise_trace_estimate",
    ]
    df = df[lead + [c for c in df.columns if c not in lead]].set_index("cell")
    with atomic_path(a.out_csv) as tmp:
        df.to_csv(tmp, float_format="%.6g")
    write_netcdf(_cell_table_dataset(df, "diffusion summary per cell", "summarize"), a.out_nc)
    agg = replicates.aggregate(df)
    with atomic_path(a.out_replicates) as tmp:
        agg.to_csv(tmp, index=False, float_format="%.6g")
    _log(f"summary of {len(df)} cells ({len(agg)} hyperparameter cells) -> {a.out_csv}, {a.out_nc}, {a.out_replicates}")


def cmd_linreg_cell(a) -> None:
    from . import linear_regression as lr
    from .trajectory import now_iso, provenance_attrs, write_netcdf

    p = json.loads(a.params)
    problem = lr.digits_problem()
    cell = lr.Cell(
        lr=p["lr"],
        batch_size=p["batch_size"],
        momentum=p["momentum"],
        weight_decay=p["weight_decay"],
        sampling=p["sampling"],
    )
    _log(
        f"linear regression {cell.name}: N={problem.n}, d={problem.d}, lam_max={problem.eigvals[0]:.4g}, "
        f"{p['chains']} chains x {p['steps']} steps"
    )
    try:
        ds = lr.run_cell(
            problem,
            cell,
            steps=p["steps"],
            chains=p["chains"],
            kept=p["kept_chains"],
            top_modes=p["top_modes"],
            displacement=p["displacement"],
            lag_anchor=int(p["lag_anchor"] * p["steps"]),
            lags=p["lags"],
            seed=p["seed"],
        )
    except (ValueError, FloatingPointError) as exc:
        raise lr.LinearRegressionError(str(exc)) from exc
    ds.attrs.update(
        Conventions="CF-1.10",
        title="SGD with momentum on least squares (digits): simulation vs exact and continuous theory",
        history=f"{now_iso()} created by limiting-dynamics linreg-cell",
        **provenance_attrs(p, "cpu", "float64"),
    )
    write_netcdf(ds, a.out, {v: {"zlib": True, "complevel": 4} for v in ds.data_vars})
    _log(
        f"{cell.name}: state-dependent noise left out = "
        f"{100 * ds.attrs['state_dependent_noise_fraction']:.2f}% of tr C -> {a.out}"
    )


def cmd_linreg_summary(a) -> None:
    import pandas as pd
    import xarray as xr

    from . import linear_regression as lr

    rows, momenta = [], set()
    for f in a.inputs:
        with xr.open_dataset(f) as ds:
            ds = ds.load()
        steps = int(ds.sizes["step"]) - 1
        rows += lr.comparison_table(ds, sorted({max(1, steps // 30), steps // 2, steps}))
        momenta.add(float(ds.attrs["momentum"]))
    df = pd.DataFrame(rows)
    with atomic_path(a.out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    dc = pd.DataFrame(lr.discrete_vs_continuous(sorted(momenta)))
    with atomic_path(a.out_continuous) as tmp:
        dc.to_csv(tmp, index=False, float_format="%.6g")
    z = df["z_discrete"].abs()
    _log(
        f"{len(df)} comparisons: median |z| {z.median():.2f}, max |z| {z.max():.2f} "
        f"({(z > 3).sum()} above 3) -> {a.out_csv}"
    )


def _hessian_loss(p: dict, d):
    """The loss whose Hessian the stages take (the ``hessian`` config with the
    cell's batch size, augmentation and label noise): its fixed batches, the
    number of examples, the chunk (batch) size, and the label smoothing."""
    from . import hessian

    cfg = p["hessian"]
    n_samples, chunk = hessian.loss_batching(cfg, d.n_train, p.get("cell_batch_size"))
    batches = hessian.fixed_batches(
        d.x_train,
        d.y_train,
        n_samples,
        chunk,
        int(cfg["seed"]),
        draws=int(cfg.get("draws", 1)),
        shift=int(p.get("augment_shift", 0)),
        fill=d.background,
    )
    return batches, n_samples, chunk, float(p.get("label_noise", 0.0))


def cmd_hessian(a) -> None:
    from . import checkpoints, hessian
    from .trajectory import now_iso, provenance_attrs, write_netcdf

    _threads(a.threads)
    p = json.loads(a.params)
    cfg = p["hessian"]
    device, d, model = _theta0(a, p)
    batches, n_samples, chunk, label_noise = _hessian_loss(p, d)
    shift = int(p.get("augment_shift", 0))
    start = time.perf_counter()
    with checkpoints.stop_on_signals() as stop:
        ckpt = _checkpointer(a, "hessian", p, device, {"data": a.data, "checkpoint": a.checkpoint}, stop)
        ds = hessian.analyze(model, batches, cfg, device, log=_log, checkpointer=ckpt, label_smoothing=label_noise)
    ds.attrs.update(
        Conventions="CF-1.10",
        title=f"Hessian of the training loss at theta_0 of cell {p.get('cell', '')}",
        history=f"{now_iso()} created by limiting-dynamics hessian",
        dataset=d.name,
        cell=p.get("cell", ""),
        chunk_size=chunk,
        draws=int(cfg.get("draws", 1)),
        augment_shift=shift,
        label_smoothing=label_noise,
        n_samples=n_samples,
        n_examples_per_product=int(ds.attrs["n_samples"]),
        model=json.dumps(p["model"]),
        seconds=time.perf_counter() - start,
        **provenance_attrs(p, device, cfg["precision"]),
    )
    enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype != object}
    write_netcdf(ds, a.out, enc)
    ckpt.finish()
    _log(f"Hessian at theta_0: {ds.attrs['total_hvps']} HVPs in {ds.attrs['seconds']:.1f} s -> {a.out}")


def cmd_eigenvector_drift(a) -> None:
    import torch
    import xarray as xr

    from . import hessian, training
    from .result_files import open_result
    from .trajectory import now_iso, provenance_attrs, write_netcdf

    _threads(a.threads)
    p = json.loads(a.params)
    cfg = p["hessian"]
    hp = training.Hyperparameters(**p["hyperparameters"])
    device, d, model, start = _theta0(a, p, with_checkpoint=True)
    h = open_result(a.hessian, "hessian")
    k = min(int(cfg["drift_modes"]), h.sizes["mode"])
    vectors = torch.tensor(h.hessian_eigenvectors.values[:k], dtype=torch.float32, device=device)
    eig = h.hessian_eigenvalues.values[:k]
    batches, n_samples, chunk, label_noise = _hessian_loss(p, d)
    loss = hessian.expected_loss(label_noise)
    steps = [0] + sorted(int(s) for s in cfg["drift_steps"])
    # at theta_0 the Hessian stage's own Lanczos pairs: u^T H u = lam, residual |beta_m s_m| / lam
    rq, res = [eig], [np.abs(h.hessian_eigenvalue_residual.values[:k]) / np.abs(eig)]
    clock = time.perf_counter()
    for step, m in training.replay(
        model,
        d,
        hp,
        start,
        steps[1:],
        sampling=p["sampling"],
        device=device,
        augment_shift=int(p["augment_shift"]),
        label_noise=label_noise,
        numerics=training.Numerics.from_config(p.get("numerics")),
    ):
        op = hessian.HessianOperator(
            m, batches, bn_mode=cfg["bn_mode"], device=device, loss=loss, reuse_graph=bool(cfg["reuse_graph"])
        )
        r, e = hessian.rayleigh_and_residual(op.matvec, vectors)
        rq.append(r)
        res.append(e)
        _log(
            f"step {step}: Rayleigh quotient / eigenvalue "
            + " ".join(f"{x:.2f}" for x in r / eig)
            + "; relative residual "
            + " ".join(f"{x:.2f}" for x in e)
        )
    ds = xr.Dataset(
        {
            "rayleigh_quotient": (("drift_step", "mode"), np.asarray(rq)),
            "relative_residual": (("drift_step", "mode"), np.asarray(res)),
        },
        coords={"drift_step": steps, "mode": np.arange(1, k + 1), "eigenvalue": ("mode", eig)},
    )
    meta = {
        "drift_step": ("1", "SGD steps since theta_0 (the limiting run replayed)"),
        "mode": ("1", "Hessian eigenvector of theta_0 (1 = largest eigenvalue)"),
        "eigenvalue": ("1", "eigenvalue lam_i at theta_0"),
        "rayleigh_quotient": ("1", "u_i^T H u_i with the Hessian at the step and u_i from theta_0"),
        "relative_residual": ("1", "||H u_i - (u_i^T H u_i) u_i|| / |u_i^T H u_i|: 0 for an eigenvector"),
    }
    for name, (units, long_name) in meta.items():
        ds[name].attrs.update(units=units, long_name=long_name)
    ds.attrs.update(
        Conventions="CF-1.10",
        title=f"Drift of the Hessian eigenvectors of theta_0 along the run of cell {p['cell']}",
        history=f"{now_iso()} created by limiting-dynamics eigenvector-drift",
        cell=p["cell"],
        **hp.as_dict(),
        n_samples=n_samples,
        chunk_size=chunk,
        draws=int(cfg["draws"]),
        label_smoothing=label_noise,
        bn_mode=cfg["bn_mode"],
        seconds=time.perf_counter() - clock,
        **provenance_attrs(p, device, "float32"),
    )
    write_netcdf(ds, a.out)
    _log(f"eigenvector drift of {k} modes at steps {steps} in {ds.attrs['seconds']:.1f} s -> {a.out}")


def cmd_gradient_noise(a) -> None:
    import torch
    import xarray as xr

    from . import noise
    from .result_files import open_result
    from .trajectory import now_iso, provenance_attrs, write_netcdf

    _threads(a.threads)
    p = json.loads(a.params)
    cfg = p["noise"]
    device, d, model = _theta0(a, p)
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
    ds.attrs.update(
        Conventions="CF-1.10",
        title=f"Gradient noise at theta_0 of cell {p.get('cell', '')}, batch size {bs}",
        history=f"{now_iso()} created by limiting-dynamics gradient-noise",
        **attrs,
        **provenance_attrs(p, device, "float32"),
    )
    write_netcdf(ds, a.out)
    _log(
        f"S={bs}: tr Cov(g_S) = {mb['trace_cov']:.4g} +- {mb['trace_cov_stderr']:.2g} "
        f"(S x = {bs * mb['trace_cov']:.4g}) -> {a.out}"
    )


def cmd_compare_cell(a) -> None:
    from . import comparison, trajectory
    from .result_files import open_result
    from .trajectory import now_iso, provenance_attrs, write_netcdf

    p = json.loads(a.params)
    traj = trajectory.open_trajectory(a.trajectory)
    drift = open_result(a.drift, "drift") if a.drift else None
    ds = comparison.compare_cell(
        traj,
        open_result(a.hessian, "hessian"),
        open_result(a.noise, "noise"),
        drift=drift,
        stationary_window=tuple(p["stationary_window"]),
        fit_window=tuple(p["fit_window"]),
        mode_window=tuple(p["mode_window"]),
        curvature_block=int(p["curvature_block"]),
        nperseg=int(p["spectrum_segment"]),
    )
    ds.attrs.update(
        Conventions="CF-1.10",
        title=f"Theory vs experiment for cell {ds.attrs['cell']}",
        history=f"{now_iso()} created by limiting-dynamics compare-cell",
        **provenance_attrs(p),
    )
    write_netcdf(ds, a.out)
    msg = (
        f"{ds.attrs['cell']}: c measured {ds.attrs['c_sq_dist_measured']:.3f}, "
        f"theory {ds.attrs['c_lag_msd_predicted']:.3f}"
    )
    if "position_var_measured" in ds:
        ratio = ds.position_var_measured / ds.position_var_predicted
        msg += "; position variance measured/predicted per mode: " + " ".join(f"{r:.2g}" for r in ratio.values)
    _log(msg + f" -> {a.out}")


def cmd_landscape(a) -> None:
    import torch
    import xarray as xr

    from . import hessian, landscape, trajectory
    from .result_files import open_result
    from .trajectory import now_iso, provenance_attrs, write_netcdf

    _threads(a.threads)
    p = json.loads(a.params)
    cfg = p["landscape"]
    device, d, model = _theta0(a, p)
    i, j = (int(m) for m in cfg["modes"])
    h = open_result(a.hessian, "hessian")
    traj = trajectory.open_trajectory(a.trajectory)
    if "mode_position" not in traj or traj.sizes["mode"] < max(i, j):
        raise OSError(
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
    loss = landscape.loss_plane(
        model, vecs[0], vecs[1], alphas, betas, {"train": (xs, ys), "test": (d.x_test, d.y_test)}, device
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
    }
    for k, (units, long_name) in meta.items():
        ds[k].attrs.update(units=units, long_name=long_name)
    ds.attrs.update(
        Conventions="CF-1.10",
        title=f"Loss landscape around theta_0 of cell {p['cell']}",
        history=f"{now_iso()} created by limiting-dynamics landscape",
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
        **provenance_attrs(p, device, "float32"),
    )
    write_netcdf(ds, a.out, {v: {"zlib": True, "complevel": 4} for v in ds.data_vars})
    _log(
        f"loss landscape {n}x{n} in the (u{i}, u{j}) plane in {ds.attrs['seconds']:.1f} s: train loss "
        f"{loss['train'].min():.4g}..{loss['train'].max():.4g} -> {a.out}"
    )


COMPARISON_COLUMNS = (
    "noise_curvature_slope",
    "c_sq_dist_measured",
    "c_lag_msd_sketch",
    "c_lag_msd_predicted",
    "bulk_noise_fraction",
    "sketch_over_exact_sq_dist",
    "grad_sq_norm_in_run",
    "theory_agreement_lag",
    "eigenvectors_valid_steps",
)
PREDICTION_COLUMNS = (
    "sq_step_measured",
    "sq_step_stderr",
    "sq_step_predicted_noise",
    "measured_over_noise",
    "sq_step_predicted_identity",
    "measured_over_identity",
    "sq_step_measured_si",
    "sq_step_noise_si",
    "sq_step_identity_si",
    "measured_over_noise_si",
    "measured_over_identity_si",
    "identity_ratio_min",
    "identity_ratio_median",
    "identity_ratio_max",
    "sq_step_measured_other",
    "sq_step_noise_other",
    "measured_over_noise_other",
    "other_fraction",
    "norm_drift_fraction",
    "grad_sq_norm",
    "stationarity_ratio",
)
MODE_RATIOS = {  # per-mode ratio column -> (numerator, denominator)
    "position_var_measured_over_predicted": ("position_var_measured", "position_var_predicted"),
    "velocity_var_measured_over_predicted": ("velocity_var_measured", "velocity_var_predicted"),
    "oscillation_frequency_measured_over_predicted": (
        "oscillation_frequency_measured",
        "oscillation_frequency_predicted",
    ),
    "position_var_measured_over_snapshot": ("position_var_measured", "position_var_predicted_snapshot"),
    "velocity_var_measured_over_snapshot": ("velocity_var_measured", "velocity_var_predicted_snapshot"),
    "curvature_in_run_over_eigenvalue": ("curvature_in_run", "eigenvalue"),
}


def cmd_predict(a) -> None:
    """Both parameter-free predictions of the local displacement per cell (from
    the cell analyses), the one from the noise at the snapshot theta_0 where it
    was measured, and the per-mode comparisons; reads no model (torch-free)."""
    import pandas as pd

    from . import trajectory
    from .result_files import open_result

    snapshot = {}
    for f in a.noise or []:
        attrs = dict(open_result(f, "noise").attrs)
        snapshot[str(attrs["cell"])] = float(attrs["trace_cov"])
    rows = []
    for ana in a.analyses:
        m = json.loads(Path(ana).read_text())
        row = {"cell": m["cell"], **{k: m[k] for k in trajectory.HYPERPARAMETER_ATTRS}}
        row.update({k: m[k] for k in PREDICTION_COLUMNS})
        if m["cell"] in snapshot:  # the noise of independent minibatches at theta_0 alone
            row["trace_cov_snapshot"] = snapshot[m["cell"]]
            row["sq_step_predicted_snapshot"] = m["lr"] ** 2 * snapshot[m["cell"]] / (1 - m["momentum"] ** 2)
            row["measured_over_snapshot"] = m["sq_step_measured"] / row["sq_step_predicted_snapshot"]
        rows.append(row)
    df = pd.DataFrame(rows).set_index("cell")
    mode_rows = []
    for f in a.comparisons or []:
        with open_result(f, "comparison") as cmp:
            cell = str(cmp.attrs["cell"])
            for key in COMPARISON_COLUMNS:
                if key in cmp.attrs:
                    df.loc[cell, key] = float(cmp.attrs[key])
            if "mode" in cmp.dims:
                per_mode = cmp[[v for v in cmp.data_vars if cmp[v].dims == ("mode",)]].to_dataframe()
                mode_rows.append(per_mode.reset_index().assign(cell=cell))
    modes = pd.concat(mode_rows) if mode_rows else pd.DataFrame(columns=["cell", "mode"])
    modes = modes[["cell", "mode"] + [c for c in modes.columns if c not in ("cell", "mode")]]
    for name, (num, den) in MODE_RATIOS.items():
        if num in modes and den in modes:
            modes[name] = modes[num] / modes[den]
    with atomic_path(a.out_csv) as tmp:
        df.to_csv(tmp, float_format="%.6g")
    if a.out_modes:
        with atomic_path(a.out_modes) as tmp:
            modes.to_csv(tmp, index=False, float_format="%.6g")
    if a.out_nc:
        title = "parameter-free predictions against measurements per cell"
        trajectory.write_netcdf(_cell_table_dataset(df, title, "predict", modes), a.out_nc)
    _log(
        "measured / predicted sq_step (noise formula, norm equilibrium): "
        + ", ".join(f"{c} {r.measured_over_noise:.2f} {r.measured_over_identity:.2f}" for c, r in df.iterrows())
    )


def cmd_tables(a) -> None:
    import pandas as pd

    from . import results_tables
    from .trajectory import git_revision, now_iso

    p = json.loads(a.params)
    summary = pd.read_csv(a.summary, index_col="cell")
    predictions = pd.read_csv(a.predictions, index_col="cell")
    modes = pd.read_csv(a.modes)
    text = results_tables.render(
        summary,
        predictions,
        modes,
        p["default"],
        {"date": now_iso(), "git": git_revision(), "machine": results_tables.machine()},
    )
    with atomic_path(a.out) as tmp:
        Path(tmp).write_text(text + "\n")
    _log(f"results tables of {len(summary)} runs -> {a.out}")


def _cell_table_dataset(df, title: str, command: str, modes=None):
    """A table with one row per cell (index ``cell``) as a NetCDF data set with
    the hyperparameters as coordinates and the provenance every result file
    carries (the CSV files have none); ``modes``, a table on ``(cell, mode)``,
    joins it on those two dimensions."""
    import xarray as xr

    from .trajectory import HYPERPARAMETER_ATTRS, now_iso, provenance_attrs

    ds = xr.Dataset.from_dataframe(df).set_coords(list(HYPERPARAMETER_ATTRS))
    if modes is not None and len(modes):
        per_mode = xr.Dataset.from_dataframe(modes.astype({"mode": int}).set_index(["cell", "mode"]))
        ds = xr.merge([ds, per_mode], join="outer")
        ds["mode"].attrs["long_name"] = "Hessian eigenvector index at theta_0 (1 = largest eigenvalue)"
    ds.attrs.update(
        Conventions="CF-1.10",
        title=f"Limiting dynamics of SGD: {title}",
        history=f"{now_iso()} created by limiting-dynamics {command}",
        **provenance_attrs(),
    )
    return ds


def cmd_plot(a) -> None:
    import pandas as pd
    import xarray as xr

    from . import comparison_plots, plots
    from .result_files import open_result

    p = json.loads(a.params)
    plots.setup(p["context"])
    dpi = int(p["dpi"])
    if a.figure == "convergence":
        plots.convergence(xr.load_dataset(a.inputs[0]), a.out, dpi)
        return
    if a.figure.startswith("linreg-"):
        from . import theory_plots

        cells = [xr.load_dataset(f) for f in a.inputs if f.endswith(".nc")]
        tables = [pd.read_csv(f) for f in a.inputs if f.endswith(".csv")]
        theory_plots.FIGURES[a.figure](cells, tables, a.out, dpi)
        return
    if a.figure == "hessian-spectrum":
        plots.hessian_spectrum([open_result(f, "hessian") for f in a.inputs], a.out, dpi)
        return
    if a.figure in comparison_plots.FIGURES:
        nc = [xr.load_dataset(f) for f in a.inputs if f.endswith(".nc")]
        csv = [pd.read_csv(f, index_col="cell") for f in a.inputs if f.endswith(".csv")]
        if a.figure == "theory-modes":
            comparison_plots.theory_modes(nc, csv[0], a.out, dpi)
        elif a.figure == "phase-space":
            comparison_plots.phase_space(nc[0], nc[1], a.out, dpi)
        elif a.figure == "theory-msd":
            comparison_plots.theory_msd(nc, a.out, dpi)
        elif a.figure == "noise-curvature":
            comparison_plots.noise_curvature(nc, a.out, dpi)
        elif a.figure == "eigenvector-drift":
            comparison_plots.eigenvector_drift(nc, a.out, dpi)
        else:
            comparison_plots.loss_landscape(nc[0], a.out, dpi)
        return
    if a.figure in ("ou-currents", "power-law"):
        from . import theory_plots

        theory_plots.FIGURES[a.figure](a.out, dpi)
        return
    traj = xr.load_dataset(a.inputs[0])
    summary = pd.read_csv(a.inputs[1], index_col="cell") if len(a.inputs) > 1 else None
    if a.figure == "msd":
        plots.msd(traj, summary, a.out, dpi)
    elif a.figure == "rotation":
        plots.rotation(traj, summary, a.out, dpi)
    elif a.figure == "local-displacement":
        plots.local_displacement(traj, summary, a.out, int(p["smoothing"]), dpi)
    elif a.figure == "scaling":
        plots.hyperparameter_scaling(summary, p["default"], a.out, dpi)
    elif a.figure == "metrics":
        plots.metrics(traj, a.out, dpi)


PLOT_FIGURES = [
    "convergence",
    "msd",
    "rotation",
    "local-displacement",
    "scaling",
    "metrics",
    "linreg-phase-space",
    "linreg-frequency",
    "linreg-theory",
    "linreg-sampling",
    "ou-currents",
    "power-law",
    "hessian-spectrum",
    "theory-modes",
    "phase-space",
    "theory-msd",
    "noise-curvature",
    "loss-landscape",
    "eigenvector-drift",
]

# subcommand -> (function, help, options). An option is required unless marked:
# "name+" one or more values, "name*" zero or more (default None), "name?" optional
# (default None); "threads" is the torch thread count (default 1).
COMMANDS = {
    "prepare-data": (cmd_prepare_data, "prepare a data set into a compact .npz file", "params out threads"),
    "converge": (
        cmd_converge,
        "train to convergence (or load weights) -> theta_0 checkpoint",
        "data params out-checkpoint out-history resume? checkpoint-every threads",
    ),
    "burn-in": (
        cmd_burn_in,
        "unrecorded steps at a cell's hyperparameters -> the cell's theta_0 state",
        "data checkpoint params out diverged-record resume? checkpoint-every threads",
    ),
    "run-cell": (
        cmd_run_cell,
        "limiting run of one hyperparameter cell from its burn-in state",
        "data checkpoint hessian? params out diverged-record resume? checkpoint-every threads",
    ),
    "export-trajectory": (cmd_export_trajectory, "raw record -> NetCDF trajectory", "raw params out"),
    "combine": (cmd_combine, "all cell trajectories -> one NetCDF over cells", "inputs+ cells+ out"),
    "analyze-cell": (cmd_analyze_cell, "diffusion exponent and stationary level of one cell", "trajectory params out"),
    "summarize": (
        cmd_summarize,
        "per-cell analyses -> summary CSV and NetCDF, and the spread between seeds",
        "inputs+ out-csv out-nc out-replicates",
    ),
    "hessian": (
        cmd_hessian,
        "top eigenpairs, spectral density and trace of the Hessian at theta_0",
        "data checkpoint params out resume? checkpoint-every threads",
    ),
    "eigenvector-drift": (
        cmd_eigenvector_drift,
        "how the Hessian eigenvectors of theta_0 hold along the replayed run",
        "data checkpoint hessian params out threads",
    ),
    "gradient-noise": (
        cmd_gradient_noise,
        "minibatch (and per-sample) gradient noise at theta_0 for one S",
        "data checkpoint hessian? params out threads",
    ),
    "compare-cell": (
        cmd_compare_cell,
        "theory vs experiment for one cell (phase space, lag-MSD)",
        "trajectory hessian noise drift? params out",
    ),
    "landscape": (
        cmd_landscape,
        "train/test loss on the plane of two Hessian eigenvectors around theta_0",
        "data checkpoint hessian trajectory params out threads",
    ),
    "predict": (
        cmd_predict,
        "parameter-free predictions of the stationary local displacement and per-mode comparisons per cell",
        "analyses+ noise* comparisons* out-csv out-modes? out-nc?",
    ),
    "tables": (
        cmd_tables,
        "the measured results as markdown tables (spread between seeds, targets)",
        "summary predictions modes params out",
    ),
    "linreg-cell": (cmd_linreg_cell, "linear regression on digits: SGD chains vs theory for one cell", "params out"),
    "linreg-summary": (
        cmd_linreg_summary,
        "linear-regression cells -> comparison tables",
        "inputs+ out-csv out-continuous",
    ),
    "plot": (cmd_plot, "draw one figure", "inputs+ params out"),
}
OPTION_HELP = {
    ("run-cell", "hessian"): "Hessian file whose eigenvectors the phase space is projected on",
    ("converge", "resume"): "checkpoint file of this job: resumed from when it exists, written every "
    "--checkpoint-every epochs and on SIGTERM/SIGINT, removed on success",
    ("converge", "checkpoint-every"): "epochs between checkpoints (0: only on a signal)",
    ("burn-in", "resume"): "checkpoint file of this job (as for converge)",
    ("burn-in", "checkpoint-every"): "steps between checkpoints (0: only on a signal)",
    ("run-cell", "resume"): "checkpoint file of this job (as for converge)",
    ("hessian", "resume"): "checkpoint file of this job: written after the Lanczos run and after each SLQ probe",
    ("hessian", "checkpoint-every"): "Hutchinson probes between checkpoints (0: only on a signal)",
    ("run-cell", "checkpoint-every"): "steps between checkpoints (0: only on a signal)",
    ("predict", "comparisons"): "compare-cell outputs (adds their summary columns)",
    ("predict", "out-modes"): "per-mode theory-vs-experiment table (CSV)",
    ("predict", "out-nc"): "both tables as one NetCDF file, with provenance attributes",
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="limiting-dynamics", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for command, (func, help_, options) in COMMANDS.items():
        s = sub.add_parser(command, help=help_)
        if command == "plot":
            s.add_argument("figure", choices=PLOT_FIGURES)
        for opt in options.split():
            name = opt.rstrip("+*?")
            kw = {"help": OPTION_HELP.get((command, name))}
            if opt == "threads":
                kw.update(type=int, default=1)
            elif opt == "checkpoint-every":
                kw.update(type=int, default=0)
            elif opt.endswith("+"):
                kw.update(nargs="+", required=True)
            elif opt.endswith("*"):
                kw.update(nargs="*", default=None)
            elif opt.endswith("?"):
                kw.update(default=None)
            else:
                kw.update(required=True)
            s.add_argument(f"--{name}", **kw)
        s.set_defaults(func=func)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .errors import Interrupted, LimitingDynamicsError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Interrupted as exc:
        print(f"limiting-dynamics {args.command}: interrupted: {exc}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (LimitingDynamicsError, OSError) as exc:
        print(f"limiting-dynamics {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
