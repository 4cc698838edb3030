"""The measured results as a markdown page, generated from the result tables.

Every number the README or docs/results.md presents comes from here
(``limiting-dynamics tables``, rule ``results_tables``), never typed by hand:
the spread between seeds of every cell, both predictions of the stationary
step, the per-mode comparison of the default cell, the trends of ``c`` that
hold in every seed, and the targets of the stationary default, each with the
machine and date it was measured on.
"""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from . import replicates

TREND_HYPERPARAMETERS = {"lr": "learning rate", "batch_size": "batch size", "momentum": "momentum"}


def machine() -> str:
    """CPU model and core count of this machine (the results' times belong to it)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import os

    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def _fmt(x, digits: int = 2) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    if x != 0 and (abs(x) < 10 ** -(digits + 1) or abs(x) >= 10**5):
        return f"{x:.{digits}e}"
    return f"{x:.{digits}f}" if abs(x) < 10 else f"{x:.{max(digits - 1, 0)}f}"


def _spread(values, digits: int = 2) -> str:
    """``mean ± sd [min, max]`` over seeds (``mean`` alone for one)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "-"
    if v.size == 1:
        return _fmt(v[0], digits)
    return (
        f"{_fmt(v.mean(), digits)} ± {_fmt(v.std(ddof=1), digits)} [{_fmt(v.min(), digits)}, {_fmt(v.max(), digits)}]"
    )


def _cell_name(row, default: dict) -> str:
    diff = [k for k in replicates.HYPERPARAMETERS if not np.isclose(float(row[k]), float(default[k]))]
    if not diff:
        return "default"
    short = {"lr": "lr", "batch_size": "S", "momentum": "beta", "weight_decay": "wd"}
    return ", ".join(f"{short[k]} {float(row[k]):g}" for k in diff)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _groups(summary: pd.DataFrame):
    for _, group in summary.groupby(list(replicates.HYPERPARAMETERS), sort=False):
        yield group


def diffusion_table(summary: pd.DataFrame, default: dict) -> str:
    rows = []
    for g in _groups(summary):
        r = g.iloc[0]
        rows.append(
            [
                _cell_name(r, default),
                str(len(g)),
                _spread(g["stationarity_ratio"]),
                _spread(g["c"]),
                _spread(g["c_geodesic"]),
                _spread(g["c_small_angle"]),
                _spread(g["small_angle_steps"], 0),
                _spread(g["rotation_angle_fit_end"]),
                f"{int(g['small_angle_fit'].sum())} of {len(g)}",
                _spread(g["train_loss_end"]),
                _spread(g["test_accuracy_end"], 3),
            ]
        )
    return _table(
        [
            "cell",
            "seeds",
            "stationarity ratio",
            "c",
            "c geodesic",
            "c small-angle",
            "small-angle steps",
            "rms angle at fit end (rad)",
            "fit window small-angle",
            "train loss (clean, eval)",
            "test accuracy",
        ],
        rows,
    )


def displacement_table(summary: pd.DataFrame, default: dict) -> str:
    rows = []
    for g in _groups(summary):
        r = g.iloc[0]
        rel = lambda c: _fmt(100 * g[c].std(ddof=1) / g[c].mean(), 1) + "%" if len(g) > 1 else "-"  # noqa: B023, E731
        rows.append(
            [
                _cell_name(r, default),
                _spread(g["sq_step_measured"], 4),
                _spread(g["measured_over_noise"]),
                rel("measured_over_noise"),
                _spread(g["measured_over_identity"]),
                rel("measured_over_identity"),
                _spread(g["measured_over_identity_si"]),
                f"{_fmt(g['identity_ratio_min'].min())}-{_fmt(g['identity_ratio_max'].max())}",
                _spread(g["other_fraction"]),
                _spread(g["norm_drift_fraction"], 3),
            ]
        )
    return _table(
        [
            "cell",
            "measured step",
            "measured / noise formula",
            "seed spread",
            "measured / equilibrium",
            "seed spread",
            "scale-invariant part / identity",
            "per tensor (all seeds)",
            "share of the other parameters",
            "norm drift term",
        ],
        rows,
    )


def modes_table(modes: pd.DataFrame, n_modes: int = 5) -> str:
    m = modes[modes["mode"] <= n_modes]
    rows = []
    for mode, g in m.groupby("mode"):
        rows.append(
            [
                str(int(mode)),
                _spread(g["eigenvalue"]),
                _spread(g["valid_steps"], 0) if "valid_steps" in g else "-",
                _spread(g["curvature_in_run_over_eigenvalue"]),
                _spread(g["noise_var"] / g["noise_var_snapshot"]),
                _spread(g["oscillation_frequency_predicted"], 3),
                _spread(g["oscillation_frequency_measured_over_predicted"]),
                _spread(g["pole_radius_measured"]),
                _spread(g["position_var_measured_over_predicted"]),
                _spread(g["velocity_var_measured_over_predicted"]),
                _spread(g["position_var_measured_over_snapshot"]),
                _spread(g["velocity_var_measured_over_snapshot"]),
            ]
        )
    med = lambda c: _fmt(m[c].median())  # noqa: E731
    rows.append(
        [
            "all (median)",
            "",
            _fmt(m["valid_steps"].median(), 0) if "valid_steps" in m else "-",
            med("curvature_in_run_over_eigenvalue"),
            _fmt((m["noise_var"] / m["noise_var_snapshot"]).median()),
            "",
            med("oscillation_frequency_measured_over_predicted"),
            med("pole_radius_measured"),
            med("position_var_measured_over_predicted"),
            med("velocity_var_measured_over_predicted"),
            med("position_var_measured_over_snapshot"),
            med("velocity_var_measured_over_snapshot"),
        ]
    )
    return _table(
        [
            "mode",
            "eigenvalue",
            "eigenvector valid up to step",
            "in-run curvature / eigenvalue",
            "in-run noise / noise at theta_0",
            "predicted frequency (cycles/step)",
            "frequency measured / predicted",
            "pole radius (theory sqrt(beta))",
            "position variance measured / predicted",
            "velocity variance measured / predicted",
            "position variance / prediction with theta_0 noise",
            "velocity variance / prediction with theta_0 noise",
        ],
        rows,
    )


def trend_lines(summary: pd.DataFrame, default: dict, column: str = "c") -> list[str]:
    out = []
    for hp, name in TREND_HYPERPARAMETERS.items():
        t = replicates.trend(summary, default, hp, column)
        if not t["signs"]:
            continue
        per_seed = ", ".join(f"seed {s}: {'+' if v > 0 else '-' if v < 0 else '0'}" for s, v in t["signs"].items())
        if t["agree"]:
            word = "increases" if t["sign"] > 0 else "decreases"
            out.append(f"- `{column}` {word} with the {name} in every seed ({per_seed}).")
        else:
            out.append(f"- `{column}` against the {name}: the seeds disagree ({per_seed}); no trend is stated.")
    return out


def targets(summary: pd.DataFrame, modes: pd.DataFrame, default: dict) -> str:
    """The issue's targets for the stationary default, checked on the tables."""
    rows = []
    worst = summary["stationarity_ratio"].max()
    rows.append(["stationarity ratio < 3 in every run", _fmt(worst), "yes" if worst < 3 else "no"])
    for col, lo, hi, name in (
        ("measured_over_noise", 0.8, 1.25, "noise formula"),
        ("measured_over_identity", 0.9, 1.1, "norm equilibrium"),
    ):
        v = summary[col]
        ok = bool(((v >= lo) & (v <= hi)).all())
        rows.append(
            [
                f"measured / {name} in [{lo}, {hi}] in every run",
                f"{_fmt(v.min())}-{_fmt(v.max())}",
                "yes" if ok else "no",
            ]
        )
        rel = max((g[col].std(ddof=1) / g[col].mean()) for g in _groups(summary)) if len(summary) > 1 else np.nan
        rows.append(
            [
                f"seed spread of measured / {name} < 20% in every cell",
                _fmt(100 * rel, 1) + "%",
                "yes" if np.isfinite(rel) and rel < 0.2 else "no",
            ]
        )
    default_cells = [c for c, row in summary.iterrows() if _cell_name(row, default) == "default"]
    top = modes[modes["cell"].isin(default_cells) & (modes["mode"] <= 5)]
    if len(top):
        med = float(top["oscillation_frequency_measured_over_predicted"].median())
        rows.append(
            [
                "default cell, top 5 modes: frequency measured / predicted in [0.7, 1.4] (median)",
                _fmt(med),
                "yes" if 0.7 <= med <= 1.4 else "no",
            ]
        )
    return _table(["target", "measured", "met"], rows)


def render(
    summary: pd.DataFrame, predictions: pd.DataFrame, modes: pd.DataFrame, default: dict, provenance: dict
) -> str:
    """The whole page."""
    seeds = sorted({int(s) for s in summary["seed"]})
    lines = [
        "# Measured results of the default run",
        "",
        f"Generated by `limiting-dynamics tables` from `results/analysis/summary.csv`, `predictions.csv` and "
        f"`modes.csv` on {provenance.get('date', _dt.date.today().isoformat())} (git {provenance.get('git', '?')}), "
        f"on {provenance.get('machine', machine())}. {len(summary)} runs: "
        f"{summary.groupby(list(replicates.HYPERPARAMETERS)).ngroups} cells x seeds {seeds}. "
        "Every interval is between seeds: mean ± standard deviation [smallest, largest]. "
        "Regenerate with `snakemake --cores all results/analysis/results.md` "
        "and copy it here (`cp results/analysis/results.md docs/results.md`).",
        "",
        "## Targets of the stationary default",
        "",
        targets(summary, modes, default),
        "",
        "## Diffusion, stationarity and the sphere",
        "",
        "`c`: exponent of `||theta_t - theta_0||^2 ~ t^c` over the fit window; `c geodesic`: the same with the "
        "scale-invariant weights measured along their spheres; `c small-angle`: fitted only up to the step at which "
        "the rms angle of those weights reaches 0.44 rad (`small-angle steps`), where a walk on a sphere starts to "
        "bend its own exponent (NaN: less than a decade). Stationarity ratio: largest over smallest 200-step "
        "rolling mean of the step.",
        "",
        diffusion_table(summary, default),
        "",
        "Trends of `c` along the sweeps (sign of the least-squares slope against the log of lr and S and "
        "against beta, per seed):",
        "",
        *trend_lines(summary, default, "c"),
        "",
        "`c small-angle` is fitted over a different decade in every cell (it ends where that cell's weights reach "
        "the small-angle limit), so its values are not compared across cells.",
        "",
        "## The stationary local displacement, predicted two ways",
        "",
        "Noise formula: `lr^2 E||g||^2 / (1 - beta^2)` with the minibatch gradients read off the run's momentum "
        "buffers. Norm equilibrium: `2 lr wd ||theta_SI||^2 / (1 + beta)` for the scale-invariant weights plus "
        "the noise formula for the other parameters. Over the second half of each run; nothing fitted.",
        "",
        displacement_table(summary, default),
        "",
    ]
    default_cells = [c for c, row in summary.iterrows() if _cell_name(row, default) == "default"]
    modes = modes[modes["cell"].isin(default_cells)]
    if len(modes):
        cell = str(modes["cell"].iloc[0])
        lines += [
            "## Top Hessian modes of the default cell",
            "",
            f"Over the first part of each run (`analysis.mode_window`), every seed of the default cell "
            f"({modes['cell'].nunique()} runs, e.g. `{cell}`). Frequencies from the damped-oscillator fit to the "
            "velocity spectra; curvature and noise along each eigenvector read off the run's momentum buffer; "
            "predictions from the exact discrete theory with that noise and the Hessian's eigenvalue (and, in the "
            "last two columns, with the noise of independent minibatches at theta_0 instead). An eigenvector counts "
            "as valid while the relative residual `||H u - (u^T H u) u|| / u^T H u` of the Hessian at the replayed "
            "step stays below 0.5.",
            "",
            modes_table(modes),
            "",
        ]
        if "noise_curvature_slope" in predictions:
            p = predictions.loc[predictions.index.isin(modes["cell"].unique())]
            lines += [
                "Slope of log in-run noise against log eigenvalue over the top ten directions (1 if `C ~ H`): "
                f"{_spread(p['noise_curvature_slope'])}.",
                "",
            ]
        if {"c_lag_msd_predicted", "c_lag_msd_sketch", "theory_agreement_lag"} <= set(predictions.columns):
            p = predictions.loc[predictions.index.isin(modes["cell"].unique())]
            lines += [
                "What a fixed quadratic explains (figure `theory_msd`): the stationary lag-MSD of the quadratic "
                "theory built from the Hessian spectrum at theta_0 (top eigenvalues and the SLQ bulk, noise "
                "proportional to curvature with the scale of the measured in-run gradients) stays within 25% of "
                "the measured one (the sketch) up to lag "
                f"{_spread(p['theory_agreement_lag'], 0)} of {int(summary['steps'].max()) // 2}; over the fit "
                f"window its exponent is {_spread(p['c_lag_msd_predicted'])} against the measured "
                f"{_spread(p['c_lag_msd_sketch'])}.",
                "",
            ]
    if "measured_over_snapshot" in predictions:
        p = predictions.dropna(subset=["measured_over_snapshot"])
        lines += [
            "Measured step over the noise formula with the noise of independent minibatches at the snapshot "
            f"theta_0 instead of along the run: {_spread(p['measured_over_snapshot'])} "
            f"({len(p)} runs).",
            "",
        ]
    return "\n".join(lines)
