"""Linear-regression stages: SGD chains on least squares against the exact theory."""

from __future__ import annotations

import pandas as pd
import xarray as xr

from .. import linear_regression as lr
from ..atomic import atomic_path, write_netcdf
from ..hyperparameters import Hyperparameters
from ..provenance import stamp
from .common import log, params


def cmd_linreg_cell(a) -> None:
    p = params(a)
    problem = lr.digits_problem()
    cell = lr.Cell(
        Hyperparameters(p["lr"], p["batch_size"], p["momentum"], p["weight_decay"], p["seed"]), p["sampling"]
    )
    log(
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
        )
    except (ValueError, FloatingPointError) as exc:
        raise lr.LinearRegressionError(str(exc)) from exc
    stamp(
        ds,
        "SGD with momentum on least squares (digits): simulation vs exact and continuous theory",
        "linreg-cell",
        p,
        "cpu",
        "float64",
    )
    write_netcdf(ds, a.out, {v: {"zlib": True, "complevel": 4} for v in ds.data_vars})
    log(
        f"{cell.name}: state-dependent noise left out = "
        f"{100 * ds.attrs['state_dependent_noise_fraction']:.2f}% of tr C -> {a.out}"
    )


def cmd_linreg_summary(a) -> None:
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
    log(
        f"{len(df)} comparisons: median |z| {z.median():.2f}, max |z| {z.max():.2f} "
        f"({(z > 3).sum()} above 3) -> {a.out_csv}"
    )
