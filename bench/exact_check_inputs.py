"""How much the predicted distance from theta_0 moves with the measurement error of its own inputs,
beside the scatter of one anchor (run by hand on a finished run).

    python bench/exact_check_inputs.py [--results results] [--config config/config.yaml] [--point window_end]
        [--slopes bench/bulk_noise_spectrum.json]

The exact check compares ``||theta_t - theta_0||^2`` of each run with its prediction, and the seeds'
spread with the predicted scatter of one anchor (``exact_predicted_sd_at_<point>``). But every
seed's prediction rests on its own measurements, each with a standard error: ``tr Cov(g_S)`` of the
noise stage (``trace_cov_stderr``), the bulk's ``tr(H C)`` that sets the share of the noise in the
near-zero cluster (``trace_hcov_bulk_stderr``, from the Hessian stage's ``bulk_noise_batches``),
and the per-mode noise along the top eigenvectors (``minibatch_var_along_eigenvector_stderr``).
Their errors differ from seed to seed and so add to the spread of measured / predicted between
seeds. This reruns the comparison's lag-MSD prediction (``comparison.compare_lag_msd``) with each
input moved by one standard error and prints, per run, the relative change of the prediction at
the kept lag, their sum in quadrature, and the pooled between-seed spread against the one-anchor
scatter alone and with the input errors added. With ``--slopes`` (the output of
``bench/bulk_noise_spectrum.py``), also measured / predicted with the bulk's noise spread by the slope
measured over many eigenvectors instead of the top modes' fit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from limiting_dynamics import comparison, replicates, results_tables, theory
from limiting_dynamics.hyperparameters import Hyperparameters
from limiting_dynamics.result_files import open_result


def predicted_at(traj, hess, noise, lags, lag: int, windows: dict, slope: float | None = None) -> tuple[float, dict]:
    """The comparison's predicted ``E||theta_t - theta_0||^2`` at ``lag`` and the attributes of its lag-MSD part;
    with ``slope``, the bulk's noise spread as ``lam^slope`` instead of the top modes' fitted slope."""
    hp = Hyperparameters.from_attrs(traj.attrs)
    setting = theory.Setting(sampling=str(traj.attrs["sampling"]), n_samples=int(noise.attrs["n_train"]))
    original = comparison.noise_curvature_slope
    try:
        if slope is not None:
            comparison.noise_curvature_slope = lambda *args: slope
        part = comparison.compare_lag_msd(traj, hess, noise, hp, setting, lags, **windows)
    finally:
        comparison.noise_curvature_slope = original
    return float(part.variables["lag_msd_predicted"][1][list(lags).index(lag)]), part.attrs


def input_changes(traj, hess, noise, lags, lag: int, windows: dict) -> dict:
    """The prediction at ``lag`` and its relative change with each input one standard error up."""
    base, attrs = predicted_at(traj, hess, noise, lags, lag, windows)
    out = {"predicted": base, "near_zero_share": attrs.get("near_zero_noise_share_raw", float("nan"))}

    moved = noise.copy()
    moved.attrs = {**noise.attrs, "trace_cov": noise.attrs["trace_cov"] + noise.attrs["trace_cov_stderr"]}
    out["tr C"] = predicted_at(traj, hess, moved, lags, lag, windows)[0] / base - 1

    if "noise_weighted_curvature_bulk" in hess.attrs:
        moved = hess.copy()
        hc, c = hess.attrs["trace_hcov_bulk"], hess.attrs["trace_cov_bulk"]
        moved.attrs = {**hess.attrs, "noise_weighted_curvature_bulk": (hc + hess.attrs["trace_hcov_bulk_stderr"]) / c}
        out["tr(HC) bulk"] = predicted_at(traj, moved, noise, lags, lag, windows)[0] / base - 1

    moved = noise.copy()
    moved["minibatch_var_along_eigenvector"] = (
        noise.minibatch_var_along_eigenvector + noise.minibatch_var_along_eigenvector_stderr
    )
    out["top modes' noise"] = predicted_at(traj, hess, moved, lags, lag, windows)[0] / base - 1

    # the SLQ spectrum: each probe alone is an independent estimate; their spread over sqrt(probes) is the error
    # of the mean over probes that the prediction uses
    n = hess.sizes["probe"]
    alone = [predicted_at(traj, hess.isel(probe=[i]), noise, lags, lag, windows)[0] for i in range(n)]
    out["SLQ spectrum"] = float(np.std(alone, ddof=1) / np.sqrt(n) / base) if n > 1 else float("nan")
    # the slope of log sigma^2 against log lam over the top modes, which spreads the bulk's noise over its curvatures:
    # its least-squares standard error from the top modes' scatter about the line
    lam = hess.hessian_eigenvalues.values
    sigma2 = comparison.independent_noise(noise)
    ok = (lam > 0) & (sigma2 > 0)
    fit, cov = np.polyfit(np.log(lam[ok]), np.log(sigma2[ok]), 1, cov=True)
    out["slope"], out["slope se"] = float(fit[0]), float(np.sqrt(cov[0, 0]))
    moved = predicted_at(traj, hess, noise, lags, lag, windows, slope=out["slope"] + out["slope se"])[0]
    out["noise slope"] = moved / base - 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="a finished run's results directory")
    ap.add_argument("--config", default="config/config.yaml", help="the config the run used")
    ap.add_argument("--point", default="window_end", choices=("window_end", "window_tenth"))
    ap.add_argument("--family", default="quadratic", help="the cells' family (the comparison's family attribute)")
    ap.add_argument("--slopes", help="bench/bulk_noise_spectrum.py's output: the bulk's slope measured per cell")
    a = ap.parse_args()
    root = Path(a.results)
    analysis = yaml.safe_load(open(a.config))["analysis"]
    windows = {k: tuple(analysis[k]) for k in ("stationary_window", "fit_window")}
    slopes = json.loads(Path(a.slopes).read_text()) if a.slopes else {}
    cell_keys = list(replicates.HYPERPARAMETERS)
    cells, rows = [], []
    pred = pd.read_csv(root / "analysis" / "predictions.csv")
    for group in results_tables._seed_cells(pred[pred[f"exact_ratio_at_{a.point}"].notna()]):  # compared cells
        cmp = xr.load_dataset(root / "analysis" / "theory" / f"{group['cell'].iloc[0]}.nc")
        if cmp.attrs.get("family") != a.family:
            continue
        cells.append(group)
        lags = cmp.lag.values
        for _, p in group.iterrows():
            cell = p["cell"]
            traj = xr.load_dataset(root / "trajectories" / f"{cell}.nc")
            hess = open_result(root / "hessian" / f"{cell}.nc", "hessian")
            noise = open_result(root / "noise" / f"{cell}.nc", "noise")
            lag = int(p[f"lag_at_{a.point}"])
            changes = input_changes(traj, hess, noise, lags, lag, windows)
            inputs = [k for k in changes if k not in ("predicted", "near_zero_share", "slope", "slope se")]
            rows.append(
                {k: p[k] for k in cell_keys}
                | {"seed": p["seed"], "lag": lag, "exact ratio": p[f"exact_ratio_at_{a.point}"]}
                | {"measured": p[f"exact_distance_at_{a.point}"], "anchor sd": p[f"exact_predicted_sd_at_{a.point}"]}
                | changes
                | {"inputs sd": float(np.sqrt(sum(changes[k] ** 2 for k in inputs)))}
            )
            if cell in slopes:
                s = slopes[cell]["slope"]
                again = predicted_at(traj, hess, noise, lags, lag, windows, slope=s)[0]
                rows[-1] |= {"slope, many modes": s, "exact ratio with it": rows[-1]["measured"] / again}
    rows = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.float_format", "{:.4g}".format):
        print(rows.drop(columns=[k for k in cell_keys if k not in ("lr",)]).to_string(index=False))
    spread = results_tables._spread_between_seeds(cells, a.point)  # pooled within cells, as the results page
    print(f"measured distance: sd between seeds, relative to the cell's mean, {spread['distance_seen']:.3f}")
    print(f"predicted distance: sd between seeds, relative to the cell's mean, {spread['predictions_seen']:.3f}")
    seen, dof = spread["seen"], len(rows) - len(cells)
    anchor = float(np.sqrt((rows["anchor sd"] ** 2).mean()))
    both = float(np.sqrt((rows["anchor sd"] ** 2 + rows["inputs sd"] ** 2).mean()))
    print(
        f"\nbetween seeds (pooled within cells, {dof} degrees of freedom): sd {seen:.3f}; predicted, one anchor "
        f"{anchor:.3f} ({seen / anchor:.1f}x), one anchor and the inputs' errors {both:.3f} ({seen / both:.1f}x)"
    )


if __name__ == "__main__":
    main()
