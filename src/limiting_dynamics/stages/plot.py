"""The plot stage (torch-free): one figure from result files. :data:`FIGURES`
maps each figure name of ``limiting-dynamics plot FIGURE`` to a function of
``(inputs, params, out, dpi)`` that reads what the figure needs and draws it."""

from __future__ import annotations

import pandas as pd
import xarray as xr

from ..plots import comparison, runs, style, theory
from ..result_files import open_result
from .common import params


def _netcdf(inputs) -> list[xr.Dataset]:
    return [xr.load_dataset(f) for f in inputs if f.endswith(".nc")]


def _tables(inputs) -> list[pd.DataFrame]:
    return [pd.read_csv(f) for f in inputs if f.endswith(".csv")]


def _summary(inputs) -> pd.DataFrame | None:
    """The per-cell table among the inputs (``summary.csv`` or ``predictions.csv``), if any."""
    csv = [f for f in inputs if f.endswith(".csv")]
    return pd.read_csv(csv[0], index_col="cell") if csv else None


# fmt: off
FIGURES = {
    "convergence": lambda i, p, o, d: runs.convergence(xr.load_dataset(i[0]), o, d),
    "msd": lambda i, p, o, d: runs.msd(xr.load_dataset(i[0]), _summary(i), o, d),
    "rotation": lambda i, p, o, d: runs.rotation(xr.load_dataset(i[0]), _summary(i), o, d),
    "local-displacement": lambda i, p, o, d: runs.local_displacement(
        xr.load_dataset(i[0]), _summary(i), o, int(p["smoothing"]), d),
    "scaling": lambda i, p, o, d: runs.hyperparameter_scaling(_summary(i), p["default"], o, d),
    "metrics": lambda i, p, o, d: runs.metrics(xr.load_dataset(i[0]), o, d),
    "hessian-spectrum": lambda i, p, o, d: runs.hessian_spectrum([open_result(f, "hessian") for f in i], o, d),
    "linreg-phase-space": lambda i, p, o, d: theory.phase_space(_netcdf(i), _tables(i), o, d),
    "linreg-frequency": lambda i, p, o, d: theory.frequency(_netcdf(i), _tables(i), o, d),
    "linreg-theory": lambda i, p, o, d: theory.theory_vs_simulation(_netcdf(i), _tables(i), o, d),
    "linreg-sampling": lambda i, p, o, d: theory.sampling(_netcdf(i), _tables(i), o, d),
    "ou-currents": lambda i, p, o, d: theory.ou_currents(o, d),
    "power-law": lambda i, p, o, d: theory.power_law(o, d),
    "theory-modes": lambda i, p, o, d: comparison.theory_modes(_netcdf(i), _summary(i), o, d),
    "theory-validity": lambda i, p, o, d: comparison.theory_validity(_netcdf(i), o, d),
    "phase-space": lambda i, p, o, d: comparison.phase_space(*_netcdf(i)[:2], o, d),
    "theory-msd": lambda i, p, o, d: comparison.theory_msd(_netcdf(i), o, d),
    "noise-curvature": lambda i, p, o, d: comparison.noise_curvature(_netcdf(i), o, d),
    "eigenvector-drift": lambda i, p, o, d: comparison.eigenvector_drift(_netcdf(i), o, d),
    "loss-landscape": lambda i, p, o, d: comparison.loss_landscape(_netcdf(i)[0], o, d),
}
# fmt: on


def cmd_plot(a) -> None:
    p = params(a)
    style.setup(p["context"])
    FIGURES[a.figure](a.inputs, p, a.out, int(p["dpi"]))
