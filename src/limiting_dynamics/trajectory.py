"""Trajectories as NetCDF files (format documented in docs/netcdf-format.md).

One file per cell with dimension ``step`` for the per-step record,
``eval_step`` for the eval-mode train/test metrics and ``tensor`` for the
per-parameter-tensor split; hyperparameters and provenance as global
attributes; CF-style ``units`` and ``long_name`` on every variable. Files are
written to a temporary name, validated, then renamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from . import __version__
from .errors import TrajectoryFormatError
from .geometry import geodesic_parts, rms_angle, rotation_angle
from .hyperparameters import NAMES as HYPERPARAMETER_ATTRS
from .provenance import now_iso, provenance_attrs

FORMAT_NAME = "limiting-dynamics-trajectory"
FORMAT_VERSION = 5
STEP_VARIABLES = ("train_loss", "sq_dist_from_start", "sq_step", "sq_velocity", "sq_param_norm")

# name -> (units, long_name)
VARIABLE_META = {
    "step": ("1", "number of SGD updates since theta_0"),
    "eval_step": ("1", "number of SGD updates since theta_0 at evaluation"),
    "tensor_step": ("1", "number of SGD updates since theta_0 at which per-tensor norms were recorded"),
    "tensor": ("1", "parameter tensor name (model.named_parameters order)"),
    "train_loss": ("nat", "minibatch cross-entropy of the update (train mode, at theta_{k-1})"),
    "sq_dist_from_start": ("1", "squared distance from start ||theta_k - theta_0||^2"),
    "sq_step": ("1", "squared step length ||theta_k - theta_{k-1}||^2 = lr^2 ||v_k||^2"),
    "sq_velocity": ("1", "squared norm of the momentum buffer ||v_k||^2"),
    "sq_param_norm": ("1", "squared parameter norm ||theta_k||^2"),
    "sq_dist_radial": ("1", "radial part of the squared distance: sum over tensors of (||w_k|| - ||w_0||)^2"),
    "sq_dist_angular": ("1", "non-radial part of the squared distance: sq_dist_from_start - sq_dist_radial"),
    "sq_dist_geodesic": (
        "1",
        "squared distance with the scale-invariant tensors measured along their spheres: "
        "sum of (r_k - r_0)^2 + r_k r_0 phi_k^2 over them plus the rest's squared distance",
    ),
    "rotation_angle_si": ("rad", "norm-weighted rms angle of the scale-invariant tensors from theta_0"),
    "sq_dist_from_start_by_tensor": ("1", "squared distance from start per parameter tensor"),
    "sq_param_norm_by_tensor": ("1", "squared norm per parameter tensor"),
    "sq_param_norm_start_by_tensor": ("1", "squared norm per parameter tensor at theta_0"),
    "sq_velocity_by_tensor": ("1", "squared norm of the momentum buffer per parameter tensor ||v_k||^2"),
    "sq_grad_by_tensor": (
        "1",
        "squared norm of the minibatch gradient of update k per parameter tensor, "
        "(1 - lr wd) v_k - beta v_{k-1} - wd theta_k",
    ),
    "param_dot_grad_by_tensor": (
        "1",
        "inner product <theta_{k-1}, g_k> per parameter tensor of the weights and the minibatch gradient taken "
        "at them (0 for a scale-invariant tensor)",
    ),
    "velocity_dot_grad_by_tensor": (
        "1",
        "inner product <v_{k-1}, g_k> per parameter tensor of the momentum buffer before update k and its "
        "minibatch gradient",
    ),
    "rotation_angle_by_tensor": ("rad", "angle between the parameter tensor at step k and at theta_0"),
    "tensor_scale_invariant": (
        "1",
        "1 if the model's structure makes the loss invariant to the tensor's scale (weights feeding BatchNorm), "
        "else 0 (declared; measured_scale_invariant in the analysis tests it on the run)",
    ),
    "mode_offset": ("1", "projection u_i^T theta_0 of the start on the Hessian eigenvector u_i"),
    "mode_velocity_start": ("1", "projection u_i^T v_0 of the momentum buffer at theta_0"),
    "tensor_size": ("1", "number of scalars in the parameter tensor"),
    "eval_train_loss": ("nat", "mean cross-entropy on the full training set (eval mode)"),
    "eval_train_accuracy": ("1", "accuracy on the full training set (eval mode)"),
    "eval_test_loss": ("nat", "mean cross-entropy on the test set (eval mode)"),
    "eval_test_accuracy": ("1", "accuracy on the test set (eval mode)"),
    "mode": ("1", "Hessian eigen-mode at theta_0 (1 = largest eigenvalue)"),
    "hessian_eigenvalue": ("1", "Hessian eigenvalue of the mode at theta_0"),
    "mode_position": ("1", "projection u_i^T (theta_k - theta_0) on the Hessian eigenvector u_i at theta_0"),
    "mode_velocity": ("1", "projection u_i^T v_k of the momentum buffer on the Hessian eigenvector u_i"),
    "sketch": (
        "1",
        "block-sign random sketch S (theta_k - theta_0) over randomly ordered coordinates; "
        "E||S x||^2 = ||x||^2 over the signs",
    ),
}


def radial_split(d2_by_tensor: np.ndarray, p2_by_tensor: np.ndarray, p2_start: np.ndarray) -> np.ndarray:
    """Radial part of the squared distance: ``sum_l (||w_l(t)|| - ||w_l(0)||)^2``.

    Per tensor, ``||w - w0||^2 = (r - r0)^2 + 2 r r0 (1 - cos)``; the first
    term is the change of norm (what weight decay and scale invariance drive),
    the second the rotation.
    """
    r = np.sqrt(np.maximum(p2_by_tensor, 0.0))
    r0 = np.sqrt(np.maximum(p2_start, 0.0))
    return ((r - r0[None, :]) ** 2).sum(axis=1)


def build_dataset(record: dict, attrs: dict) -> xr.Dataset:
    """The per-cell Dataset from the dict :func:`training.limiting_run` returns."""
    radial = radial_split(
        record["sq_dist_from_start_by_tensor"],
        record["sq_param_norm_by_tensor"],
        record["sq_param_norm_start_by_tensor"],
    )
    step_vars = {k: ("step", np.asarray(record[k], dtype=np.float64)) for k in STEP_VARIABLES}
    d2_total = record["sq_dist_from_start_by_tensor"].sum(axis=1)
    si = np.asarray(record["tensor_scale_invariant"], bool)
    by_tensor = (
        record["sq_dist_from_start_by_tensor"],
        record["sq_param_norm_by_tensor"],
        record["sq_param_norm_start_by_tensor"],
    )
    angles = rotation_angle(*by_tensor)
    rotation_si = rms_angle(angles[:, si], by_tensor[2][si]) if si.any() else np.zeros(len(d2_total))
    ds = xr.Dataset(
        {
            **step_vars,
            "sq_dist_radial": ("tensor_step", radial),
            "sq_dist_angular": ("tensor_step", d2_total - radial),
            "sq_dist_geodesic": ("tensor_step", geodesic_parts(*by_tensor, si).sum(axis=1)),
            "rotation_angle_si": ("tensor_step", rotation_si),
            "sq_dist_from_start_by_tensor": (("tensor_step", "tensor"), record["sq_dist_from_start_by_tensor"]),
            "sq_param_norm_by_tensor": (("tensor_step", "tensor"), record["sq_param_norm_by_tensor"]),
            "sq_param_norm_start_by_tensor": ("tensor", record["sq_param_norm_start_by_tensor"]),
            "sq_velocity_by_tensor": (("tensor_step", "tensor"), record["sq_velocity_by_tensor"]),
            "sq_grad_by_tensor": (("tensor_step", "tensor"), record["sq_grad_by_tensor"]),
            "param_dot_grad_by_tensor": (("tensor_step", "tensor"), record["param_dot_grad_by_tensor"]),
            "velocity_dot_grad_by_tensor": (("tensor_step", "tensor"), record["velocity_dot_grad_by_tensor"]),
            "rotation_angle_by_tensor": (("tensor_step", "tensor"), angles),
            "tensor_size": ("tensor", np.asarray(record["tensor_size"], dtype=np.int64)),
            "tensor_scale_invariant": ("tensor", np.asarray(record["tensor_scale_invariant"], dtype=np.int8)),
            **{
                k: ("eval_step", np.asarray(record[k], dtype=np.float64))
                for k in ("eval_train_loss", "eval_train_accuracy", "eval_test_loss", "eval_test_accuracy")
            },
        },
        coords={
            "step": np.asarray(record["step"], dtype=np.int64),
            "tensor_step": np.asarray(record["tensor_step"], dtype=np.int64),
            "eval_step": np.asarray(record["eval_step"], dtype=np.int64),
            "tensor": np.asarray(record["tensor_name"], dtype=object),
        },
    )
    if "mode_position" in record:
        ds = ds.assign_coords(mode=np.arange(1, record["mode_position"].shape[1] + 1))
        # float32: the precision they were computed in (halves the file)
        ds["mode_position"] = (("step", "mode"), np.asarray(record["mode_position"], np.float32))
        ds["mode_velocity"] = (("step", "mode"), np.asarray(record["mode_velocity"], np.float32))
        ds["mode_offset"] = ("mode", np.asarray(record["mode_offset"], np.float64))
        ds["mode_velocity_start"] = ("mode", np.asarray(record["mode_velocity_start"], np.float64))
        if "hessian_eigenvalue" in record:
            ds = ds.assign_coords(hessian_eigenvalue=("mode", np.asarray(record["hessian_eigenvalue"], float)))
    if "sketch" in record:
        ds["sketch"] = (("step", "sketch_dim"), np.asarray(record["sketch"], np.float32))
        ds["sketch"].attrs.update(sketch_seed=int(record["sketch_seed"]), sketch_block=int(record["sketch_block"]))
    for name, (units, long_name) in VARIABLE_META.items():
        if name in ds.variables:
            ds[name].attrs.update(units=units, long_name=long_name)
    ds.attrs.update(
        Conventions="CF-1.10",
        title="Limiting dynamics of SGD: per-step trajectory of one hyperparameter cell",
        format_name=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        history=f"{now_iso()} created by limiting-dynamics {__version__} (export-trajectory)",
        sq_param_norm_start=float(record["sq_param_norm_start"]),
        sq_velocity_start=float(record["sq_velocity_start"]),
        burn_in_steps=int(record["burn_in_steps"]),
        n_params=int(record["n_params"]),
        **{**provenance_attrs(), **attrs},
    )
    return ds


def encoding_for(ds: xr.Dataset, chunk_steps: int = 4096) -> dict:
    """zlib level 4 with byte shuffle on every float/int variable; step chunks of 4096.

    Per-step series compress ~2x with shuffle; chunking along ``step`` keeps
    reading a window of a long run cheap.
    """
    enc = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind not in "fiu":
            continue
        chunks = tuple(min(chunk_steps, n) if d in ("step", "tensor_step") else n for d, n in zip(var.dims, var.shape))
        enc[name] = {"zlib": True, "complevel": 4, "shuffle": True, "chunksizes": chunks}
    return enc


def validate_trajectory(ds: xr.Dataset, source: str = "trajectory") -> None:
    """Raise :class:`TrajectoryFormatError` unless ``ds`` is a complete trajectory."""
    if ds.attrs.get("format_name") != FORMAT_NAME:
        raise TrajectoryFormatError(f"{source}: not a {FORMAT_NAME} file")
    if int(ds.attrs.get("format_version", -1)) != FORMAT_VERSION:
        raise TrajectoryFormatError(
            f"{source}: format version {ds.attrs.get('format_version')} "
            f"is not the supported version {FORMAT_VERSION}; re-export it"
        )
    missing = [v for v in STEP_VARIABLES if v not in ds]
    if missing:
        raise TrajectoryFormatError(f"{source}: missing variables {missing}")
    steps = ds["step"].values
    if steps.size == 0 or steps[0] != 1 or np.any(np.diff(steps) != 1):
        raise TrajectoryFormatError(f"{source}: steps must run 1, 2, ..., N without gaps")
    for v in STEP_VARIABLES:
        if not np.all(np.isfinite(ds[v].values)):
            raise TrajectoryFormatError(f"{source}: variable {v} has non-finite values")
    for a in HYPERPARAMETER_ATTRS:
        if a not in ds.attrs:
            raise TrajectoryFormatError(f"{source}: missing attribute {a}")


def open_trajectory(path: str | Path) -> xr.Dataset:
    """Load and validate one trajectory file."""
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as exc:
        raise TrajectoryFormatError(f"{path}: cannot be read as NetCDF ({exc})") from exc
    validate_trajectory(ds, str(path))
    return ds


def combine(paths: list[str | Path], cells: list[str]) -> xr.Dataset:
    """Stack per-cell trajectories along ``cell``, hyperparameters as coordinates.

    Cells with fewer steps are padded with NaN (outer join on ``step``); the
    per-tensor and phase-space variables are left out (they stay in the
    per-cell files: each cell has its own Hessian eigenvectors).
    """
    parts = []
    for path, cell in zip(paths, cells):
        ds = open_trajectory(path)
        keep = [v for v in ds.data_vars if not {"tensor", "mode", "sketch_dim"} & set(ds[v].dims)]
        part = ds[keep].drop_vars([c for c in ("mode", "hessian_eigenvalue") if c in ds[keep].coords])
        part = part.expand_dims(cell=[cell])
        for a in HYPERPARAMETER_ATTRS + ("burn_in_steps",):
            part = part.assign_coords({a: ("cell", [ds.attrs[a]])})
        parts.append(part)
    out = xr.concat(parts, dim="cell", join="outer", combine_attrs="drop_conflicts")
    for a in HYPERPARAMETER_ATTRS:
        out[a].attrs.update(
            long_name={
                "lr": "learning rate",
                "batch_size": "batch size S",
                "momentum": "momentum beta",
                "weight_decay": "weight decay",
                "seed": "cell seed",
            }[a],
            units="1",
        )
        out.attrs.pop(a, None)
    out.attrs.pop("burn_in_steps", None)
    out["burn_in_steps"].attrs.update(long_name="SGD steps before theta_0", units="1")
    out["cell"].attrs.update(long_name="cell name (hyperparameters and seed)", units="1")
    out.attrs.update(
        title="Limiting dynamics of SGD: trajectories of all cells",
        history=f"{now_iso()} combined by limiting-dynamics {__version__} from {len(paths)} cell files",
    )
    return out
