"""Where the seeds' scatter of the exact distance from theta_0 lives: which tensors, and how much of it
is the change of norms (run by hand on a finished run).

    python bench/distance_by_tensor.py [--results results] [--point window_end] [--top 8]

The seeds of a cell are independent anchors of ``||theta_t - theta_0||^2``; at the mode window's
longest lag they spread 5-6 times more than the theory's one-anchor scatter (the results page).
This splits each run's exact ratio ``||theta_t - theta_0||^2 / E[...]`` at the lag the comparison
kept (``lag_at_<point>``) into parts that add up to it: per parameter tensor
(``sq_dist_from_start_by_tensor``), and as the change of norms (``sq_dist_radial``) against the
rotation. For each part it prints its mean share of the distance and its share of the between-seed
variance, ``sum_cells sum_seeds (x_part - mean) (x_total - mean) / sum (x_total - mean)^2``
(pooled within cells about each cell's own mean); the shares of a split add up to 1. A part
carried by few directions that holds much of the variance and little of the distance is what a
scatter beyond the theory's count of directions looks like.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from limiting_dynamics import replicates, results_tables


def parts_at(traj: xr.Dataset, step: int, predicted: float) -> dict[str, float]:
    """The exact ratio at ``step`` and its parts: per tensor, the change of norms, and the rotation of
    the declared scale-invariant tensors and of the rest."""
    at = traj.sel(tensor_step=step)
    by_tensor = at.sq_dist_from_start_by_tensor.values.astype(np.float64) / predicted
    si = traj.tensor_scale_invariant.values.astype(bool)
    r0 = np.sqrt(traj.sq_param_norm_start_by_tensor.values.astype(np.float64))
    r = np.sqrt(at.sq_param_norm_by_tensor.values.astype(np.float64))
    radial = (r - r0) ** 2 / predicted
    out = {
        "total": float(traj.sq_dist_from_start.sel(step=step)) / predicted,
        "radial (scale-invariant)": float(radial[si].sum()),
        "radial (other)": float(radial[~si].sum()),
        "rotation (scale-invariant)": float((by_tensor - radial)[si].sum()),
        "rotation (other)": float((by_tensor - radial)[~si].sum()),
    }
    out |= {f"tensor {name}": float(v) for name, v in zip(traj.tensor.values, by_tensor)}
    return out


def variance_shares(rows: pd.DataFrame, cell_keys: list[str]) -> pd.DataFrame:
    """Each part's mean share of the distance and share of the pooled between-seed variance."""
    parts = [c for c in rows if c not in cell_keys and c not in ("seed", "lag")]
    centred = rows[parts] - rows.groupby(cell_keys)[parts].transform("mean")
    var_total = float((centred["total"] ** 2).sum())
    return pd.DataFrame(
        {
            "share of distance": rows[parts].mean() / rows["total"].mean(),
            "share of seed variance": (centred[parts].mul(centred["total"], axis=0)).sum() / var_total,
            "sd between seeds (of the ratio)": np.sqrt(
                (centred[parts] ** 2).sum() / (len(rows) - rows.groupby(cell_keys).ngroups)
            ),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="a finished run's results directory")
    ap.add_argument("--point", default="window_end", choices=("window_end", "window_tenth"))
    ap.add_argument("--top", type=int, default=8, help="tensors shown, by share of the seed variance")
    ap.add_argument("--family", default="quadratic", help="the cells' family (the comparison's family attribute)")
    a = ap.parse_args()
    root = Path(a.results)
    cell_keys = list(replicates.HYPERPARAMETERS)
    rows = []
    pred = pd.read_csv(root / "analysis" / "predictions.csv")
    for group in results_tables._seed_cells(pred[pred[f"exact_ratio_at_{a.point}"].notna()]):  # compared cells
        cmp = xr.load_dataset(root / "analysis" / "theory" / f"{group['cell'].iloc[0]}.nc")
        if cmp.attrs.get("family") != a.family:
            continue
        for _, p in group.iterrows():
            traj = xr.load_dataset(root / "trajectories" / f"{p['cell']}.nc")
            lag = int(p[f"lag_at_{a.point}"])
            step = int(traj.tensor_step.values[np.argmin(abs(traj.tensor_step.values - lag))])
            predicted = p[f"exact_distance_at_{a.point}"] / p[f"exact_ratio_at_{a.point}"]
            rows.append(
                {k: p[k] for k in cell_keys} | {"seed": p["seed"], "lag": step} | parts_at(traj, step, predicted)
            )
    rows = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(rows[[*cell_keys, "seed", "lag", "total"]].to_string(index=False))
        shares = variance_shares(rows, cell_keys)
        groups = shares.index.str.startswith("tensor ")
        print(f"\nsplit by norm change and rotation (every cell with seeds, {len(rows)} runs):")
        print(shares[~groups].to_string())
        top = shares[groups].sort_values("share of seed variance", ascending=False).head(a.top)
        print(f"\nthe {a.top} tensors with the largest share of the seed variance (of {int(groups.sum())}):")
        print(top.to_string())
    tensors = rows[[c for c in rows if c.startswith("tensor ")]]
    centred = tensors - tensors.groupby([rows[k] for k in cell_keys]).transform("mean")
    total = centred.sum(axis=1)
    independent = float((centred**2).sum().sum() / (total**2).sum())
    common = float((shares[groups]["share of distance"] ** 2).sum())
    print(
        "\nthe tensors' parts as independent pieces would give the total's between-seed variance as the sum of theirs: "
        f"sum of the tensors' variances / the total's = {independent:.2f} (1: independent; the sum of the squared "
        f"distance shares, {common:.2f}: one common factor scales every tensor alike)"
    )


if __name__ == "__main__":
    main()
