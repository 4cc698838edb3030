"""The plot stage (torch-free): one figure from result files. :data:`FIGURES`
maps each figure name of ``limiting-dynamics plot FIGURE`` to a function of
``(inputs, params, out, dpi)`` that reads the inputs and draws."""

from __future__ import annotations

import pandas as pd
import xarray as xr

from ..plots import comparison, runs, style, theory
from ..result_files import open_result
from .common import params


def _netcdf(inputs) -> list[xr.Dataset]:
    return [xr.load_dataset(f) for f in inputs if f.endswith(".nc")]


def _tables(inputs, **kw) -> list[pd.DataFrame]:
    return [pd.read_csv(f, **kw) for f in inputs if f.endswith(".csv")]


def _trajectory_figure(draw):
    """A figure of ``all_cells.nc`` and (when given) the summary table."""

    def figure(inputs, p, out, dpi):
        summary = pd.read_csv(inputs[1], index_col="cell") if len(inputs) > 1 else None
        draw(xr.load_dataset(inputs[0]), summary, p, out, dpi)

    return figure


def _linreg_figure(draw):
    def figure(inputs, p, out, dpi):
        draw(_netcdf(inputs), _tables(inputs), out, dpi)

    return figure


def _theory_figure(draw):
    def figure(inputs, p, out, dpi):
        draw(out, dpi)

    return figure


def _comparison_cells(draw):
    def figure(inputs, p, out, dpi):
        draw(_netcdf(inputs), out, dpi)

    return figure


FIGURES = {
    "convergence": lambda inputs, p, out, dpi: runs.convergence(xr.load_dataset(inputs[0]), out, dpi),
    "msd": _trajectory_figure(lambda traj, summary, p, out, dpi: runs.msd(traj, summary, out, dpi)),
    "rotation": _trajectory_figure(lambda traj, summary, p, out, dpi: runs.rotation(traj, summary, out, dpi)),
    "local-displacement": _trajectory_figure(
        lambda traj, summary, p, out, dpi: runs.local_displacement(traj, summary, out, int(p["smoothing"]), dpi)
    ),
    "scaling": _trajectory_figure(
        lambda traj, summary, p, out, dpi: runs.hyperparameter_scaling(summary, p["default"], out, dpi)
    ),
    "metrics": _trajectory_figure(lambda traj, summary, p, out, dpi: runs.metrics(traj, out, dpi)),
    "hessian-spectrum": lambda inputs, p, out, dpi: runs.hessian_spectrum(
        [open_result(f, "hessian") for f in inputs], out, dpi
    ),
    **{name: _linreg_figure(theory.FIGURES[name]) for name in theory.FIGURES if name.startswith("linreg-")},
    "ou-currents": _theory_figure(theory.FIGURES["ou-currents"]),
    "power-law": _theory_figure(theory.FIGURES["power-law"]),
    "theory-modes": lambda inputs, p, out, dpi: comparison.theory_modes(
        _netcdf(inputs), _tables(inputs, index_col="cell")[0], out, dpi
    ),
    "phase-space": lambda inputs, p, out, dpi: comparison.phase_space(*_netcdf(inputs)[:2], out, dpi),
    "theory-msd": _comparison_cells(comparison.theory_msd),
    "noise-curvature": _comparison_cells(comparison.noise_curvature),
    "eigenvector-drift": _comparison_cells(comparison.eigenvector_drift),
    "loss-landscape": lambda inputs, p, out, dpi: comparison.loss_landscape(_netcdf(inputs)[0], out, dpi),
}


def cmd_plot(a) -> None:
    p = params(a)
    style.setup(p["context"])
    FIGURES[a.figure](a.inputs, p, a.out, int(p["dpi"]))
