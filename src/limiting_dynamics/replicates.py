"""Seeds as replicates: spread between trajectories, and trends that hold in every seed.

A cell's seed changes its burn-in and its batches, so each seed reaches its own
theta_0 and runs its own trajectory. One trajectory's bootstrap interval is the
uncertainty of a fit along it; the spread between seeds is the uncertainty of
the cell. :func:`aggregate` gives per hyperparameter cell (seeds pooled) the
mean, standard deviation, minimum and maximum of each summary column over its
seeds; :func:`trend` the sign of a column's change along a swept
hyperparameter, seed by seed, and whether every seed agrees.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .hyperparameters import NAMES

HYPERPARAMETERS = NAMES[:-1]  # a hyperparameter cell: its seeds pooled
COLUMNS = (
    "c",
    "c_geodesic",
    "c_small_angle",
    "c_radial",
    "c_angular",
    "stationarity_ratio",
    "sq_step_measured",
    "measured_over_in_run_check",
    "measured_over_equilibrium_check",
    "measured_over_equilibrium_check_si",
    "other_fraction",
    "norm_drift_fraction",
    "rotation_angle_fit_end",
    "small_angle_steps",
    "small_angle_fit",
    "grad_sq_norm",
    "train_loss_end",
    "test_accuracy_end",
)


def aggregate(summary: pd.DataFrame, columns=COLUMNS) -> pd.DataFrame:
    """One row per hyperparameter cell (``HYPERPARAMETERS``): ``n_seeds``,
    ``seeds`` and ``<column>_mean``, ``_sd`` (between seeds, ``ddof=1``; NaN
    for one seed), ``_min``, ``_max`` for each of ``columns`` present."""
    cols = [c for c in columns if c in summary.columns]
    rows = []
    for key, group in summary.groupby(list(HYPERPARAMETERS), sort=False):
        row = dict(zip(HYPERPARAMETERS, key))
        row["n_seeds"] = len(group)
        row["seeds"] = " ".join(str(int(s)) for s in sorted(group["seed"]))
        for c in cols:
            v = group[c].astype(float)
            row.update(
                {
                    f"{c}_mean": v.mean(),
                    f"{c}_sd": v.std(ddof=1) if len(v) > 1 else np.nan,
                    f"{c}_min": v.min(),
                    f"{c}_max": v.max(),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def sweep(summary: pd.DataFrame, default: dict, hp: str) -> pd.DataFrame:
    """The cells equal to ``default`` in every hyperparameter but ``hp`` (all seeds)."""
    mask = np.ones(len(summary), bool)
    for k in HYPERPARAMETERS:
        if k != hp:
            mask &= np.isclose(summary[k].astype(float), float(default[k]))
    return summary[mask]


def trend(summary: pd.DataFrame, default: dict, hp: str, column: str) -> dict:
    """Sign of the least-squares slope of ``column`` against ``hp`` along its
    sweep, per seed (seeds with at least two values of ``hp``): ``signs``
    (seed -> -1, 0 or +1) and the ``slopes`` themselves, ``agree`` (every seed
    has the same non-zero sign) and that ``sign`` (0 when they disagree or no
    seed has a sweep)."""
    sub = sweep(summary, default, hp)
    signs, slopes = {}, {}
    for seed, group in sub.groupby("seed"):
        x, y = group[hp].astype(float).values, group[column].astype(float).values
        ok = np.isfinite(y)
        if len(np.unique(x[ok])) >= 2:
            slopes[int(seed)] = float(np.polyfit(np.log(x[ok]) if hp != "momentum" else x[ok], y[ok], 1)[0])
            signs[int(seed)] = int(np.sign(slopes[int(seed)]))
    values = set(signs.values())
    agree = len(signs) > 0 and len(values) == 1 and 0 not in values
    return {"signs": signs, "slopes": slopes, "agree": agree, "sign": values.pop() if agree else 0}
