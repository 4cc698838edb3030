"""Reading the NetCDF results one stage hands to the next, checked.

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
