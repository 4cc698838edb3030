"""Figures of the limiting runs: MSD and its fits, local displacement,
rotation on the spheres, hyperparameter scaling, metrics, convergence and
the Hessian spectrum; each a function of exported data only."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from ..hyperparameters import NAMES
from ..replicates import HYPERPARAMETERS
from .style import HP_LABELS, grid, plt, save


def _group_label(row) -> str:
    return f"lr={row['lr']:.3g}, S={int(row['batch_size'])}, β={row['momentum']:.3g}, wd={row['weight_decay']:.3g}"


def cell_groups(summary: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """The summary's cells grouped by hyperparameters (seeds together), in table order."""
    groups: dict[tuple, list[str]] = {}
    for cell, row in summary.iterrows():
        groups.setdefault(tuple(row[k] for k in HYPERPARAMETERS), []).append(cell)
    return [(_group_label(summary.loc[cells[0]]), cells) for cells in groups.values()]


def _spread(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def _seed_panels(summary: pd.DataFrame, height: float = 3.2):
    """One panel per hyperparameter cell (``height`` inches each): the figure and, per panel,
    ``(axis, label, cells, [(cell, summary row, colour)])`` with one colour per seed."""
    groups = cell_groups(summary)
    fig, axes = grid(len(groups), size=(4.0, height))
    palette = sns.color_palette()
    return fig, [
        (ax, label, cells, [(c, summary.loc[c], palette[i % len(palette)]) for i, c in enumerate(cells)])
        for ax, (label, cells) in zip(axes, groups)
    ]


def _finish_panels(fig, panels, suptitle: str, path, dpi: int, fontsize: int = 9, **legend) -> None:
    for ax, *_ in panels:
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6, frameon=False, **legend)
    fig.suptitle(suptitle, fontsize=fontsize)
    fig.tight_layout()
    save(fig, path, dpi)


def _series(traj: xr.Dataset, var: str, cell: str) -> tuple[np.ndarray, np.ndarray]:
    s = traj[var].sel(cell=cell)
    s = s.dropna(s.dims[0])
    return s[s.dims[0]].values, s.values


def msd(traj: xr.Dataset, summary: pd.DataFrame, path, dpi: int) -> None:
    """D(t) log-log per hyperparameter cell, one colour per seed: the squared
    distance (solid, with its fitted power law), the same along the spheres of
    the scale-invariant weights (dashed), and where they pass the small-angle
    limit (dotted)."""
    fig, panels = _seed_panels(summary)
    for ax, label, cells, seeds in panels:
        for cell, row, color in seeds:
            t, y = _series(traj, "sq_dist_from_start", cell)
            ok = y > 0
            ax.plot(
                t[ok],
                y[ok],
                color=color,
                lw=1.1,
                label=f"seed {int(row['seed'])}: c={row['c']:.2f} "
                f"[{row['c_low']:.2f}, {row['c_high']:.2f}], geodesic {row['c_geodesic']:.2f}",
            )
            t, y = _series(traj, "sq_dist_geodesic", cell)
            ax.plot(t[y > 0], y[y > 0], color=color, lw=0.8, ls="--")
            if np.isfinite(row["c"]):
                tf = np.geomspace(row["fit_t_start"], row["fit_t_end"], 50)
                ax.plot(tf, np.exp(row["c_log_prefactor"]) * tf ** row["c"], ":", color="k", lw=0.7)
            if row["small_angle_steps"] < row["steps"]:
                ax.axvline(row["small_angle_steps"], color=color, ls=":", lw=0.8)
        sub = summary.loc[cells]
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="steps since $\\theta_0$",
            ylabel="$\\|\\theta_t-\\theta_0\\|^2$",
            title=f"{label}\nc = {_spread(sub['c'])} over {len(cells)} seed(s)",
        )
    _finish_panels(
        fig,
        panels,
        "Squared distance from $\\theta_0$ (solid; black dotted: fitted $t^c$ [95% bootstrap "
        "over tensors]), along the spheres (dashed); vertical: rms angle of the scale-invariant weights "
        "passes 0.44 rad",
        path,
        dpi,
        loc="upper left",
    )


def local_displacement(traj: xr.Dataset, summary: pd.DataFrame, path, smoothing: int, dpi: int) -> None:
    """Per hyperparameter cell: the per-step squared displacement as a rolling
    mean (one colour per seed; its max/min is the stationarity ratio) and the
    two consistency checks of its stationary level (means over seeds; the prediction
    from independent noise is in the predictions table). The legends sit below the panels."""
    fig, panels = _seed_panels(summary, height=4.6)
    for ax, label, cells, seeds in panels:
        for cell, row, color in seeds:
            t, y = _series(traj, "sq_step", cell)
            smooth = pd.Series(y).rolling(smoothing, center=True).mean()
            ax.plot(
                t,
                smooth,
                lw=1.0,
                color=color,
                label=f"seed {int(row['seed'])}: max/min {row['stationarity_ratio']:.2f}",
            )
        sub = summary.loc[cells]
        ax.axhline(
            sub["sq_step_in_run_check"].mean(),
            color="k",
            ls="--",
            lw=0.9,
            label=f"check: in-run noise formula (measured/check {_spread(sub['measured_over_in_run_check'])})",
        )
        ax.axhline(
            sub["sq_step_equilibrium_check"].mean(),
            color="C3",
            ls=":",
            lw=1.2,
            label=f"check: norm equilibrium ({_spread(sub['measured_over_equilibrium_check'])})",
        )
        ax.set(
            yscale="log",
            xlabel="steps since $\\theta_0$",
            ylabel="$\\|\\theta_{t+1}-\\theta_t\\|^2$",
            title=f"{label}\nstationarity ratio up to {sub['stationarity_ratio'].max():.2f}",
        )
    _finish_panels(
        fig,
        panels,
        f"Local displacement per step ({smoothing}-step rolling mean) and two consistency checks of its level",
        path,
        dpi,
        fontsize=10,
        loc="upper center",  # below the panel: the series fill the panel's width at every height
        bbox_to_anchor=(0.5, -0.2),
    )


def rotation(traj: xr.Dataset, summary: pd.DataFrame, path, dpi: int) -> None:
    """Per hyperparameter cell, the norm-weighted rms angle of the
    scale-invariant weights from theta_0 over the run (one colour per seed),
    with the small-angle limit and the end of the fit window."""
    from ..geometry import small_angle_limit

    fig, panels = _seed_panels(summary)
    limit = small_angle_limit()
    for ax, label, cells, seeds in panels:
        for cell, row, color in seeds:
            t, y = _series(traj, "rotation_angle_si", cell)
            ok = (t > 0) & (y > 0)
            ax.plot(t[ok], y[ok], color=color, lw=1.0, label=f"seed {int(row['seed'])}")
        ax.axhline(limit, color="k", ls="--", lw=0.8, label=f"small-angle limit {limit:.2f} rad")
        ax.axvline(summary.loc[cells[0], "fit_t_end"], color="0.5", ls=":", lw=0.8, label="end of fit window")
        ax.set(xscale="log", yscale="log", xlabel="steps since $\\theta_0$", ylabel="rms angle (rad)", title=label)
    _finish_panels(
        fig,
        panels,
        "How far the scale-invariant weights have turned on their spheres (a walk on a sphere "
        "saturates beyond the dashed line whatever its dynamics)",
        path,
        dpi,
    )


def sweeps_of(summary: pd.DataFrame, default: dict) -> dict[str, pd.DataFrame]:
    """For each hyperparameter varied in the table, the cells equal to the default
    in the other hyperparameters. Seeds are replicates: a sweep of lr, S, beta or
    wd keeps every seed run at its values (a grid over ``seed`` gives each point
    its between-trajectory spread); the ``seed`` entry holds the seeds of the
    default cell itself."""
    out = {}
    for hp in NAMES:
        others = [k for k in HP_LABELS if k != hp and (k != "seed" or hp == "seed")]
        mask = np.ones(len(summary), bool)
        for k in others:
            mask &= np.isclose(summary[k].astype(float), float(default[k]))
        sub = summary[mask].sort_values([hp, "seed"])
        if sub[hp].nunique() > 1:
            out[hp] = sub
    return out


def replicate_means(sub: pd.DataFrame, hp: str, column: str) -> pd.DataFrame:
    """Per value of ``hp``: the mean of ``column`` over the seeds run there, the
    standard deviation between them (NaN for one seed) and their number."""
    g = sub.groupby(hp)[column]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.size()})


def hyperparameter_scaling(summary: pd.DataFrame, default: dict, path, dpi: int) -> None:
    """``c`` and the stationary local displacement against each swept hyperparameter.

    The theory line is ``lr^2 tr(C) / (S (1 - beta^2))`` with ``tr(C)`` taken
    from the default cell (the one constant the paper also fitted). Where a
    value was run with several seeds, each run is a point (the exponent with its
    bootstrap interval along that trajectory) and a line joins the means over
    seeds, with bars of one standard deviation between seeds.
    """
    sweeps = sweeps_of(summary, default)
    if not sweeps:  # a single cell or a grid without the default: plot against the theory scale
        sweeps = {"theory_scale": summary.sort_values("theory_scale")}
    fig, axes = plt.subplots(2, len(sweeps), figsize=(4.0 * len(sweeps), 6.4), squeeze=False)
    is_default = np.ones(len(summary), bool)
    for k in HP_LABELS:
        is_default &= np.isclose(summary[k].astype(float), float(default[k]))
    anchor = summary[is_default].iloc[0] if is_default.any() else summary.iloc[0]
    for j, (hp, sub) in enumerate(sweeps.items()):
        x = sub[hp].astype(float).values
        replicated = hp != "seed" and sub.groupby(hp).size().max() > 1
        ax = axes[0, j]
        for col, fmt, colour, name in (
            ("c", "o", "C0", "squared distance"),
            ("c_geodesic", "s", "C1", "along the spheres"),
        ):
            err = [sub[col] - sub[f"{col}_low"], sub[f"{col}_high"] - sub[col]]
            if replicated:
                ax.errorbar(x, sub[col], yerr=err, fmt=fmt, ms=3, capsize=2, alpha=0.35, color=colour)
                m = replicate_means(sub, hp, col)
                seeds = f"{m['n'].min()}" if m["n"].min() == m["n"].max() else f"{m['n'].min()}-{m['n'].max()}"
                ax.errorbar(
                    m.index.astype(float),
                    m["mean"],
                    yerr=m["sd"].fillna(0.0),
                    fmt=fmt + "-",
                    capsize=4,
                    color=colour,
                    label=f"{name}: mean of {seeds} seeds ± 1 sd",
                )
            else:
                ax.errorbar(
                    x, sub[col], yerr=err, fmt=fmt + ("-" if col == "c" else "--"), capsize=3, color=colour, label=name
                )
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":", label="Brownian (c=1)")
        ax.set(ylabel="diffusion exponent $c$", xlabel=HP_LABELS.get(hp, hp))
        ax.legend(fontsize=7, frameon=False)
        ax = axes[1, j]
        ax.errorbar(
            x,
            sub["sq_step_mean"],
            yerr=2 * sub["sq_step_stderr"],
            fmt="o",
            capsize=3,
            alpha=0.6 if replicated else 1.0,
            label="measured (±2 s.e.)" + (", every seed" if replicated else ""),
        )
        ax.scatter(
            x,
            sub["sq_step_in_run_check"],
            marker="x",
            color="C3",
            zorder=3,
            label="check: noise formula, in-run gradients",
        )
        ax.scatter(
            x,
            sub["sq_step_equilibrium_check"],
            marker="^",
            facecolors="none",
            edgecolors="C2",
            zorder=3,
            label="check: norm equilibrium",
        )
        xs = np.unique(x)  # sub is sorted by hp: one theory value per distinct x
        theory = sub.drop_duplicates(hp)["theory_scale"].values * anchor["noise_trace_estimate"]
        ax.plot(
            xs,
            theory,
            "k--",
            lw=1,
            label="$\\eta^2 \\mathrm{tr}C / (S(1-\\beta^2))$, calibrated: tr C fitted on the default cell",
        )
        ax.set(yscale="log", xlabel=HP_LABELS.get(hp, hp), ylabel="stationary $\\|\\theta_{t+1}-\\theta_t\\|^2$")
        for a in (axes[0, j], ax):
            if hp in ("lr", "batch_size", "theory_scale"):
                a.set_xscale("log")
            a.set_xticks(xs, [f"{v:g}" for v in xs])
            a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Exponent and local displacement across hyperparameters")
    fig.tight_layout()
    save(fig, path, dpi)


def metrics(traj: xr.Dataset, path, dpi: int) -> None:
    """Train/test loss and accuracy (eval mode) over each limiting run: one
    colour per hyperparameter cell, its seeds averaged (band: their spread)."""
    frames = []
    for cell in traj["cell"].values:
        ds = traj.sel(cell=cell).dropna("eval_step", subset=["eval_train_loss"])
        label = _group_label({k: float(ds[k]) for k in HYPERPARAMETERS})
        for split in ("train", "test"):
            frames.append(
                pd.DataFrame(
                    {
                        "step": ds["eval_step"].values,
                        "cell": label,
                        "split": split,
                        "loss": ds[f"eval_{split}_loss"].values,
                        "accuracy": ds[f"eval_{split}_accuracy"].values,
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(
        df,
        x="step",
        y="loss",
        hue="cell",
        style="split",
        ax=axes[0],
        legend=False,
        marker="o",
        markersize=3,
        errorbar=("pi", 100),
    )
    sns.lineplot(
        df,
        x="step",
        y="accuracy",
        hue="cell",
        style="split",
        ax=axes[1],
        marker="o",
        markersize=3,
        errorbar=("pi", 100),
    )
    axes[0].set(yscale="log", xlabel="steps since $\\theta_0$", ylabel="cross-entropy (nat)")
    axes[1].set(xlabel="steps since $\\theta_0$", ylabel="accuracy", ylim=(max(0, df["accuracy"].min() - 0.05), 1.005))
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    fig.suptitle(
        "Train (solid) and test (dashed) metrics during the limiting runs (eval mode, clean labels; "
        "band: range over seeds)"
    )
    fig.tight_layout()
    save(fig, path, dpi)


def convergence(history: xr.Dataset, path, dpi: int) -> None:
    """Pretraining curves: loss and accuracy per epoch, and the learning rate."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    e = history["epoch"].values
    for split in ("train", "test"):
        axes[0].plot(e, history[f"{split}_loss"], marker="o", ms=3, label=split)
        axes[1].plot(e, history[f"{split}_accuracy"], marker="o", ms=3, label=split)
    axes[2].plot(e, history["lr"], marker="o", ms=3)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="cross-entropy (nat)")
    axes[1].set(xlabel="epoch", ylabel="accuracy")
    axes[2].set(xlabel="epoch", ylabel="learning rate at epoch start")
    for ax in axes[:2]:
        ax.legend(frameon=False)
    fig.suptitle("Reaching convergence (theta_0 of every cell; eval-mode metrics)")
    fig.tight_layout()
    save(fig, path, dpi)


def hessian_spectrum(cells: list[xr.Dataset], path, dpi: int) -> None:
    """Top eigenvalues (Lanczos) and the smoothed spectral density (SLQ) of the
    Hessian at each cell's theta_0, one colour per cell."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = sns.color_palette("viridis", len(cells))
    positive = all(np.all(ds.hessian_eigenvalues.values > 0) for ds in cells)
    for ds, color in zip(cells, colors):
        lam = ds.hessian_eigenvalues.values
        label = f"{ds.attrs.get('cell', '')}: tr H = {ds.attrs['hessian_trace_hutchinson']:.3g}"
        axes[0].plot(ds.mode, lam, "o-", ms=3, color=color, label=label)
        dens = np.maximum(ds.spectral_density.values, 1e-12)
        axes[1].plot(ds.eigenvalue, dens, color=color, lw=1)
    ref = cells[0]
    axes[0].set(
        yscale="log" if positive else "linear",
        xlabel="rank i",
        ylabel="eigenvalue $\\lambda_i$",
        title=f"top {ref.sizes['mode']} eigenvalues (Lanczos, {ref.attrs['lanczos_hvps']} HVPs for the first)",
    )
    axes[0].legend(fontsize=6)
    top = max(float(ds.spectral_density.max()) for ds in cells)
    axes[1].set(
        yscale="log",
        ylim=(top * 1e-7, top * 2),
        xlabel="eigenvalue $\\lambda$",
        ylabel="density",
        title=f"spectral density (SLQ, {ref.sizes['probe']} probes x {ref.sizes['node']} steps)",
    )
    fig.suptitle(
        f"Hessian of the training loss at each cell's $\\theta_0$ ({ref.attrs['n_samples']} training "
        f"examples, BatchNorm in {ref.attrs['bn_mode']} mode, {ref.attrs['precision']})",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path, dpi)
