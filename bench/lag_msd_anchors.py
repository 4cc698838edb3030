"""Is the quadratic family's lag-MSD excess at long lags sampling scatter or a drift?

Reads a finished default run (results/) and, for every cell of the quadratic
family, compares the measured lag-MSD (the run's sketch) with the stationary
prediction of the compare stage, in units of the predicted sampling standard
deviation of one run (``lag_msd_predicted_sd``), and splits the anchors of the
time average into the first and the second half of the run. A stationary run
shows no systematic difference between the halves; a run still relaxing from
its start (the burn-in too short for slow directions) moves further from
early anchors than from late ones at the same lag.

    python bench/lag_msd_anchors.py [--results results] [--out bench/lag_msd_anchors.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import xarray as xr

LAGS = (50, 100, 200, 400, 700, 1000)


def halves(sketch: np.ndarray, lag: int) -> tuple[float, float]:
    """Mean ``||s_{a+lag} - s_a||^2`` over anchors in the first and second half of the anchors."""
    d = np.sum((sketch[lag:] - sketch[:-lag]) ** 2, axis=1)
    mid = len(d) // 2
    return float(d[:mid].mean()), float(d[mid:].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="bench/lag_msd_anchors.json")
    a = ap.parse_args()
    root = Path(a.results)
    rows = []
    for cmp_path in sorted((root / "analysis" / "theory").glob("*.nc")):
        cmp = xr.load_dataset(cmp_path)
        if cmp.attrs.get("family") != "quadratic" or "lag_msd_sketch" not in cmp:
            continue
        cell = str(cmp.attrs["cell"])
        traj = xr.load_dataset(root / "trajectories" / f"{cell}.nc")
        sketch = traj.sketch.values.astype(np.float64)
        lag_axis = cmp.lag.values
        for lag in LAGS:
            if lag >= len(sketch) // 2 + 1:
                continue
            i = int(np.argmin(np.abs(lag_axis - lag)))
            lag_i = int(lag_axis[i])
            pred, sd = float(cmp.lag_msd_predicted[i]), float(cmp.lag_msd_predicted_sd[i])
            meas = float(cmp.lag_msd_sketch[i])
            early, late = halves(sketch, lag_i)
            rows.append(
                {
                    "cell": cell,
                    "lag": lag_i,
                    "measured_over_predicted": meas / pred,
                    "z": (meas - pred) / sd,
                    "relative_sd": sd / pred,
                    "early_over_predicted": early / pred,
                    "late_over_predicted": late / pred,
                }
            )
    if not rows:
        raise SystemExit(f"no quadratic-family comparison with a sketch under {root}/analysis/theory")
    print(f"{'cell':42s} {'lag':>5s} {'meas/pred':>9s} {'z':>6s} {'sd/pred':>8s} {'early':>6s} {'late':>6s}")
    for r in rows:
        print(
            f"{r['cell']:42s} {r['lag']:5d} {r['measured_over_predicted']:9.2f} {r['z']:6.2f} "
            f"{r['relative_sd']:8.2f} {r['early_over_predicted']:6.2f} {r['late_over_predicted']:6.2f}"
        )
    by_lag = {}
    for r in rows:
        by_lag.setdefault(r["lag"], []).append(r["early_over_predicted"] / r["late_over_predicted"])
    print(
        "early / late anchors, median over runs per lag:", {k: round(float(np.median(v)), 2) for k, v in by_lag.items()}
    )
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
