"""Theory-vs-experiment figures of the ResNet cells (inputs: compare-cell outputs,
predictions table, trajectories, loss landscape)."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from .plots import _grid, plt, save


def _cell_label(ds: xr.Dataset) -> str:
    a = ds.attrs
    return f"lr={a['lr']:.3g}, S={int(a['batch_size'])}, β={a['momentum']:.3g}"


def _identity(ax, values) -> None:
    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x) and x > 0])
    if v.size:
        lo, hi = v.min() / 2, v.max() * 2
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", zorder=0)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def theory_modes(cells: list[xr.Dataset], predictions: pd.DataFrame, path, dpi: int = 150) -> None:
    """Per top Hessian mode, measured against predicted stationary position and
    velocity variance and spectral peak frequency (every cell), and the
    stationary local displacement per cell."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    colors = sns.color_palette("viridis", len(cells))
    for (key, title), ax in zip((("position_var", "position variance $u_i^T\\theta$"),
                                 ("velocity_var", "velocity variance $u_i^T v$"),
                                 ("spectral_peak", "position spectral peak (cycles/step)")), axes):
        allv = []
        for ds, color in zip(cells, colors):
            if f"{key}_measured" not in ds:
                continue
            x, y = ds[f"{key}_predicted"].values, ds[f"{key}_measured"].values
            ax.scatter(x, y, s=14, color=color, label=_cell_label(ds))
            allv += [x, y]
        _identity(ax, np.concatenate(allv) if allv else [])
        ratio = np.concatenate([ds[f"{key}_measured"].values / ds[f"{key}_predicted"].values
                                for ds in cells if f"{key}_measured" in ds]) if allv else np.array([np.nan])
        ax.set(xlabel="predicted (exact discrete theory)", ylabel="measured",
               title=f"{title}\nmedian measured/predicted {np.nanmedian(ratio):.2g}")
    axes[0].legend(fontsize=6)
    ax = axes[3]
    p = predictions
    ax.errorbar(p["sq_step_predicted"], p["sq_step_measured"], yerr=2 * p["sq_step_measured_stderr"], fmt="o",
                ms=4, color="C0", label="noise + weight-decay term")
    ax.scatter(p["sq_step_predicted_noise"], p["sq_step_measured"], s=14, marker="x", color="C3",
               label="noise term alone")
    _identity(ax, np.concatenate([p["sq_step_predicted"], p["sq_step_predicted_noise"], p["sq_step_measured"]]))
    ax.set(xlabel="predicted", ylabel="measured", title="stationary $\\|\\theta_{k+1}-\\theta_k\\|^2$ per cell\n"
           f"median measured/predicted {np.median(p['measured_over_predicted']):.2g}")
    ax.legend(fontsize=7)
    fig.suptitle("Theory vs experiment with no fitted constant: Hessian and gradient noise measured at each "
                 "cell's $\\theta_0$ (dashed: equality)", fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi)


def _ellipse(var_x: float, var_v: float, cov: float, n_std: float = 2.0, n: int = 200) -> np.ndarray:
    vals, vecs = np.linalg.eigh(np.array([[var_x, cov], [cov, var_v]]))
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (vecs @ (np.sqrt(np.maximum(vals, 0))[:, None] * circle)) * n_std


def phase_space(traj: xr.Dataset, cmp: xr.Dataset, path, dpi: int = 150, n_modes: int = 3,
                last_steps: int = 400) -> None:
    """Position against velocity along the top Hessian eigenvectors (the last
    ``last_steps`` steps, coloured by time), with the theory's stationary 95%
    ellipse about the measured mean; bottom row: position over time."""
    k = min(n_modes, traj.sizes["mode"])
    fig, axes = plt.subplots(2, k, figsize=(4.3 * k, 7.2), squeeze=False)
    pos, vel = traj.mode_position.values, traj.mode_velocity.values
    steps = traj.step.values
    sl = slice(max(0, len(steps) - last_steps), None)
    for i in range(k):
        ax = axes[0, i]
        x, v = pos[sl, i], vel[sl, i]
        ax.plot(x, v, color="0.75", lw=0.5, zorder=1)
        sc = ax.scatter(x, v, c=steps[sl], s=3, cmap="viridis", zorder=2)
        ell = _ellipse(float(cmp.position_var_predicted[i]), float(cmp.velocity_var_predicted[i]),
                       float(cmp.position_velocity_cov_predicted[i]))
        mx, mv = float(np.mean(pos[len(steps) // 2:, i])), float(np.mean(vel[len(steps) // 2:, i]))
        ax.plot(ell[0] + mx, ell[1] + mv, color="C3", lw=1.2, label="theory 95% (stationary)")
        ax.set(xlabel=f"$u_{i + 1}^T(\\theta_k-\\theta_0)$", ylabel=f"$u_{i + 1}^T v_k$",
               title=f"mode {i + 1}: $\\lambda$={float(cmp.eigenvalue[i]):.3g}, Var x meas/pred "
                     f"{float(cmp.position_var_measured[i] / cmp.position_var_predicted[i]):.2g}")
        if i == 0:
            ax.legend(fontsize=7)
        ax = axes[1, i]
        ax.plot(steps, pos[:, i], lw=0.4)
        sd = np.sqrt(float(cmp.position_var_predicted[i]))
        ax.axhspan(mx - 2 * sd, mx + 2 * sd, color="C3", alpha=0.15, label="theory ±2 sd")
        ax.set(xlabel="step k", ylabel=f"$u_{i + 1}^T(\\theta_k-\\theta_0)$")
    fig.colorbar(sc, ax=axes[0, -1], label="step")
    fig.suptitle(f"Phase space along the top Hessian eigenvectors, cell {traj.attrs['cell']}", fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi)


def theory_msd(cells: list[xr.Dataset], path, dpi: int = 150) -> None:
    """Per cell: measured ``||theta_t - theta_0||^2`` and sketch lag-MSD against
    the theory's stationary lag-MSD (top modes + SLQ bulk, and top modes alone)."""
    fig, axes = _grid(len(cells), ncols=4, size=(4.0, 3.3))
    for ax, ds in zip(axes, cells):
        lag = ds.lag.values
        ax.loglog(lag, ds.sq_dist_from_start_measured, "o", ms=2.5, label="measured $\\|\\theta_t-\\theta_0\\|^2$")
        if "lag_msd_sketch" in ds:
            ax.loglog(lag, ds.lag_msd_sketch, "-", lw=1.2, label="measured lag-MSD (sketch)")
        ax.loglog(lag, ds.lag_msd_predicted, "--", color="C3", label="theory: top modes + bulk")
        ax.loglog(lag, ds.lag_msd_predicted_top, ":", color="C3", label="theory: top modes")
        c_meas, c_th = ds.attrs["c_sq_dist_measured"], ds.attrs["c_lag_msd_predicted"]
        ax.set(xlabel="t or lag (steps)", ylabel="squared distance",
               title=f"{_cell_label(ds)}\nc measured {c_meas:.2f}, theory {c_th:.2f}")
        ax.title.set_fontsize(8)
    axes[0].legend(fontsize=6)
    fig.suptitle("Diffusion: measured against the quadratic theory built from the measured Hessian "
                 "spectrum and noise", fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi)


def noise_curvature(cells: list[xr.Dataset], path, dpi: int = 150) -> None:
    """Per-sample gradient noise along each top eigenvector against its eigenvalue (log-log), per cell."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    colors = sns.color_palette("viridis", len(cells))
    for ds, color in zip(cells, colors):
        if "noise_var" not in ds:
            continue
        ax.loglog(ds.eigenvalue, ds.noise_var, "o", ms=4, color=color,
                  label=f"{_cell_label(ds)}: slope {ds.attrs['noise_curvature_slope']:.2f}")
    lam = np.concatenate([ds.eigenvalue.values for ds in cells if "eigenvalue" in ds] or [np.array([1.0])])
    lam = lam[lam > 0]
    if lam.size:
        ref = np.geomspace(lam.min(), lam.max(), 10)
        mid = np.median(np.concatenate([ds.noise_var.values / ds.eigenvalue.values for ds in cells
                                        if "noise_var" in ds]))
        ax.loglog(ref, mid * ref, color="0.5", ls="--", lw=0.8, label="$\\sigma^2 \\propto \\lambda$ ($C \\sim H$)")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel="Hessian eigenvalue $\\lambda_i$", ylabel="$\\sigma_i^2 = u_i^T C u_i$ (per sample)",
           title="Gradient noise against curvature along the top eigenvectors")
    ax.legend(fontsize=6)
    fig.tight_layout()
    save(fig, path, dpi)


def loss_landscape(ds: xr.Dataset, path, dpi: int = 150) -> None:
    """Train and test loss on the plane of two Hessian eigenvectors around
    theta_0, with the trajectory's projection on top."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    a, b = ds.alpha.values, ds.beta.values
    i, j = int(ds.attrs["mode_a"]), int(ds.attrs["mode_b"])
    for ax, var in zip(axes, ("train_loss", "test_loss")):
        z = ds[var].values
        cs = ax.contourf(a, b, z.T, levels=30, cmap="magma_r")
        ax.contour(a, b, z.T, levels=10, colors="k", linewidths=0.3)
        fig.colorbar(cs, ax=ax, label=f"{var.replace('_', ' ')} (nat)")
        ax.plot(ds.trajectory_a, ds.trajectory_b, color="C0", lw=0.4, alpha=0.8, label="trajectory")
        ax.plot([0], [0], "w*", ms=9, mec="k", label="$\\theta_0$")
        ax.set(xlabel=f"$u_{{{i}}}$ coordinate", ylabel=f"$u_{{{j}}}$ coordinate",
               title=f"{var.replace('_', ' ')} ({ds.attrs['n_' + var.split('_')[0]]} examples, eval mode)")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Loss landscape in the plane of Hessian eigenvectors {i} and {j} at $\\theta_0$ of cell "
                 f"{ds.attrs['cell']} ($\\lambda_{{{i}}}$={ds.attrs['eigenvalue_a']:.3g}, "
                 f"$\\lambda_{{{j}}}$={ds.attrs['eigenvalue_b']:.3g})", fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi)


FIGURES = {"theory-modes", "phase-space", "theory-msd", "noise-curvature", "loss-landscape"}
