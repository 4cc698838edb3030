"""The NetCDF results one stage hands to the next: the Hessian's layout, and
reading them checked.

A stage that reads another's output (the Hessian's eigenvectors, the noise
levels, a comparison) opens it here, so that a missing, foreign, truncated
or outdated file stops with one line naming the file and what is wrong,
instead of a ``KeyError`` deep in the analysis. Trajectories have their own,
stricter reader (:func:`.trajectory.open_trajectory`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ResultFileError
from .table_columns import HESSIAN, describe

if TYPE_CHECKING:  # xarray (0.3 s) is imported where a file is read: a burn-in job reads none
    import xarray as xr

# kind -> (variables that must be present and finite, attributes that must be present, the rule writing it)
REQUIRED = {
    "hessian": (
        ("hessian_eigenvalues", "hessian_eigenvectors", "slq_nodes", "slq_weights"),
        ("n_params", "bn_mode", "hessian_trace_hutchinson"),
        "hessian",
    ),
    "noise": ((), ("cell", "batch_size", "trace_cov", "n_train", "bn_mode"), "gradient_noise"),
    "comparison": ((), ("cell",), "compare_cell"),
    "drift": (("rayleigh_quotient", "relative_residual"), ("cell", "lr", "momentum"), "eigenvector_drift"),
}


def hessian_dataset(result, cfg: dict, device) -> xr.Dataset:
    """The Hessian stage's NetCDF layout of a :class:`.hessian.HessianAnalysis`:
    eigenpairs with their residuals, the SLQ quadrature and the smoothed density on
    512 points, the tensor sizes, and the run's settings and counts as attributes
    (``cfg``: the ``hessian`` settings it ran with)."""
    import xarray as xr

    top, dens, n = result.top, result.density, result.n_params
    lo, hi = float(dens.nodes.min()), float(dens.nodes.max())
    pad = 0.05 * (hi - lo + 1e-12)
    grid = np.linspace(lo - pad, hi + pad, 512)
    width = max((hi - lo) / 200, 1e-12)
    ds = xr.Dataset(
        {
            "hessian_eigenvalues": ("mode", top.eigenvalues),
            "hessian_eigenvalue_residual": ("mode", top.residuals),
            "hessian_eigenvectors": (("mode", "parameter"), result.eigenvectors),
            "slq_nodes": (("probe", "node"), dens.nodes),
            "slq_weights": (("probe", "node"), dens.weights),
            "spectral_density": ("eigenvalue", dens.density(grid, width)),
            "tensor_size": ("tensor", np.asarray(result.tensor_sizes)),
        },
        coords={
            "mode": np.arange(1, len(top.eigenvalues) + 1),
            "eigenvalue": grid,
            "tensor": np.asarray(result.tensor_names, dtype=object),
        },
        attrs={
            "hessian_trace_hutchinson": result.trace,
            "hessian_trace_hutchinson_stderr": result.trace_stderr,
            "hessian_trace_slq": dens.moment(1) * n,
            "n_params": n,
            "n_samples": result.n_samples,
            "n_batches": result.n_batches,
            "bn_mode": cfg["bn_mode"],
            "precision": cfg["precision"],
            "seed": int(cfg["seed"]),
            "lanczos_hvps": top.n_products,
            "lanczos_converged": int(top.converged),
            "lanczos_tol": float(cfg["tol"]),
            "slq_first_probe": "the Lanczos run's start vector (its first slq_iterations steps)",
            "total_hvps": result.total_products,
            "loss_at_theta0": result.loss,
            "grad_norm_at_theta0": result.grad_norm,
            "density_smoothing_width": width,
            "device": str(device),
            "reuse_graph": int(result.reuse_graph),
            "batches_per_pass": int(result.batches_per_pass),
        },
    )
    return describe(ds, HESSIAN)


def open_result(path: str | Path, kind: str) -> xr.Dataset:
    """Load the ``kind`` result at ``path`` into memory after checking it."""
    import xarray as xr

    variables, attrs, rule = REQUIRED[kind]
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except (OSError, ValueError, RuntimeError) as exc:
        raise ResultFileError(f"{path}: cannot be read as a NetCDF {kind} result ({exc})") from exc
    missing = [v for v in variables if v not in ds] + [a for a in attrs if a not in ds.attrs]
    if missing:
        raise ResultFileError(
            f"{path}: not a complete {kind} result (missing {', '.join(missing)}); rerun its rule ({rule})"
        )
    for v in variables:
        if not np.all(np.isfinite(ds[v].values)):
            raise ResultFileError(f"{path}: variable {v} has non-finite values; rerun its rule ({rule})")
    return ds
