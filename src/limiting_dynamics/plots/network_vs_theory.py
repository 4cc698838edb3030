"""Theory-vs-experiment figures of the ResNet cells (inputs: compare-cell outputs,
predictions table, trajectories, loss landscape)."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from ..comparison import VALID_RESIDUAL, agreement_lag, valid_steps
from .style import grid, plt, save


def _cell_label(ds: xr.Dataset) -> str:
    """Every hyperparameter of the cell (cells that differ only in one of them get different labels)."""
    a = ds.attrs
    return (
        f"lr={a['lr']:.3g}, S={int(a['batch_size'])}, β={a['momentum']:.3g}, wd={a['weight_decay']:.3g}, "
        f"seed {int(a.get('seed', 0))}"
    )


def _family(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("family", "spherical"))


DEFAULT_MODES = 5  # the spherical default cell's modes the tables and figures compare (results page)
QUADRATIC_MODES = 10  # the quadratic family's


def _run_colours(cells: list[xr.Dataset]) -> dict[str, tuple]:
    """One colour per run over every family drawn, so a colour names one run in every panel."""
    labels = list(dict.fromkeys(_cell_label(ds) for ds in cells))
    palette = sns.color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))
    return dict(zip(labels, palette))


def _fit_found_oscillation(sel: xr.Dataset) -> np.ndarray:
    """Per mode, whether the oscillator fit found an oscillation (files without the flag: all)."""
    if "oscillator_fit_converged" in sel:
        return sel.oscillator_fit_converged.values > 0
    return np.ones(sel.sizes["mode"], bool)


def _on_bottom_edge(ax, x, color) -> None:
    """Mark values that have no place on a log axis (a fit that found no oscillation
    stops at the bound of its search) on the axes' bottom edge at their x."""
    x = np.asarray(x, float)
    if x.size:
        ax.scatter(
            x, np.full(x.shape, 0.0), transform=ax.get_xaxis_transform(), marker="v", s=30, color=color, clip_on=False
        )


def _identity(ax, values) -> None:
    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x) and x > 0])
    if v.size:
        lo, hi = v.min() / 2, v.max() * 2
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", zorder=0)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def theory_modes(cells: list[xr.Dataset], predictions: pd.DataFrame, path, dpi: int) -> None:
    """Per family (rows: the spherical default cell's top 5 modes, the quadratic
    family's top 10, the same sets as the results page), measured against
    predicted position and velocity variance (filled: prediction with the
    independent noise; open: the in-run consistency check) and the oscillation
    frequency of the fitted damped oscillator (underdamped modes only); and per
    run the stationary local displacement against its prediction from
    independent noise (open: the two consistency checks)."""
    families = [f for f in ("spherical", "quadratic") if any(_family(ds) == f and "mode" in ds.dims for ds in cells)]
    fig, axes = plt.subplots(max(1, len(families)), 4, figsize=(18, 4.4 * max(1, len(families))), squeeze=False)
    handles = {}
    colours = _run_colours([ds for ds in cells if _family(ds) in families and "mode" in ds.dims])
    for row, fam in enumerate(families):
        group = [ds for ds in cells if _family(ds) == fam and "mode" in ds.dims]
        n = DEFAULT_MODES if fam == "spherical" else QUADRATIC_MODES
        colors = [colours[_cell_label(ds)] for ds in group]
        for (key, title), ax in zip(
            (
                ("position_var", "position variance $u_i^T\\theta$"),
                ("velocity_var", "velocity variance $u_i^T v$"),
                ("oscillation_frequency", "oscillation frequency (cycles/step), underdamped modes"),
            ),
            axes[row],
        ):
            allv, ratios, lost = [], [], 0
            for ds, color in zip(group, colors):
                sel = ds.isel(mode=slice(0, n))
                keep = (
                    sel.underdamped.values > 0 if key == "oscillation_frequency" else np.ones(sel.sizes["mode"], bool)
                )
                x, y = sel[f"{key}_predicted"].values[keep], sel[f"{key}_measured"].values[keep]
                ratios.append(y / x)  # the median counts every compared mode, as the results page does
                if key == "oscillation_frequency":  # a fit that found no oscillation has no frequency to draw
                    found = _fit_found_oscillation(sel)[keep]
                    _on_bottom_edge(ax, x[~found], color)
                    lost += int((~found).sum())
                    x, y = x[found], y[found]
                h = ax.scatter(x, y, s=16, color=color)
                handles.setdefault(_cell_label(ds), h)
                if f"{key}_in_run_check" in sel:
                    xs = sel[f"{key}_in_run_check"].values[keep]
                    ax.scatter(xs, y, s=16, facecolors="none", edgecolors=color, lw=0.6)
                    allv.append(xs)
                allv += [x, y]
            _identity(ax, np.concatenate(allv) if allv else [])
            ratio = np.concatenate(ratios) if ratios else np.array([np.nan])
            ax.set(
                xlabel="predicted (exact discrete theory)",
                ylabel="measured",
                title=f"{fam}: {title}\nmedian measured/predicted {np.nanmedian(ratio):.2g} "
                f"(top {n} modes, {len(group)} runs)"
                + (f"\n▼ on the bottom edge: {lost} fits found no oscillation" if lost else ""),
            )
            ax.title.set_fontsize(9)
    ax = axes[0, 3]
    p = predictions
    if "sq_step_predicted" in p:
        ax.errorbar(
            p["sq_step_predicted"], p["sq_step_measured"], yerr=2 * p["sq_step_stderr"], fmt="o", ms=4, color="C0"
        )
    ax.scatter(p["sq_step_in_run_check"], p["sq_step_measured"], s=16, facecolors="none", edgecolors="C1", lw=0.8)
    ax.scatter(
        p["sq_step_equilibrium_check"],
        p["sq_step_measured"],
        s=18,
        marker="^",
        facecolors="none",
        edgecolors="C3",
        lw=0.8,
    )
    _identity(
        ax, np.concatenate([p[c] for c in ("sq_step_predicted", "sq_step_in_run_check", "sq_step_measured") if c in p])
    )
    ax.set(
        xlabel="predicted (filled) or consistency check (open)",
        ylabel="measured",
        title="stationary $\\|\\theta_{k+1}-\\theta_k\\|^2$ per run\n"
        f"median measured/predicted {np.median(p.get('measured_over_predicted', np.nan)):.2g} (independent noise)",
    )
    ax.title.set_fontsize(9)
    from matplotlib.lines import Line2D

    ax.legend(
        [
            Line2D([], [], marker="o", ls="", color="C0"),
            Line2D([], [], marker="o", ls="", mfc="none", color="C1"),
            Line2D([], [], marker="^", ls="", mfc="none", color="C3"),
        ],
        ["prediction: independent noise", "check: in-run formula", "check: norm equilibrium"],
        fontsize=6,
        loc="upper left",
    )
    for r in range(1, len(families)):
        axes[r, 3].axis("off")
    fig.legend(list(handles.values()), list(handles), fontsize=6, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(
        "Theory vs experiment: Hessian at each run's $\\theta_0$, gradient noise of independent minibatches "
        "(filled: prediction); open markers: the same theory with the noise read off the run (consistency check)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, path, dpi)


def theory_validity(cells: list[xr.Dataset], path, dpi: int) -> None:
    """Where the quadratic theory holds: per run (both families) against the
    learning rate, how long the top eigenvectors of theta_0 stay eigenvectors
    (with the mode window) and the per-mode measured / predicted ratios."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    markers = {"spherical": "o", "quadratic": "s"}
    panels = (
        (
            "position_var_measured_over_predicted",
            "position variance measured / predicted\norange: what one window expects, ± 2 sd",
        ),
        (
            "velocity_var_measured_over_predicted",
            "velocity variance measured / predicted\norange: what one window expects, ± 2 sd",
        ),
        (
            "oscillation_frequency_measured_over_predicted",
            "frequency measured / predicted (underdamped)\nbars: ± 2 Cramér-Rao sd of one window\n"
            "red ▼ on the edge: the fit found no oscillation",
        ),
    )
    for ds in cells:
        if "mode" not in ds.dims:
            continue
        fam, lr = _family(ds), float(ds.attrs["lr"])
        n = min(ds.sizes["mode"], DEFAULT_MODES if fam == "spherical" else QUADRATIC_MODES)
        sel = ds.isel(mode=slice(0, n))
        if "valid_steps" in sel:
            v = sel.valid_steps.values[:DEFAULT_MODES]
            axes[0].scatter(np.full(v.shape, lr), np.maximum(v, 0.5), marker=markers[fam], s=14, color="C0")
            axes[0].scatter([lr], [float(ds.attrs["mode_window_end"])], marker="_", s=200, color="C3")
        ratios = {
            "position_var_measured_over_predicted": sel.position_var_measured / sel.position_var_predicted,
            "velocity_var_measured_over_predicted": sel.velocity_var_measured / sel.velocity_var_predicted,
            "oscillation_frequency_measured_over_predicted": (
                sel.oscillation_frequency_measured / sel.oscillation_frequency_predicted
            ).where(sel.underdamped > 0),
        }
        found = _fit_found_oscillation(sel)
        for ax, (key, _) in zip(axes[1:], panels):
            r = ratios[key].values
            if key.startswith("oscillation"):  # no oscillation found: on the bottom edge, not at the search's bound
                _on_bottom_edge(ax, np.full(int((np.isfinite(r) & ~found).sum()), lr), "C3")
                r = np.where(found, r, np.nan)
            ax.scatter(np.full(r.shape, lr), r, marker=markers[fam], s=12, color="C0", alpha=0.6)
            if key.startswith("oscillation") and "oscillation_frequency_cramer_rao" in sel:
                # what one window allows: two Cramer-Rao standard deviations about each measured ratio
                sd = sel.oscillation_frequency_cramer_rao.where(sel.underdamped > 0).values
                ok = np.isfinite(r) & np.isfinite(sd)
                lower = np.minimum(2 * sd[ok], 0.95 * r[ok])
                ax.errorbar(np.full(ok.sum(), lr), r[ok], yerr=[lower, 2 * sd[ok]], fmt="none", ecolor="C1", lw=0.7)
            elif not key.startswith("oscillation") and f"{(var := key.split('_')[0])}_var_window_sd" in sel:
                # what one window expects of the ratio, +- 2 sd (the modes share about the same band)
                bias = float(np.nanmean(sel[f"{var}_var_window_bias"]))
                sd = float(np.nanmean(sel[f"{var}_var_window_sd"]))
                ax.vlines(lr, max(bias - 2 * sd, 0.05), bias + 2 * sd, color="C1", lw=7, alpha=0.2, zorder=0)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="learning rate",
        ylabel="steps",
        title="top-5 eigenvectors of $\\theta_0$ valid up to step\n(red bar: end of the mode window)",
    )
    for ax, (_, title) in zip(axes[1:], panels):
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.axhspan(0.8, 1.25, color="C2", alpha=0.12, zorder=0)
        ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="ratio", title=title)
    from matplotlib.lines import Line2D

    fig.legend(
        [Line2D([], [], marker=m, ls="", color="C0") for m in markers.values()],
        ["spherical family (norm equilibrium)", "quadratic family (small lr x wd)"],
        loc="lower center",
        ncol=2,
        frameon=False,
        fontsize=8,
    )
    fig.suptitle(
        "Where the quadratic per-mode theory holds: eigenvector lifetime and measured / predicted per mode "
        "(green: within [0.8, 1.25]), every run of both families",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, path, dpi)


def _ellipse(var_x: float, var_v: float, cov: float, n_std: float = 2.0, n: int = 200) -> np.ndarray:
    vals, vecs = np.linalg.eigh(np.array([[var_x, cov], [cov, var_v]]))
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (vecs @ (np.sqrt(np.maximum(vals, 0))[:, None] * circle)) * n_std


def phase_space(
    traj: xr.Dataset, comparison: xr.Dataset, path, dpi: int, n_modes: int = 3, last_steps: int = 400
) -> None:
    """Position against velocity along the top Hessian eigenvectors (the last
    ``last_steps`` steps of the mode window, or two periods of mode 1 if longer,
    coloured by time), with the
    theory's stationary 95% ellipse about the window's mean; bottom row:
    position over the whole run with the mode window shaded."""
    k = min(n_modes, traj.sizes["mode"])
    fig, axes = plt.subplots(2, k, figsize=(4.3 * k, 7.2), squeeze=False)
    pos, vel = traj.mode_position.values, traj.mode_velocity.values
    steps = traj.step.values
    lo, hi = int(comparison.attrs["mode_window_start"]) - 1, int(comparison.attrs["mode_window_end"])
    freq = float(np.nan_to_num(comparison.oscillation_frequency_predicted.values[0]))
    if freq > 0:  # at least two periods of mode 1 (the quadratic family's are hundreds of steps)
        last_steps = max(last_steps, int(np.ceil(2 / freq)))
    sl = slice(max(lo, hi - last_steps), hi)
    for i in range(k):
        ax = axes[0, i]
        x, v = pos[sl, i], vel[sl, i]
        ax.plot(x, v, color="0.75", lw=0.5, zorder=1)
        sc = ax.scatter(x, v, c=steps[sl], s=3, cmap="viridis", zorder=2)
        ell = _ellipse(
            float(comparison.position_var_predicted[i]),
            float(comparison.velocity_var_predicted[i]),
            float(comparison.position_velocity_cov_predicted[i]),
        )
        mx, mv = float(np.mean(pos[lo:hi, i])), float(np.mean(vel[lo:hi, i]))
        ax.plot(ell[0] + mx, ell[1] + mv, color="C3", lw=1.2, label="prediction 95% (stationary, independent noise)")
        ax.set(
            xlabel=f"$u_{i + 1}^T(\\theta_k-\\theta_0)$",
            ylabel=f"$u_{i + 1}^T v_k$",
            title=f"mode {i + 1}: $\\lambda$={float(comparison.eigenvalue[i]):.3g}, Var x meas/pred "
            f"{float(comparison.position_var_measured[i] / comparison.position_var_predicted[i]):.2g}",
        )
        if i == 0:
            ax.legend(fontsize=7)
        ax = axes[1, i]
        ax.plot(steps, pos[:, i], lw=0.4)
        sd = np.sqrt(float(comparison.position_var_predicted[i]))
        ax.axhspan(mx - 2 * sd, mx + 2 * sd, color="C3", alpha=0.15, label="theory ±2 sd")
        ax.axvspan(steps[lo], steps[hi - 1], color="0.85", zorder=0, label="mode window")
        ax.set(xlabel="step k", ylabel=f"$u_{i + 1}^T(\\theta_k-\\theta_0)$")
    fig.colorbar(sc, ax=axes[0, -1], label="step")
    fig.suptitle(f"Phase space along the top Hessian eigenvectors, cell {traj.attrs['cell']}", fontsize=10)
    fig.legend([], [], frameon=False)
    fig.tight_layout()
    save(fig, path, dpi)


def theory_msd(cells: list[xr.Dataset], path, dpi: int) -> None:
    """Per cell: measured ``||theta_t - theta_0||^2`` and sketch lag-MSD against
    the theory's stationary lag-MSD (top modes + SLQ bulk, and top modes
    alone), and up to which lag the theory holds (within 25%)."""
    fig, axes = grid(len(cells), ncols=4, size=(4.0, 3.3))
    for ax, ds in zip(axes, cells):
        lag = ds.lag.values
        ax.loglog(lag, ds.sq_dist_from_start_measured, "o", ms=2.5, label="measured $\\|\\theta_t-\\theta_0\\|^2$")
        if "lag_msd_sketch" in ds:
            ax.loglog(lag, ds.lag_msd_sketch, "-", lw=1.2, label="measured lag-MSD (sketch)")
        ax.loglog(lag, ds.lag_msd_predicted, "--", color="C3", label="prediction: top modes + bulk")
        if "lag_msd_predicted_isotropic" in ds:
            lo = np.minimum(ds.lag_msd_predicted_isotropic, ds.lag_msd_predicted_c_like_h)
            hi = np.maximum(ds.lag_msd_predicted_isotropic, ds.lag_msd_predicted_c_like_h)
            ax.fill_between(lag, lo, hi, color="C3", alpha=0.12, lw=0, label="bulk noise ~ $\\lambda^s$, s from 0 to 1")
        if "lag_msd_predicted_sd" in ds and np.all(np.isfinite(ds.lag_msd_predicted_sd)):
            mean, sd = ds.lag_msd_predicted.values, ds.lag_msd_predicted_sd.values
            ax.plot(lag, np.maximum(mean - 2 * sd, mean * 1e-2), color="C3", lw=0.6, alpha=0.7)
            ax.plot(lag, mean + 2 * sd, color="C3", lw=0.6, alpha=0.7, label="prediction ± 2 sd of one run")
        if "sq_dist_from_start_predicted_sd" in ds and np.all(np.isfinite(ds.sq_dist_from_start_predicted_sd)):
            mean, sd = ds.lag_msd_predicted.values, ds.sq_dist_from_start_predicted_sd.values
            ax.plot(lag, np.maximum(mean - 2 * sd, mean * 1e-2), color="C0", lw=0.6, ls="--", alpha=0.7)
            ax.plot(lag, mean + 2 * sd, color="C0", lw=0.6, ls="--", alpha=0.7, label="prediction ± 2 sd of one anchor")
        ax.loglog(lag, ds.lag_msd_predicted_top, ":", color="C3", label="prediction: top modes")
        c_meas, c_th = ds.attrs["c_sq_dist_measured"], ds.attrs["c_lag_msd_predicted"]
        agree = agreement_lag(ds)
        if agree:
            ax.axvspan(ds.lag.values[0], agree, color="C2", alpha=0.12, zorder=0, label="theory within 25%")
        ax.set(
            xlabel="t or lag (steps)",
            ylabel="squared distance",
            title=f"{_cell_label(ds)}\nc measured {c_meas:.2f}, theory {c_th:.2f}; within 25% up to lag {agree}",
        )
        ax.title.set_fontsize(8)
    axes[0].legend(fontsize=6)
    fig.suptitle(
        "What a fixed quadratic explains: the stationary lag-MSD of the quadratic theory built from the Hessian "
        "spectrum at $\\theta_0$ (its near-zero cluster at curvature 0)\nand the noise of independent minibatches, "
        "against the measured one (shaded: lags where they agree within 25%); nothing calibrated, the bulk's spread "
        "over eigenvalues assumed\n(band: s from 0, near-zero cluster included, to 1); thin lines: the scatter one "
        "run's time average has about the prediction (red) and that of the exact distance from $\\theta_0$ (blue)",
        fontsize=9,
    )
    fig.tight_layout()
    save(fig, path, dpi)


def noise_curvature(cells: list[xr.Dataset], path, dpi: int) -> None:
    """Per-sample gradient noise along each top eigenvector against its
    eigenvalue (log-log), per run: independent minibatches (filled) and the
    in-run estimate (open)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colors = sns.color_palette("viridis", len(cells))
    for ds, color in zip(cells, colors):
        if "noise_var_independent" not in ds:
            continue
        ax.loglog(
            ds.eigenvalue,
            ds.noise_var_independent,
            "o",
            ms=4,
            color=color,
            label=f"{_cell_label(ds)}: slope {ds.attrs['noise_curvature_slope']:.2f}",
        )
        ax.loglog(ds.eigenvalue, ds.noise_var_in_run, "o", ms=4, mfc="none", color=color, lw=0.5)
    lam = np.concatenate([ds.eigenvalue.values for ds in cells if "eigenvalue" in ds] or [np.array([1.0])])
    lam = lam[lam > 0]
    if lam.size:
        ref = np.geomspace(lam.min(), lam.max(), 10)
        mid = np.median(
            np.concatenate(
                [
                    ds.noise_var_independent.values / ds.eigenvalue.values
                    for ds in cells
                    if "noise_var_independent" in ds
                ]
            )
        )
        ax.loglog(ref, mid * ref, color="0.5", ls="--", lw=0.8, label="$\\sigma^2 \\propto \\lambda$ ($C \\sim H$)")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(
        xlabel="Hessian eigenvalue $\\lambda_i$",
        ylabel="$\\sigma_i^2 = u_i^T C u_i$ (per sample)",
        title="Gradient noise against curvature along the top eigenvectors\n(filled: independent minibatches; "
        "open: read off the run)",
    )
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    save(fig, path, dpi)


def loss_landscape(landscape: xr.Dataset, path, dpi: int) -> None:
    """Train and test loss on the plane of two Hessian eigenvectors around
    theta_0, with the trajectory's projection on top."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    a, b = landscape.alpha.values, landscape.beta.values
    i, j = int(landscape.attrs["mode_a"]), int(landscape.attrs["mode_b"])
    for ax, var in zip(axes, ("train_loss", "test_loss")):
        z = landscape[var].values
        cs = ax.contourf(a, b, z.T, levels=30, cmap="magma_r")
        ax.contour(a, b, z.T, levels=10, colors="k", linewidths=0.3)
        fig.colorbar(cs, ax=ax, label=f"{var.replace('_', ' ')} (nat)")
        ax.plot(landscape.trajectory_a, landscape.trajectory_b, color="C0", lw=0.4, alpha=0.8, label="trajectory")
        ax.plot([0], [0], "w*", ms=9, mec="k", label="$\\theta_0$")
        ax.set(
            xlabel=f"$u_{{{i}}}$ coordinate",
            ylabel=f"$u_{{{j}}}$ coordinate",
            title=f"{var.replace('_', ' ')} ({landscape.attrs['n_' + var.split('_')[0]]} examples, eval mode)",
        )
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"Loss landscape in the plane of Hessian eigenvectors {i} and {j} at $\\theta_0$ of cell "
        f"{landscape.attrs['cell']} ($\\lambda_{{{i}}}$={landscape.attrs['eigenvalue_a']:.3g}, "
        f"$\\lambda_{{{j}}}$={landscape.attrs['eigenvalue_b']:.3g})",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path, dpi)


def eigenvector_drift(cells: list[xr.Dataset], path, dpi: int) -> None:
    """How long the Hessian eigenvectors of theta_0 stay eigenvectors along the
    run: relative residual and Rayleigh quotient over eigenvalue at the
    steps the run kept, per mode (colour) and seed (one line each), one row per
    cell (its seeds together) with one oscillation period of its top mode."""
    from .. import theory
    from ..hyperparameters import Hyperparameters

    groups: dict[tuple, list[xr.Dataset]] = {}
    for ds in cells:
        hp = Hyperparameters.from_attrs(ds.attrs)
        groups.setdefault((hp.lr, hp.batch_size, hp.momentum, hp.weight_decay), []).append(ds)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.4 * len(groups)), squeeze=False)
    colors = sns.color_palette("viridis", max(ds.sizes["mode"] for ds in cells))
    for row, ((lr, bs, beta, wd), runs) in zip(axes, sorted(groups.items(), reverse=True)):
        for ds in runs:
            t = np.maximum(ds.drift_step.values, 0.5)  # theta_0 drawn at half a step on the log axis
            for j in range(ds.sizes["mode"]):
                label = f"mode {j + 1}" if ds is runs[0] else None
                row[0].plot(t, ds.relative_residual.values[:, j], "o-", ms=3, lw=0.8, color=colors[j], label=label)
                row[1].plot(
                    t, ds.rayleigh_quotient.values[:, j] / ds.eigenvalue.values[j], "o-", ms=3, lw=0.8, color=colors[j]
                )
        hp = Hyperparameters.from_attrs(runs[0].attrs)
        period = 1 / float(theory.oscillation_frequency([float(np.mean([ds.eigenvalue[0] for ds in runs]))], hp)[0])
        valid = np.concatenate([valid_steps(ds) for ds in runs])
        for ax in row:
            ax.axvline(period, color="0.4", ls=":", lw=1, label=f"one period of mode 1 ({period:.0f} steps)")
            ax.set(xscale="log", xlabel="steps since $\\theta_0$")
        row[0].axhline(VALID_RESIDUAL, color="C3", ls="--", lw=0.8, label="valid below")
        cell = f"lr {lr:g}, S {bs}, $\\beta$ {beta:g}, wd {wd:g} ({len(runs)} seed(s))"
        row[0].set(
            ylabel="$\\|H u_i - (u_i^T H u_i) u_i\\| / u_i^T H u_i$",
            title=f"{cell}\nrelative residual; valid up to step {int(np.median(valid))} (median)",
        )
        row[1].axhline(1.0, color="0.5", lw=0.8)
        row[1].set(ylabel="$u_i^T H u_i / \\lambda_i$", title=f"{cell}\ncurvature along $u_i$ over $\\lambda_i$")
        row[0].legend(fontsize=6, frameon=False, ncol=2)
    fig.suptitle(
        "Do the Hessian eigenvectors of $\\theta_0$ stay eigenvectors? Hessian of the loss SGD samples at "
        "the steps the run kept, every probed cell",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path, dpi)
