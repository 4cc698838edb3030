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
import math
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from . import matched_exponents, replicates

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
    """The cell by what differs from the default cell (every such hyperparameter named)."""
    diff = [k for k in replicates.HYPERPARAMETERS if not np.isclose(float(row[k]), float(default[k]))]
    if not diff:
        return "default"
    short = {"lr": "lr", "batch_size": "S", "momentum": "beta", "weight_decay": "wd"}
    return ", ".join(f"{short[k]} {float(row[k]):g}" for k in diff)


def _family(table: pd.DataFrame) -> pd.Series:
    return table["family"] if "family" in table else pd.Series("spherical", index=table.index)


def _seed_spread(g: pd.DataFrame, column: str) -> float:
    """Relative standard deviation between seeds (NaN for one seed)."""
    return float(g[column].std(ddof=1) / g[column].mean()) if len(g) > 1 else float("nan")


def _in(values, lo: float, hi: float) -> bool:
    v = np.asarray(values, float)
    return bool(v.size) and bool(np.all((v >= lo) & (v <= hi)))


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
        rel = lambda c: _fmt(100 * _seed_spread(g, c), 1) + "%" if len(g) > 1 else "-"  # noqa: B023, E731
        predicted = "measured_over_predicted" in g and g["measured_over_predicted"].notna().any()
        rows.append(
            [
                _cell_name(r, default),
                str(_family(g).iloc[0]),
                _spread(g["sq_step_measured"], 4),
                _spread(g["measured_over_predicted"]) if predicted else "-",
                rel("measured_over_predicted") if predicted else "-",
                _spread(g["trace_cov_change"]) if "trace_cov_change" in g else "-",
                f"{int(g['sq_step_stationary'].sum())} of {len(g)}" if "sq_step_stationary" in g else "-",
                _spread(g["measured_over_in_run_check"]),
                _spread(g["momentum_gradient_correlation"], 3),
                _spread(g["measured_over_equilibrium_check"]),
                f"{int(g['scale_invariant_declared'].iloc[0])} / {int(g['scale_invariant_measured'].min())}"
                f"-{int(g['scale_invariant_measured'].max())}",
                _spread(g["norm_drift_fraction"], 3),
            ]
        )
    return _table(
        [
            "cell",
            "family",
            "measured step",
            "measured / predicted (independent noise)",
            "seed spread",
            "change of tr Cov along the run",
            "no trend in the step (runs)",
            "measured / in-run formula (check)",
            "momentum-gradient correlation",
            "measured / norm equilibrium (check)",
            "scale-invariant tensors declared / measured",
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
                _spread(g["noise_var_in_run"] / g["noise_var_independent"]),
                _spread(g["oscillation_frequency_predicted"], 3),
                _spread(g["oscillation_frequency_measured_over_predicted"]),
                _spread(g["pole_radius_measured"]),
                _spread(g["position_var_measured_over_in_run_check"]),
                _spread(g["velocity_var_measured_over_in_run_check"]),
                _spread(g["position_var_measured_over_predicted"]),
                _spread(g["velocity_var_measured_over_predicted"]),
            ]
        )
    med = lambda c: _fmt(m[c].median())  # noqa: E731
    rows.append(
        [
            "all (median)",
            "",
            _fmt(m["valid_steps"].median(), 0) if "valid_steps" in m else "-",
            med("curvature_in_run_over_eigenvalue"),
            _fmt((m["noise_var_in_run"] / m["noise_var_independent"]).median()),
            "",
            med("oscillation_frequency_measured_over_predicted"),
            med("pole_radius_measured"),
            med("position_var_measured_over_in_run_check"),
            med("velocity_var_measured_over_in_run_check"),
            med("position_var_measured_over_predicted"),
            med("velocity_var_measured_over_predicted"),
        ]
    )
    return _table(
        [
            "mode",
            "eigenvalue",
            "eigenvector valid up to step",
            "in-run curvature / eigenvalue",
            "in-run noise / independent noise",
            "predicted frequency (cycles/step)",
            "frequency measured / predicted",
            "pole radius (theory sqrt(beta))",
            "position variance / in-run check",
            "velocity variance / in-run check",
            "position variance measured / predicted",
            "velocity variance measured / predicted",
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


def _sign(v: int) -> str:
    return "+" if v > 0 else "-" if v < 0 else "0"


def matched_table(summary: pd.DataFrame, default: dict) -> str:
    """Per cell (seeds pooled): ``c`` over the fixed window of steps and over the
    family's matched windows of ``tau = lr t / (1 - beta)`` and rotation angle."""
    rows = []
    for g in _groups(summary):
        r = g.iloc[0]
        rows.append(
            [
                _cell_name(r, default),
                str(r["family"]),
                _spread(g["c"]),
                f"{_fmt(r['matched_time_lo'])}-{_fmt(r['matched_time_hi'])}",
                f"{_fmt(g['matched_time_step_lo'].mean(), 0)}-{_fmt(g['matched_time_step_hi'].mean(), 0)}",
                _spread(g["c_matched_time"]),
                _spread(g["rotation_angle_at_matched_time_hi"], 3),
                f"{_fmt(r['matched_angle_lo'], 3)}-{_fmt(r['matched_angle_hi'], 3)}",
                _spread(g["c_matched_angle"]),
            ]
        )
    return _table(
        [
            "cell",
            "family",
            "c (fixed steps)",
            "tau window",
            "its steps",
            "c at matched tau",
            "angle at tau end (rad)",
            "angle window (rad)",
            "c at matched angle",
        ],
        rows,
    )


def matched_trend_table(summary: pd.DataFrame, default: dict) -> str:
    """Per swept hyperparameter: the leading-order theory's sign of dc/dh over
    fixed steps and over matched tau, and the measured sign per seed over fixed
    steps, matched tau and matched angle (a trend is stated only when every seed
    agrees)."""
    rows = []
    for hp, name in TREND_HYPERPARAMETERS.items():
        cells = []
        for column in ("c", "c_matched_time", "c_matched_angle"):
            t = replicates.trend(summary, default, hp, column)
            if not t["signs"]:
                cells.append("-")
                continue
            per_seed = " ".join(_sign(v) for _, v in sorted(t["signs"].items()))
            verdict = f"**{_sign(t['sign'])}** in every seed" if t["agree"] else "seeds disagree: no trend"
            cells.append(f"{per_seed} ({verdict}; slope {_spread(list(t['slopes'].values()), 3).split(' [')[0]})")
        if all(c == "-" for c in cells):
            continue
        theory = matched_exponents.THEORY_SIGN
        rows.append(
            [
                name,
                _sign(theory["fixed_steps"][hp]),
                cells[0],
                _sign(theory["matched_time"][hp]),
                cells[1],
                cells[2],
            ]
        )
    return _table(
        [
            "dc / d(hyperparameter)",
            "theory, fixed steps",
            "measured, fixed steps (per seed)",
            "theory, matched tau",
            "measured, matched tau",
            "measured, matched angle",
        ],
        rows,
    )


def quadratic_modes_table(modes: pd.DataFrame, summary: pd.DataFrame, n_modes: int = 10) -> str:
    """Per quadratic cell (seeds pooled) and top mode: ``lr (lam + wd)``, whether it
    oscillates, how long its eigenvector held, and the predictions with independent noise."""
    rows = []
    for cell_lr, cells in summary.groupby("lr", sort=True):
        m = modes[modes["cell"].isin(cells.index) & (modes["mode"] <= n_modes)]
        wd = float(cells["weight_decay"].iloc[0])
        for mode, g in m.groupby("mode"):
            rows.append(
                [
                    f"{cell_lr:g}",
                    str(int(mode)),
                    _spread(g["eigenvalue"]),
                    _fmt(float(cell_lr) * float((g["eigenvalue"] + wd).mean()), 2),
                    f"{int(g['underdamped'].sum())} of {len(g)}",
                    _spread(g["valid_steps"], 0) if "valid_steps" in g else "-",
                    _spread(1 / g["oscillation_frequency_predicted"].where(g["underdamped"] > 0), 0),
                    _spread(g["oscillation_frequency_measured_over_predicted"].where(g["underdamped"] > 0)),
                    _spread(g["position_var_measured_over_predicted"]),
                    _window(g, "position"),
                    _spread(g["velocity_var_measured_over_predicted"]),
                    _window(g, "velocity"),
                    _spread(g["rayleigh_quotient_over_eigenvalue"])
                    if "rayleigh_quotient_over_eigenvalue" in g
                    else "-",
                    _spread(g["curvature_in_run_over_eigenvalue"]),
                ]
            )
    return _table(
        [
            "lr",
            "mode",
            "eigenvalue",
            "lr (lam + wd)",
            "underdamped (seeds)",
            "eigenvector valid up to step",
            "predicted period (steps)",
            "frequency measured / predicted",
            "position variance measured / predicted",
            "one window expects (sd)",
            "velocity variance measured / predicted",
            "one window expects (sd)",
            "Hessian's u^T H u at the window end / eigenvalue",
            "in-run curvature (least-squares slope) / eigenvalue",
        ],
        rows,
    )


def _window(g: pd.DataFrame, variable: str) -> str:
    """What one window expects of a variance ratio, and its standard deviation: ``bias (sd)``."""
    if f"{variable}_var_window_bias" not in g:
        return "-"
    return f"{_fmt(g[f'{variable}_var_window_bias'].mean())} ({_fmt(g[f'{variable}_var_window_sd'].mean())})"


def window_z(modes: pd.DataFrame, quadratic: pd.DataFrame, variable: str) -> pd.DataFrame:
    """Per quadratic cell (lr) and mode: the seed mean of ``{variable}`` variance
    measured / predicted, in standard deviations of what one window expects
    (``(mean - bias) / (sd / sqrt(seeds))``, bias and sd from
    :func:`.theory.window_variance_scatter`), and whether the mode's
    eigenvector held over the whole mode window in every seed. The cells share
    their seeds' minibatch draws, so only the seeds of one cell are independent."""
    if f"{variable}_var_window_sd" not in modes or not len(modes):
        return pd.DataFrame(columns=["lr", "mode", "z", "valid"])
    cells = modes["cell"]
    window = quadratic["mode_window_end"].reindex(cells).values if "mode_window_end" in quadratic else None
    held = (modes["valid_steps"].values >= window) if window is not None and "valid_steps" in modes else True
    m = modes.assign(lr=quadratic["lr"].reindex(cells).values, held=held)
    rows = []
    for (lr, mode), g in m.groupby(["lr", "mode"]):
        sd = g[f"{variable}_var_window_sd"].mean() / np.sqrt(len(g))
        z = (g[f"{variable}_var_measured_over_predicted"].mean() - g[f"{variable}_var_window_bias"].mean()) / sd
        rows.append({"lr": float(lr), "mode": int(mode), "z": float(z), "valid": bool(g["held"].all())})
    return pd.DataFrame(rows)


def held_modes(modes: pd.DataFrame, quadratic: pd.DataFrame, per_mode: pd.Series) -> pd.Series:
    """``per_mode`` (indexed by mode) kept where the mode's eigenvector held over
    the whole mode window in every seed and cell (all of it where the drift
    stage did not run)."""
    if "valid_steps" not in modes or "mode_window_end" not in quadratic:
        return per_mode
    ok = modes["valid_steps"].values >= quadratic["mode_window_end"].reindex(modes["cell"]).values
    every = modes.assign(ok=ok).groupby("mode")["ok"].all()
    return per_mode[every.reindex(per_mode.index).fillna(False).values.astype(bool)]


def targets(summary: pd.DataFrame, modes: pd.DataFrame) -> str:
    """The targets, checked on the tables: every run of both families, and
    the quadratic family's per-mode predictions (independent noise)."""
    rows = []

    def add(name, measured, ok):
        rows.append([name, measured, "yes" if ok else "no"])

    worst = summary["stationarity_ratio"].max()
    add("stationarity ratio < 3 in every run", _fmt(worst), worst < 3)
    if "measured_over_predicted" in summary and summary["measured_over_predicted"].notna().all():
        v = summary["measured_over_predicted"]
        add(
            "local displacement, measured / predicted from independent noise in [0.8, 1.25] in every run",
            f"{_fmt(v.min())}-{_fmt(v.max())}",
            _in(v, 0.8, 1.25),
        )
        rel = max(_seed_spread(g, "measured_over_predicted") for g in _groups(summary))
        add("seed spread of that ratio < 20% in every cell", _fmt(100 * rel, 1) + "%", np.isfinite(rel) and rel < 0.2)
    quad = summary[_family(summary) == "quadratic"]
    q = modes[modes["cell"].isin(quad.index)]
    if len(q):
        window = float(quad["mode_window_end"].min()) if "mode_window_end" in quad else float("nan")
        top5 = q[q["mode"] <= 5]
        if "valid_steps" in top5:
            valid = float(top5["valid_steps"].min())
            add(
                "quadratic family: top-5 eigenvectors valid over the whole mode window (shortest of every mode and "
                "seed, steps)",
                f"{_fmt(valid, 0)} of {_fmt(window, 0)}",
                valid >= window,
            )
        first = q[(q["mode"] == 1) & (q["underdamped"] > 0)]
        periods = (window * first["oscillation_frequency_predicted"]).min() if len(first) else float("nan")
        add("quadratic family: mode window >= 3 periods of mode 1 (fewest)", _fmt(periods, 1), periods >= 3)
        top10 = q[q["mode"] <= 10]
        for col, what in (("position", "position"), ("velocity", "velocity")):
            ratio = top10[f"{col}_var_measured_over_predicted"]
            per_mode = top10.assign(r=ratio).groupby("mode")["r"].mean()
            med = float(ratio.median())
            add(
                f"quadratic family: {what} variance measured / predicted, median over the top 10 modes in [0.8, 1.25]",
                _fmt(med),
                0.8 <= med <= 1.25,
            )
            kept = held_modes(top10, quad, per_mode)
            held = (
                f"; the {len(kept)} of {len(per_mode)} modes whose eigenvector holds over the window: "
                f"{_fmt(kept.min())}-{_fmt(kept.max())}"
                if 0 < len(kept) < len(per_mode)
                else ""
            )
            add(
                f"quadratic family: {what} variance, every mode (mean over seeds and cells) in [0.5, 2]",
                f"{_fmt(per_mode.min())}-{_fmt(per_mode.max())}{held}",
                _in(per_mode, 0.5, 2.0),
            )
            z = window_z(top10, quad, col).dropna(subset=["z"])  # none for reshuffled batches (no theory)
            if len(z):
                valid = z[z["valid"]]
                worst = valid.loc[valid["z"].abs().idxmax()] if len(valid) else None
                left = z[~z["valid"]]
                out = "; ".join(
                    f"mode {int(r['mode'])} at lr {r['lr']:g}: {_fmt(r['z'], 1)} sd" for _, r in left.iterrows()
                )
                add(
                    f"quadratic family (not an issue target, the test one window allows): {what} variance, per cell "
                    "and mode the seed mean of measured / predicted within 3 standard deviations of what one window "
                    "expects (`theory.window_variance_scatter`), every mode whose eigenvector holds over the window",
                    (
                        f"largest {_fmt(worst['z'], 1)} sd (mode {int(worst['mode'])} at lr {worst['lr']:g})"
                        if worst is not None
                        else "no mode valid"
                    )
                    + (f"; left out, eigenvector not valid over the window: {out}" if len(left) else ""),
                    worst is not None and abs(worst["z"]) <= 3,
                )
        osc = q[q["underdamped"] > 0]
        if len(osc):
            cell_lr = quad["lr"].reindex(osc["cell"]).values
            lam_lr = cell_lr * osc["eigenvalue"].values
            span = float(np.log10(lam_lr.max() / lam_lr.min())) if lam_lr.min() > 0 else float("nan")
            err = (osc["oscillation_frequency_measured_over_predicted"] - 1).abs()
            lost = int((osc["oscillator_fit_converged"] == 0).sum()) if "oscillator_fit_converged" in osc else 0
            add(
                f"quadratic family: frequency within 10% in every underdamped mode ({len(osc)} mode-runs over "
                f"{_fmt(span, 1)} decades of lr x lam; in {lost} the fit found no oscillation)",
                f"largest error {_fmt(100 * err.max(), 0)}%, median {_fmt(100 * err.median(), 0)}%",
                bool(err.max() <= 0.1) and span >= 1,
            )
            if "oscillation_frequency_cramer_rao" in osc:
                cr = osc["oscillation_frequency_cramer_rao"]
                z = err / cr
                add(
                    "quadratic family (not an issue target, the test one window allows): frequency error within 3 "
                    "Cramér-Rao standard deviations of one window in every underdamped mode (the bound: "
                    f"{_fmt(100 * cr.min(), 0)}-{_fmt(100 * cr.max(), 0)}%)",
                    f"largest {_fmt(z.max(), 1)} sd, median {_fmt(z.median(), 1)}",
                    bool(z.max() <= 3),
                )
        if "lag_msd_ratio_mode_window_min" in quad:
            lo, hi = quad["lag_msd_ratio_mode_window_min"].min(), quad["lag_msd_ratio_mode_window_max"].max()
            bias = ""
            if {"sketch_over_exact_sq_dist", "sketch_over_exact_lag1"} <= set(quad.columns):
                bias = (
                    "; the sketch's own error, measured against the exact values: "
                    f"{_fmt(quad['sketch_over_exact_lag1'].min())}-{_fmt(quad['sketch_over_exact_lag1'].max())} "
                    f"of the squared step, {_fmt(quad['sketch_over_exact_sq_dist'].min())}-"
                    f"{_fmt(quad['sketch_over_exact_sq_dist'].max())} of the distance from theta_0"
                )
            add(
                "quadratic family: lag-MSD measured / predicted (nothing calibrated) within 25% over the mode window "
                f"(the time average over anchors, through the sketch{bias})",
                f"{_fmt(lo)}-{_fmt(hi)}",
                lo >= 0.8 and hi <= 1.25,
            )
        if "lag_msd_exact_z_mode_window_max" in quad:
            lo = quad["lag_msd_exact_ratio_mode_window_min"].min()
            hi = quad["lag_msd_exact_ratio_mode_window_max"].max()
            z = quad["lag_msd_exact_z_mode_window_max"].max()
            own = ""
            if "single_anchor_sd_ratio_mode_window_min" in quad:
                own = (
                    "; one anchor's scatter as the run shows it over what the theory predicts for it (both through "
                    f"the sketch): {_fmt(quad['single_anchor_sd_ratio_mode_window_min'].min())}-"
                    f"{_fmt(quad['single_anchor_sd_ratio_mode_window_max'].max())}"
                )
            cells = _seed_cells(quad)
            if cells:
                a = _spread_between_seeds(cells, "window_end")
                own += (
                    f"; between seeds at lag {a['lags']}: mean {_fmt(a['mean'])} ± {_fmt(a['se'])}, spread "
                    f"{_fmt(a['seen'] / a['predicted'], 1)}x the predicted scatter of one anchor (the measured "
                    f"distance itself {_fmt(a['distance_seen'] / a['predicted'], 1)}x, the predictions "
                    f"{_fmt(a['predictions_seen'] / a['predicted'], 1)}x)"
                )
            add(
                "quadratic family (not an issue target, the exact check): the distance from theta_0, "
                "`||theta_t - theta_0||^2` recorded exactly at every step (one anchor), within 3 standard deviations "
                "of its predicted scatter at every lag of the mode window",
                f"measured / predicted {_fmt(lo)}-{_fmt(hi)}, largest deviation {_fmt(z, 1)} sd{own}",
                bool(z <= 3),
            )
    return _table(["target", "measured", "met"], rows)


def _matched_section(spherical: pd.DataFrame, summary: pd.DataFrame, default: dict) -> list[str]:
    """How ``c`` compares across cells: over fixed steps, and over matched windows of time and angle."""
    intro = (
        "To leading order the theory makes the distance from theta_0 `D(t) = [lr / (S (1 - beta))] F(tau)` with "
        '`tau = lr t / (1 - beta)` (docs/theory.md, "Comparing c across cells"): the exponent `c` is a function of '
        "`tau` alone. Over a fixed window of steps it must therefore fall with lr and beta by a change of time unit, "
        "and not depend on S. Only a difference at matched `tau` (or at matched rotation angle of the "
        "scale-invariant weights, the other clock of the spherical regime) says more than that."
    )
    if "c_matched_time" not in summary:
        return [intro, "", *trend_lines(spherical, default, "c"), ""]
    return [
        intro + " The matched windows start after three momentum memory times `1 / (1 - beta)` of the slowest "
        "cell of the family and end where the shortest run ends (`results/analysis/matched_exponents.csv`).",
        "",
        matched_table(summary, default),
        "",
        "Signs along the sweeps of the spherical family (least-squares slope of `c` against the log of lr and S "
        "and against beta, per seed, and the slope's mean ± sd over seeds; a trend is stated only where every seed "
        "agrees, and with three seeds the signs agree by chance one time in four):",
        "",
        matched_trend_table(spherical, default),
        "",
    ]


def _frequency_limit(modes: pd.DataFrame, quadratic: pd.DataFrame) -> list[str]:
    """How precisely one window can fix a frequency (Cramér-Rao), from the compared modes."""
    q = modes[modes["cell"].isin(quadratic.index)]
    if "oscillation_frequency_cramer_rao" not in q or not (q["underdamped"] > 0).any():
        return []
    osc = q[q["underdamped"] > 0]
    cr = osc["oscillation_frequency_cramer_rao"]
    radius = float(np.sqrt(quadratic["momentum"].iloc[0]))
    longer = float(((cr / 0.05) ** 2).max())
    return [
        "The frequencies are compared with their own measurement limit in mind: with the poles at radius "
        f"`sqrt(beta)` = {radius:.3f} a mode's spectral line is about {(1 - radius) / np.pi:.4f} cycles/step wide, "
        "as wide as the frequencies themselves, so one window of a few periods fixes a frequency only to within "
        "tens of percent. The best possible relative error of any unbiased estimate from the mode window "
        f"(Cramér-Rao, `spectra.frequency_cramer_rao`) is {_spread(100 * cr, 0)}% over the "
        f"{len(osc)} underdamped mode-runs, and the fit reaches about that (tests/unit/test_spectra.py, on simulated "
        "modes at these settings). Because a damped oscillator forgets its phase, the bound falls only as the "
        "square root of the window: holding every mode to 10% (two standard deviations) would take windows up to "
        f"{longer:.0f} times longer.",
        "",
    ]


def _cell_correlation(q: pd.DataFrame, quadratic: pd.DataFrame, column: str) -> float:
    """Correlation of ``column`` between the first two quadratic cells over (mode, seed) pairs."""
    m = q.assign(lr=quadratic["lr"].reindex(q["cell"]).values, seed=quadratic["seed"].reindex(q["cell"]).values)
    table = m.pivot_table(index=["mode", "seed"], columns="lr", values=column).dropna()
    return float(np.corrcoef(table.values[:, 0], table.values[:, 1])[0, 1]) if table.shape[1] >= 2 else float("nan")


def _all_within(q: pd.DataFrame, seeds: int, lo: float, hi: float) -> float:
    """Probability that every mode's seed mean of the position ratio falls in
    ``[lo, hi]`` if the theory is exact: per mode a normal with the window's
    bias and sd / sqrt(seeds) (averaged over cells), modes independent."""
    by_mode = q.groupby("mode")[["position_var_window_bias", "position_var_window_sd"]].mean()
    bias, sd = by_mode["position_var_window_bias"].values, by_mode["position_var_window_sd"].values / np.sqrt(seeds)

    def phi(z):
        return 0.5 * (1.0 + np.vectorize(math.erf)(z / np.sqrt(2.0)))

    return float(np.prod(phi((hi - bias) / sd) - phi((lo - bias) / sd)))


def _variance_limit(modes: pd.DataFrame, quadratic: pd.DataFrame) -> list[str]:
    """How precisely one window fixes a mode's variance, and what the in-run
    curvature column can and cannot say, from the compared modes."""
    q = modes[modes["cell"].isin(quadratic.index) & (modes["mode"] <= 10)]
    if "position_var_window_sd" not in q or not q["position_var_window_sd"].notna().any():
        return []  # no runs, or batches reshuffled (the one-window theory is for independent batches)
    q = q[q["position_var_window_sd"].notna()]
    seeds = quadratic.groupby("lr").size().min()
    corr = _cell_correlation(q, quadratic, "position_var_measured_over_predicted")
    lines = [
        "A variance averages over the whole spectral line, but one window of a few periods still fixes it only "
        "loosely: the modes forget their state in about `1 / (1 - sqrt(beta))` steps, so a window holds only about "
        f"{2 / float(q['position_var_window_sd'].mean()) ** 2:.0f} independent looks at a position (`2 / sd^2`, "
        "with the sd below). The theory gives the sample variance of one window exactly "
        "(`theory.window_variance_scatter`, tested on simulated windows): for the position it expects "
        f"{_spread(q['position_var_window_bias'])} of the stationary variance (the window's own mean takes out "
        f"its slowest fluctuations) with a standard deviation of {_spread(q['position_var_window_sd'])} per run; "
        f"for the velocity {_spread(q['velocity_var_window_bias'])} with {_spread(q['velocity_var_window_sd'])}. "
        "The cells of one seed share its minibatch draws (per-mode position ratios correlate between the two "
        f"cells at {_fmt(corr)} over modes and seeds), so a mean over cells is as precise as one over the "
        f"{seeds} seeds alone: about {_fmt(float(q['position_var_window_sd'].mean()) / np.sqrt(seeds))} for the "
        "position. Were the theory exact, the seed means of all "
        f"{q['mode'].nunique()} modes would land in [0.5, 2] together only with probability about "
        f"{_fmt(_all_within(q, seeds, 0.5, 2.0))} (normal approximation, the cells averaged): that target tests the "
        "window as much as the theory. The targets table also tests each mode against its own scatter.",
        "",
    ]
    if "rayleigh_quotient_over_eigenvalue" in q:
        lines += [
            "The in-run curvature (the least-squares slope of `u^T g_k` on `u^T (theta_{k-1} - theta_0)`) reads "
            f"{_spread(q['curvature_in_run_over_eigenvalue'])} of the eigenvalue, while the Hessian at the "
            f"end of the window gives `u^T H u / lam` = {_spread(q['rayleigh_quotient_over_eigenvalue'])}: over a "
            "window of a few correlation times a regression of a process on its own past is biased and scattered "
            "(the slope is exact only on long windows, tests/unit/test_comparison.py), so the curvature the "
            "predictions use is the Hessian's.",
            "",
        ]
    return lines


def _lag_msd_line(name: str, p: pd.DataFrame, steps: int) -> list[str]:
    if not {"c_lag_msd_predicted", "c_lag_msd_sketch", "theory_agreement_lag"} <= set(p.columns) or not len(p):
        return []
    return [
        f"{name}: the predicted stationary lag-MSD (Hessian spectrum at theta_0, top modes and SLQ bulk, every "
        "noise measured from independent minibatches; only how the curved bulk's noise spreads over its eigenvalues "
        "is assumed, `sigma^2 ~ lam^s` with `s` the slope measured on the top modes, "
        f"{_spread(p['bulk_noise_slope'])}) stays within 25% of the measured one (the sketch) up to lag "
        f"{_spread(p['theory_agreement_lag'], 0)} of {steps // 2}; over the fit window its exponent is "
        f"{_spread(p['c_lag_msd_predicted'])} against the measured {_spread(p['c_lag_msd_sketch'])}. "
        f"With the bulk's noise spread evenly (`s = 0`) the exponent is {_spread(p['c_lag_msd_predicted_isotropic'])},"
        f" with `C ~ H` (`s = 1`) {_spread(p['c_lag_msd_predicted_c_like_h'])}: how far the answer moves with the "
        f"assumption. The bulk carries {_spread(p['bulk_noise_fraction'])} of the measured `tr C`.",
        "",
        *_near_zero_line(p),
        *_lag_msd_scatter(p),
    ]


def _near_zero_line(p: pd.DataFrame) -> list[str]:
    """Where the two bulk assumptions differ: the near-zero cluster gets noise only with s = 0."""
    if not {"bulk_modes_near_zero", "lag_msd_ratio_isotropic_mode_window_max"} <= set(p.columns):
        return []
    measured = "near_zero_noise_share" in p and np.isfinite(p["near_zero_noise_share"]).any()
    split = (
        "Its share of the bulk's noise is measured (Hessian stage: independent minibatch noise outside the top "
        "eigenvectors meets the Hessian, `tr(H C) / tr C` = "
        f"{_spread(p['noise_weighted_curvature_bulk'], 3)}; with the rest spread as `lam^s` that gives the "
        f"cluster {_spread(p['near_zero_noise_share'])} of the bulk's noise), and the prediction uses it."
        if measured
        else "How the noise divides between that cluster and the curved bulk is not measured in this run "
        "(`hessian.bulk_noise_batches: 0`): the long-lag end of the prediction rests on it."
    )
    return [
        f"The near-zero cluster of the spectrum (SLQ nodes at or below zero, {_spread(p['bulk_modes_near_zero'], 0)} "
        "modes; curvature 0, held only by weight decay) diffuses freely over the run. " + split + " Measured (the "
        "sketch) / predicted over the mode window: "
        f"{_fmt(p['lag_msd_ratio_mode_window_min'].min())}-{_fmt(p['lag_msd_ratio_mode_window_max'].max())} with "
        "the prediction above, "
        f"{_fmt(p['lag_msd_ratio_isotropic_mode_window_min'].min())}-"
        f"{_fmt(p['lag_msd_ratio_isotropic_mode_window_max'].max())} with every bulk mode alike (`s = 0`).",
        "",
    ]


def _lag_msd_scatter(p: pd.DataFrame) -> list[str]:
    """How precisely one run measures the lag-MSD, the sketch's measured bias, and the exact test."""
    if not {"lag_msd_z_mode_window_max", "lag_msd_relative_sd_mode_window_max"} <= set(p.columns):
        return []
    lines = [
        "One run's time average fixes the lag-MSD only to within its own scatter, which the same theory predicts "
        '(docs/theory.md, "How well one run measures the lag-MSD"): at the longest lag of the mode window one '
        f"standard deviation is {_spread(100 * p['lag_msd_relative_sd_mode_window_max'], 0)}% of the lag-MSD. "
        "The largest deviation of the sketched measurement from the prediction over that window, in those units: "
        f"{_spread(p['lag_msd_z_mode_window_max'], 1)} standard deviations."
    ]
    if {"sketch_over_exact_lag1", "lag_msd_exact_z_mode_window_max"} <= set(p.columns):
        lines.append(
            "That count overstates the evidence: the time average needs the sketch (one fixed random projection), "
            "whose error does not average out over anchors. Measured against the exact values every run records, "
            f"the sketch reads {_spread(p['sketch_over_exact_lag1'], 2)} of the exact mean squared step and "
            f"{_spread(p['sketch_over_exact_sq_dist'], 2)} of the exact distance from theta_0. The exact "
            "distance from theta_0 (one anchor, scatter from the same theory) is measured / predicted "
            f"{_fmt(p['lag_msd_exact_ratio_mode_window_min'].min())}-"
            f"{_fmt(p['lag_msd_exact_ratio_mode_window_max'].max())} over the mode window, at most "
            f"{_spread(p['lag_msd_exact_z_mode_window_max'], 1)} of its standard deviations: the exact check in the "
            "targets table."
        )
    lines += _exact_between_seeds(p)
    return [" ".join(lines), ""]


def _seed_cells(p: pd.DataFrame) -> list[pd.DataFrame]:
    """The cells of ``p`` with more than one seed."""
    if "exact_ratio_at_window_end" not in p:
        return []
    return [g for g in _groups(p) if len(g) > 1]


def _spread_between_seeds(cells: list[pd.DataFrame], point: str) -> dict:
    """The exact ratio at ``point`` (``window_end`` or ``window_tenth``) over the seeds: its mean with
    standard error, its standard deviation pooled within cells (about each cell's own mean, as the
    cells' predictions differ), the same for the measured distance and for the prediction (each
    relative to its cell's mean: which of the two spreads), the predicted one-anchor standard
    deviation and the lags."""
    ratio, distance = f"exact_ratio_at_{point}", f"exact_distance_at_{point}"
    dof = sum(len(g) - 1 for g in cells)

    def pooled(values) -> float:  # the standard deviation about each cell's own mean, pooled over the cells
        return float(np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in values) / dof))

    seen = pooled(g[ratio] for g in cells)
    n = sum(len(g) for g in cells)
    lags = pd.concat(g[f"lag_at_{point}"] for g in cells)
    return {
        "mean": float(pd.concat(g[ratio] for g in cells).mean()),
        "se": seen / np.sqrt(n),
        "seen": seen,
        # the measured distance and the prediction each relative to its cell's mean: the runs' own spread, and the
        # spread of the predictions, whose inputs (Hessian, noise) are measured anew in every seed
        "distance_seen": pooled(g[distance] / g[distance].mean() for g in cells),
        "predictions_seen": pooled((g[distance] / g[ratio]) / (g[distance] / g[ratio]).mean() for g in cells),
        "predicted": float(pd.concat(g[f"exact_predicted_sd_at_{point}"] for g in cells).mean()),
        "lags": f"{_fmt(lags.min(), 0)}" + (f"-{_fmt(lags.max(), 0)}" if lags.max() > lags.min() else ""),
    }


def _exact_between_seeds(p: pd.DataFrame) -> list[str]:
    """The seeds of a cell are independent anchors: the spread of their exact ratio between them
    (pooled within cells) against the predicted scatter of one anchor, at the window's longest lag
    and at a tenth of it."""
    cells = _seed_cells(p)
    if not cells:
        return []
    parts, spreads = [], {}
    for point in ("window_tenth", "window_end"):
        a = spreads[point] = _spread_between_seeds(cells, point)
        parts.append(
            f"at lag {a['lags']} their measured / predicted has mean {_fmt(a['mean'])} ± {_fmt(a['se'])} (standard "
            f"error) and standard deviation {_fmt(a['seen'])} between seeds, against {_fmt(a['predicted'])} predicted "
            f"for one anchor ({_fmt(a['seen'] / a['predicted'], 1)}x); the measured distance itself spreads "
            f"{_fmt(a['distance_seen'])} about its cell's mean ({_fmt(a['distance_seen'] / a['predicted'], 1)}x), "
            f"the predictions {_fmt(a['predictions_seen'])}"
        )
    sizes = sorted({len(g) for g in cells})
    seeds = f"{sizes[0]}" + (f"-{sizes[-1]}" if len(sizes) > 1 else "")
    dof = sum(len(g) - 1 for g in cells)
    return [
        f"The seeds of a cell are independent anchors ({len(cells)} {'cell' if len(cells) == 1 else 'cells'} of "
        f"{seeds} seeds, {dof} degrees of freedom within cells: a standard deviation known to about "
        f"{100 / np.sqrt(2 * dof):.0f}%), which test that scatter apart from the theory: "
        + "; ".join(parts)
        + ". "
        + _exact_between_seeds_reading(spreads["window_end"])
    ]


def _exact_between_seeds_reading(end: dict) -> str:
    """What the spreads at the window's longest lag say: the runs scatter beyond one anchor's predicted
    scatter, or the predictions do, or neither (a factor 2 apart counts as a difference)."""
    if end["distance_seen"] > 2 * end["predicted"]:
        return (
            "At the longest lag the measured distance spreads well beyond the predicted scatter of one anchor: the "
            "exact check fails on that scatter, which counts every direction of an SLQ node as an independent one "
            "with the noise the spectrum gives it; a distance carried by fewer directions (a noise in fewer of them, "
            "or more of it in the flatter ones) scatters more with the same mean (tests/unit/test_comparison.py; "
            "bench/noise_directions.py counts the directions the noise spreads over)."
        )
    if end["predictions_seen"] > 2 * end["distance_seen"]:
        return (
            "At the longest lag the runs agree with one another about as the predicted scatter of one anchor says, "
            "while the predictions spread more: the excess of measured / predicted between seeds is the predictions' "
            "own, from inputs measured anew in every seed (bench/exact_check_inputs.py moves each by its standard "
            "error), not a scatter of the runs beyond the theory."
        )
    return "At the longest lag the runs and the predictions agree between seeds about as one anchor's scatter says."


def differences_table(summary: pd.DataFrame, modes: pd.DataFrame, default: dict) -> str:
    """What differs from the paper's setting, measured in the two families."""
    fam = _family(summary)
    rows = []
    for name, sub in (
        ("spherical (default cell)", summary[[_cell_name(r, default) == "default" for _, r in summary.iterrows()]]),
        ("quadratic family", summary[fam == "quadratic"]),
    ):
        if not len(sub):
            continue
        m = modes[modes["cell"].isin(sub.index)]
        rows.append(
            [
                name,
                ", ".join(sorted({f"{lr * wd:.0e}" for lr, wd in zip(sub["lr"], sub["weight_decay"])})),
                _spread(sub["rotation_angle_fit_end"]),
                _spread(m.groupby("cell")["valid_steps"].median(), 0) if "valid_steps" in m and len(m) else "-",
                _spread(sub["noise_curvature_slope"]) if "noise_curvature_slope" in sub else "-",
                _spread(sub["measured_over_equilibrium_check"]),
                _spread(sub["train_loss_end"]),
            ]
        )
    return _table(
        [
            "family",
            "lr x wd",
            "rms angle of the scale-invariant weights at the fit end (rad)",
            "top eigenvectors valid up to step (median)",
            "noise-curvature slope (1 if C ~ H)",
            "measured / norm equilibrium",
            "train loss (clean labels, eval)",
        ],
        rows,
    )


def render(
    summary: pd.DataFrame,
    predictions: pd.DataFrame,
    modes: pd.DataFrame,
    default: dict,
    provenance: dict,
    matched: pd.DataFrame | None = None,
) -> str:
    """The whole page (``matched``: the table of :mod:`.matched_exponents`, if made)."""
    summary = summary.join(predictions[[c for c in predictions.columns if c not in summary.columns]])
    if matched is not None:
        summary = summary.join(matched[[c for c in matched.columns if c not in summary.columns]])
    seeds = sorted({int(s) for s in summary["seed"]})
    fam = _family(summary)
    spherical, quadratic = summary[fam != "quadratic"], summary[fam == "quadratic"]
    lines = [
        "# Measured results of the default run",
        "",
        f"Generated by `limiting-dynamics tables` from `results/analysis/summary.csv`, `predictions.csv`, "
        f"`modes.csv` and `matched_exponents.csv` on {provenance.get('date', _dt.date.today().isoformat())} "
        f"(git {provenance.get('git', '?')}), "
        f"on {provenance.get('machine', machine())}. {len(summary)} runs: "
        f"{summary.groupby(list(replicates.HYPERPARAMETERS)).ngroups} cells x seeds {seeds}. "
        "Every interval is between seeds: mean ± standard deviation [smallest, largest]. "
        "Regenerate with `snakemake --cores all results/analysis/results.md` "
        "and copy it here (`cp results/analysis/results.md docs/results.md`).",
        "",
        "Each number is one of three kinds. A **prediction** takes its inputs from measurements made apart from "
        "what it predicts (the Hessian; the gradient noise of independent minibatches at theta_0, the middle and "
        "the end of each run). A **consistency check** shares data with what it is compared with (the in-run "
        "noise formula; the norm-equilibrium identity): it can only show that the run is what the theory assumes. "
        "**Calibrated** numbers are set from the run itself and are not compared. What differs from the paper's "
        "setting and why is in docs/differences.md.",
        "",
        "## Targets",
        "",
        targets(summary, modes),
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
        *_matched_section(spherical, summary, default),
        "`c small-angle` is fitted over a different decade in every cell (it ends where that cell's weights reach "
        "the small-angle limit), so its values are not compared across cells.",
        "",
        "## The stationary local displacement",
        "",
        "Prediction: `lr^2 tr Cov(g_S) / (1 - beta^2)` with `tr Cov(g_S)` of independent minibatches (the cell's "
        "S, sampling and label noise, BatchNorm in train mode) averaged over theta_0, the middle and the end of "
        "the run. Checks: the same formula with the gradients read off the run's momentum buffers (it differs "
        "from an identity only by the momentum-gradient correlation, shown), and the norm-equilibrium identity "
        "`2 lr wd ||theta_SI||^2 / (1 + beta)` on the tensors measured scale-invariant (median "
        "`|cos(theta, g)|` below 1e-2) plus the in-run formula on the rest. Over the second half of each run.",
        "",
        displacement_table(summary, default),
        "",
    ]
    if len(quadratic):
        lines += [
            "## The quadratic family: per-mode predictions where the eigenvectors hold",
            "",
            "Every top mode over the whole mode window; predictions from the exact discrete theory with the "
            "Hessian's eigenvalue and the independent noise along each eigenvector of theta_0 (mean over the noise "
            "points of the window). Frequencies from the damped-oscillator fit to the velocity spectra, compared "
            "only where the mode oscillates (`lr (lam + wd) > (1 - sqrt(beta))^2`). An eigenvector counts as valid "
            "while the relative residual `||H u - (u^T H u) u|| / u^T H u` of the Hessian at the drift step "
            "stays below 0.5.",
            "",
            quadratic_modes_table(modes, quadratic),
            "",
            *_frequency_limit(modes, quadratic),
            *_variance_limit(modes, quadratic),
            *_lag_msd_line("Quadratic family", quadratic, int(quadratic["steps"].max())),
        ]
    default_cells = [c for c, row in summary.iterrows() if _cell_name(row, default) == "default"]
    dmodes = modes[modes["cell"].isin(default_cells)]
    if len(dmodes):
        cell = str(dmodes["cell"].iloc[0])
        lines += [
            "## Top Hessian modes of the default cell (spherical family)",
            "",
            f"Over the first part of each run (`analysis.mode_window`), every seed of the default cell "
            f"({dmodes['cell'].nunique()} runs, e.g. `{cell}`). Here the eigenvectors of theta_0 stop being "
            "eigenvectors within a few steps, less than one oscillation period: the per-mode theory is not "
            "expected to hold, and the table shows by how much it does not. The in-run check columns use the "
            "noise and curvature read off the run along each direction; the prediction columns the independent "
            "noise.",
            "",
            modes_table(dmodes),
            "",
        ]
        p = spherical.loc[spherical.index.isin(dmodes["cell"].unique())]
        if "noise_curvature_slope" in p:
            lines += [
                "Slope of log noise against log eigenvalue over the top ten eigenvectors (1 if `C ~ H`): "
                f"{_spread(p['noise_curvature_slope'])} with the independent noise, "
                f"{_spread(p['noise_curvature_slope_in_run'])} with the in-run noise.",
                "",
            ]
        lines += _lag_msd_line("Default cell", p, int(summary["steps"].max()))
    lines += [
        "## Differences from the paper's setting, measured",
        "",
        differences_table(summary, modes, default),
        "",
    ]
    return "\n".join(lines)


RESULTS_PAGE = "results/analysis/results.md"
TARGETS_HEADING = "## Targets"


def headline(text: str, path: str = RESULTS_PAGE) -> str:
    """The targets section of the results page ``text`` (its heading and table,
    up to the next section), or one line saying that the page has none."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == TARGETS_HEADING)
    except StopIteration:
        return f"{path} has no '{TARGETS_HEADING}' section"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def after_run(made: bool, path: str = RESULTS_PAGE, figures: str = "results/figures/") -> str:
    """What the workflow prints when it succeeds (its ``onsuccess`` handler):
    with ``made`` (the results page was part of this run) the targets table of
    the page at ``path``, where the figures are and how to build the HTML
    report; otherwise, or when the page is missing, one line."""
    report = "snakemake --report report.html"
    if not made:
        return f"Results page {path} not part of this run; figures in {figures}; HTML report: {report}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return f"No results page at {path}; figures in {figures}; HTML report: {report}"
    return f"{headline(text, path)}\n\nWhole results page: {path}\nFigures: {figures}\nHTML report: {report}"
