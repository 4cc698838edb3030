"""Figures (seaborn/matplotlib), each a function of exported data only."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import xarray as xr  # noqa: E402

from . import __version__  # noqa: E402
from .atomic import atomic_path  # noqa: E402

HP_LABELS = {"lr": "learning rate $\\eta$", "batch_size": "batch size $S$",
             "momentum": "momentum $\\beta$", "weight_decay": "weight decay $\\lambda$", "seed": "seed"}


def setup(context: str = "paper") -> None:
    sns.set_theme(context=context, style="ticks", palette="colorblind")


def save(fig, path: str | Path, dpi: int) -> None:
    """Save atomically (the format follows the suffix) with the provenance in
    the file's metadata (PNG ``Software``, PDF/SVG ``Creator``) and close."""
    from .trajectory import git_revision, torch_version

    fmt = Path(path).suffix.lstrip(".")
    made_by = f"limiting-dynamics {__version__} (git {git_revision()}, torch {torch_version()})"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt,
                    metadata={"Software" if fmt == "png" else "Creator": made_by})
    plt.close(fig)


def _label(row) -> str:
    return (f"lr={row['lr']:.3g}, S={int(row['batch_size'])}, β={row['momentum']:.3g}, "
            f"wd={row['weight_decay']:.3g}, seed={int(row['seed'])}")


def _grid(n: int, ncols: int = 3, size=(4.0, 3.2)):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def msd(traj: xr.Dataset, summary: pd.DataFrame, path, dpi: int = 150) -> None:
    """D(t) log-log per cell, split into radial and angular parts, with fitted power laws."""
    cells = list(traj["cell"].values)
    fig, axes = _grid(len(cells))
    palette = sns.color_palette()
    for ax, cell in zip(axes, cells):
        row = summary.loc[cell]
        ds = traj.sel(cell=cell)
        for var, name, color, key in (("sq_dist_from_start", "total", palette[0], "c"),
                                      ("sq_dist_radial", "radial", palette[1], "c_radial"),
                                      ("sq_dist_angular", "angular", palette[2], "c_angular")):
            series = ds[var].dropna(ds[var].dims[0])
            t, y = series[series.dims[0]].values, series.values
            ok = y > 0
            ax.plot(t[ok], y[ok], color=color, lw=1.2, label=f"{name}: c={row[key]:.2f} "
                    f"[{row[key + '_low']:.2f}, {row[key + '_high']:.2f}]")
            if np.isfinite(row[key]):
                tf = np.geomspace(row["fit_t_start"], row["fit_t_end"], 50)
                ax.plot(tf, np.exp(row[key + "_log_prefactor"]) * tf ** row[key], "--", color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="steps since $\\theta_0$",
               ylabel="$\\|\\theta_t-\\theta_0\\|^2$", title=_label(row))
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.suptitle("Squared distance from $\\theta_0$ (dashed: fitted power law $t^c$; "
                 "[95% interval, bootstrap over parameter tensors])")
    fig.tight_layout()
    save(fig, path, dpi)


def local_displacement(traj: xr.Dataset, summary: pd.DataFrame, path, smoothing: int = 100,
                       dpi: int = 150) -> None:
    """Per-step squared displacement over time (rolling mean) with the stationary level."""
    cells = list(traj["cell"].values)
    fig, axes = _grid(len(cells))
    for ax, cell in zip(axes, cells):
        row = summary.loc[cell]
        s = traj["sq_step"].sel(cell=cell).dropna("step")
        t = s["step"].values
        ax.plot(t, s.values, color="0.8", lw=0.3, label="every step")
        smooth = pd.Series(s.values).rolling(smoothing, min_periods=1, center=True).mean()
        ax.plot(t, smooth, lw=1.2, label=f"rolling mean ({smoothing} steps)")
        ax.axhline(row["sq_step_mean"], color="k", ls="--", lw=0.8,
                   label=f"stationary level {row['sq_step_mean']:.3g} ± {row['sq_step_stderr']:.2g}")
        ax.set(yscale="log", xlabel="steps since $\\theta_0$",
               ylabel="$\\|\\theta_{t+1}-\\theta_t\\|^2$", title=_label(row))
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Local displacement per step")
    fig.tight_layout()
    save(fig, path, dpi)


def sweeps_of(summary: pd.DataFrame, default: dict) -> dict[str, pd.DataFrame]:
    """For each hyperparameter varied in the table, the cells equal to the default
    in the other hyperparameters. Seeds are replicates: a sweep of lr, S, beta or
    wd keeps every seed run at its values (a grid over ``seed`` gives each point
    its between-trajectory spread); the ``seed`` entry holds the seeds of the
    default cell itself."""
    out = {}
    for hp in ("lr", "batch_size", "momentum", "weight_decay", "seed"):
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


def hyperparameter_scaling(summary: pd.DataFrame, default: dict, path, dpi: int = 150) -> None:
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
        for col, fmt, colour, name in (("c", "o", "C0", "total"), ("c_angular", "s", "C1", "angular part")):
            err = [sub[col] - sub[f"{col}_low"], sub[f"{col}_high"] - sub[col]]
            if replicated:
                ax.errorbar(x, sub[col], yerr=err, fmt=fmt, ms=3, capsize=2, alpha=0.35, color=colour)
                m = replicate_means(sub, hp, col)
                seeds = f"{m['n'].min()}" if m["n"].min() == m["n"].max() else f"{m['n'].min()}-{m['n'].max()}"
                ax.errorbar(m.index.astype(float), m["mean"], yerr=m["sd"].fillna(0.0), fmt=fmt + "-", capsize=4,
                            color=colour, label=f"{name}: mean of {seeds} seeds ± 1 sd")
            else:
                ax.errorbar(x, sub[col], yerr=err, fmt=fmt + ("-" if col == "c" else "--"), capsize=3,
                            color=colour, label=name)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":", label="Brownian (c=1)")
        ax.set(ylabel="diffusion exponent $c$", xlabel=HP_LABELS.get(hp, hp))
        ax.legend(fontsize=7, frameon=False)
        ax = axes[1, j]
        ax.errorbar(x, sub["sq_step_mean"], yerr=2 * sub["sq_step_stderr"], fmt="o", capsize=3,
                    alpha=0.6 if replicated else 1.0, label="measured (±2 s.e.)" + (", every seed" if replicated else ""))
        xs = np.unique(x)  # sub is sorted by hp: one theory value per distinct x
        theory = sub.drop_duplicates(hp)["theory_scale"].values * anchor["noise_trace_estimate"]
        ax.plot(xs, theory, "k--", lw=1,
                label="$\\eta^2 \\mathrm{tr}C / (S(1-\\beta^2))$, tr C from default cell")
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


def metrics(traj: xr.Dataset, path, dpi: int = 150) -> None:
    """Train/test loss and accuracy (eval mode) over each limiting run."""
    frames = []
    for cell in traj["cell"].values:
        ds = traj.sel(cell=cell).dropna("eval_step", subset=["eval_train_loss"])
        for split in ("train", "test"):
            frames.append(pd.DataFrame({
                "step": ds["eval_step"].values, "cell": cell, "split": split,
                "loss": ds[f"eval_{split}_loss"].values, "accuracy": ds[f"eval_{split}_accuracy"].values}))
    df = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(df, x="step", y="loss", hue="cell", style="split", ax=axes[0], legend=False, marker="o",
                 markersize=3)
    sns.lineplot(df, x="step", y="accuracy", hue="cell", style="split", ax=axes[1], marker="o", markersize=3)
    axes[0].set(yscale="log", xlabel="steps since $\\theta_0$", ylabel="cross-entropy (nat)")
    axes[1].set(xlabel="steps since $\\theta_0$", ylabel="accuracy", ylim=(max(0, df["accuracy"].min() - 0.05), 1.005))
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    fig.suptitle("Train (solid) and test (dashed) metrics during the limiting runs (eval mode)")
    fig.tight_layout()
    save(fig, path, dpi)


def convergence(history: xr.Dataset, path, dpi: int = 150) -> None:
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


def hessian_spectrum(cells: list[xr.Dataset], path, dpi: int = 150) -> None:
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
    axes[0].set(yscale="log" if positive else "linear", xlabel="rank i", ylabel="eigenvalue $\\lambda_i$",
                title=f"top {ref.sizes['mode']} eigenvalues (Lanczos, {ref.attrs['lanczos_hvps']} HVPs for the first)")
    axes[0].legend(fontsize=6)
    top = max(float(ds.spectral_density.max()) for ds in cells)
    axes[1].set(yscale="log", ylim=(top * 1e-7, top * 2), xlabel="eigenvalue $\\lambda$", ylabel="density",
                title=f"spectral density (SLQ, {ref.sizes['probe']} probes x {ref.sizes['node']} steps)")
    fig.suptitle(f"Hessian of the training loss at each cell's $\\theta_0$ ({ref.attrs['n_samples']} training "
                 f"examples, BatchNorm in {ref.attrs['bn_mode']} mode, {ref.attrs['precision']})", fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi)
