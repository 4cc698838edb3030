"""The comparison stage (torch-free): theory against the network per cell."""

from __future__ import annotations

from .. import comparison, trajectory
from ..atomic import write_netcdf
from ..provenance import stamp
from ..result_files import open_result
from .common import log, params


def cmd_compare_cell(a) -> None:
    p = params(a)
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
    stamp(ds, f"Theory vs experiment for cell {ds.attrs['cell']}", "compare-cell", p)
    write_netcdf(ds, a.out)
    msg = (
        f"{ds.attrs['cell']}: c measured {ds.attrs['c_sq_dist_measured']:.3f}, "
        f"theory {ds.attrs['c_lag_msd_predicted']:.3f}"
    )
    if "position_var_measured" in ds:
        ratio = ds.position_var_measured / ds.position_var_predicted
        msg += "; position variance measured/predicted per mode: " + " ".join(f"{r:.2g}" for r in ratio.values)
    log(msg + f" -> {a.out}")
