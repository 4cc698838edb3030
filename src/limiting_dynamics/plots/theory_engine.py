"""Figures of the theory engine: the linear-regression check, the 2D
Ornstein-Uhlenbeck example of a modified potential with probability currents,
and the power-law-spectrum demonstration of anomalous diffusion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from .. import theory
from ..hyperparameters import Hyperparameters
from .style import plt, save

Z95 = 1.959964


def _by_sampling(cells: list[xr.Dataset], sampling: str) -> list[xr.Dataset]:
    out = [c for c in cells if c.attrs["sampling"] == sampling] or cells
    return sorted(out, key=lambda c: c.attrs["momentum"])


def _title(c: xr.Dataset) -> str:
    return f"β={c.attrs['momentum']:g} ({c.attrs['sampling']})"


def phase_space(cells, tables, path, dpi: int) -> None:
    """Position and velocity along the top eigenvectors from the displaced start:
    simulated chains, their mean, and the exact theory's mean with a 95% band."""
    chosen = _by_sampling(cells, "replacement")
    fig, axes = plt.subplots(3, len(chosen), figsize=(4.6 * len(chosen), 10), squeeze=False)
    pal = sns.color_palette()
    for j, c in enumerate(chosen):
        s = c.sel(start="displaced")
        steps = s.step.values
        for row, mode in enumerate((1, 2)):
            ax = axes[row, j]
            m = s.sel(mode=mode)
            for ch in range(min(3, s.sizes["chain"])):
                ax.plot(
                    steps,
                    m.chain_position.isel(chain=ch),
                    color="0.75",
                    lw=0.5,
                    label="single chains" if ch == 0 else None,
                )
            sd = np.sqrt(m.discrete_position_var)
            ax.fill_between(
                steps,
                m.discrete_position_mean - Z95 * sd,
                m.discrete_position_mean + Z95 * sd,
                color=pal[0],
                alpha=0.25,
                lw=0,
                label="theory 95% band",
            )
            ax.plot(steps, m.sim_position_mean, color=pal[1], lw=1.2, label=f"mean of {c.attrs['chains']} chains")
            ax.plot(steps, m.discrete_position_mean, color=pal[0], ls="--", lw=1, label="theory mean (exact)")
            ax.set_xlabel("SGD step")
            ax.set_ylabel(f"$u_{mode}^T(\\theta - \\theta_{{fp}})$")
            ax.set_title(f"{_title(c)}, mode {mode} (λ={float(m.eigval):.3g})", fontsize=9)
        ax = axes[2, j]
        for mode, color in ((1, pal[0]), (2, pal[2])):
            m = s.sel(mode=mode)
            ax.plot(m.discrete_position_mean, m.discrete_velocity_mean, color=color, lw=1, label=f"theory, mode {mode}")
            ax.plot(
                m.sim_position_mean,
                m.sim_velocity_mean,
                color=color,
                lw=0.8,
                ls=":",
                label=f"chains' mean, mode {mode}",
            )
        ax.set_xlabel("position $u_i^T(\\theta - \\theta_{fp})$")
        ax.set_ylabel("momentum buffer $u_i^T v$")
        ax.set_title(f"{_title(c)}: phase space", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[2, 0].legend(fontsize=7)
    fig.suptitle("Linear regression on digits: motion along the top Hessian eigenvectors from a displaced start")
    fig.tight_layout()
    save(fig, path, dpi)


def frequency(cells, tables, path, dpi: int) -> None:
    """Spectral peak of the chains' fluctuations along each top mode against its
    eigenvalue, with the discrete and continuous theory, one panel per momentum."""
    chosen = _by_sampling(cells, "replacement")
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.8 * len(chosen), 4), squeeze=False)
    pal = sns.color_palette()
    for ax, c in zip(axes[0], chosen):
        s = c.sel(start="theta_star")
        hp = Hyperparameters.from_attrs(c.attrs)
        beta, lr = hp.momentum, hp.lr
        lam = s.eigval.values
        # fluctuations about the exact mean, whole run
        fluct = s.chain_position - s.discrete_position_mean
        peaks = [spectral_peak(fluct.sel(mode=m).values) for m in s.mode.values]
        grid = np.logspace(np.log10(lam.min() / 3), np.log10(lam.max() * 3), 300)
        for model, ls in (("discrete", "-"), ("continuous", ":")):
            f = theory.oscillation_frequency(grid, hp, setting=theory.Setting(model=model))
            ax.plot(
                grid,
                np.where(f > 0, f, np.nan),
                color=pal[0],
                ls=ls,
                lw=1.2,
                label="mean motion: exact discrete" if model == "discrete" else "mean motion: continuous model",
            )
        ax.plot(
            grid,
            theory.fluctuation_spectrum_peak(grid, hp, n_freq=4000),
            color=pal[2],
            lw=1,
            ls="--",
            label="fluctuation spectrum peak (exact)",
        )
        ax.scatter(lam, peaks, color=pal[1], s=30, zorder=3, label="chains' spectral peak")
        resolution = 1.0 / s.sizes["step"]
        ax.axhspan(resolution / 10, resolution, color="0.9", zorder=0, label="below resolution (overdamped)")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="Hessian eigenvalue λ",
            ylabel="frequency (cycles per step)",
            title=f"β={beta:g}, lr={lr:g}",
            ylim=(resolution / 10, None),
        )
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Oscillation frequency of the top modes against curvature (no line: overdamped)", fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi)


def spectral_peak(series: np.ndarray, pad: int = 8) -> float:
    """Frequency (cycles per step) of the largest peak of the mean periodogram of the
    rows of ``series`` (Hann window, zero-padded ``pad`` times)."""
    x = series - series.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    power = np.abs(np.fft.rfft(x * np.hanning(n), n=pad * n, axis=-1)) ** 2
    freq = np.fft.rfftfreq(pad * n)
    mean = power.reshape(-1, power.shape[-1]).mean(axis=0)
    return float(freq[1:][np.argmax(mean[1:])])


def theory_vs_simulation(cells, tables, path, dpi: int) -> None:
    table = pd.concat([t for t in tables if "z_discrete" in t.columns], ignore_index=True)
    cont = next(t for t in tables if "lr_lam" in t.columns)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    pal = sns.color_palette()
    chosen = _by_sampling(cells, "replacement")
    ax = axes[0, 0]
    for i, c in enumerate(chosen):
        s = c.sel(start="theta_star").isel(step=slice(1, None))
        ax.errorbar(
            s.step[::50],
            s.sim_msd_from_start[::50],
            yerr=Z95 * s.sim_msd_from_start_stderr[::50],
            fmt="o",
            ms=2.5,
            color=pal[i],
            label=f"β={c.attrs['momentum']:g}: simulation",
        )
        ax.plot(s.step, s.discrete_msd_from_start, color=pal[i], lw=1)
        ax.plot(s.step, s.continuous_msd_from_start, color=pal[i], lw=1, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="SGD step k",
        ylabel="$E\\|\\theta_k - \\theta_0\\|^2$",
        title="distance from θ* (line: exact, dotted: continuous)",
    )
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for i, c in enumerate(chosen):
        s = c.sel(start="theta_star")
        ax.errorbar(
            s.lag,
            s.sim_lag_msd,
            yerr=Z95 * s.sim_lag_msd_stderr,
            fmt="o",
            color=pal[i],
            label=f"β={c.attrs['momentum']:g}",
        )
        ax.plot(s.lag, s.discrete_lag_msd, color=pal[i], lw=1)
        ax.plot(s.lag, s.continuous_lag_msd, color=pal[i], lw=1, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="lag τ (steps)",
        ylabel="$E\\|\\theta_{k+τ} - \\theta_k\\|^2$",
        title=f"lag-MSD from step {chosen[0].attrs['lag_anchor']}",
    )
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    for i, c in enumerate(chosen):
        s = c.sel(start="theta_star").isel(step=slice(1, None))
        ax.plot(s.step, s.sim_sq_velocity, color=pal[i], lw=0.8, alpha=0.7, label=f"β={c.attrs['momentum']:g}")
        ax.plot(s.step, s.discrete_sq_velocity, color="k", lw=0.8, ls="--")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="SGD step k",
        ylabel="$E\\|v_k\\|^2$",
        title="momentum buffer (dashed: exact theory)",
    )
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    var = table[table.quantity.str.startswith("position_var")]
    sns.scatterplot(data=var, x="discrete", y="simulation", hue="cell", style="start", ax=ax, s=25)
    lo, hi = var[["discrete", "simulation"]].min().min(), var[["discrete", "simulation"]].max().max()
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="exact theory",
        ylabel="simulation",
        title="variance along top eigenvectors (all cells, steps)",
    )
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1, 1]
    table = table.assign(kind=table.quantity.str.replace(r"_mode\d+", "", regex=True))
    fixed = table.assign(theory=table.sampling + ": noise at the fixed point", z=table.z_discrete)
    exact = table[table.sampling == "replacement"].assign(
        theory="replacement: state-dependent (exact)", z=table.z_state_dependent
    )
    # seaborn jitters strip plots with numpy's global generator: seed it here (and
    # restore it) so that the same results give the same figure
    state = np.random.get_state()
    np.random.seed(0)
    try:
        sns.stripplot(data=pd.concat([fixed, exact]), x="z", y="kind", hue="theory", dodge=True, ax=ax, size=2.5)
    finally:
        np.random.set_state(state)
    ax.legend(fontsize=6, loc="lower left")
    ax.axvline(-2, color="0.6", lw=0.8, ls="--")
    ax.axvline(2, color="0.6", lw=0.8, ls="--")
    ax.set(xlabel="z = (simulation - exact theory) / standard error", ylabel="", title="z-scores of every comparison")
    ax = axes[1, 2]
    for i, (beta, g) in enumerate(cont.groupby("momentum")):
        ax.plot(g.lr_lam, np.abs(g.position_var_rel_error), "o-", ms=3, color=pal[i], label=f"β={beta:g}: position")
        ax.plot(g.lr_lam, np.abs(g.velocity_var_rel_error), "s--", ms=3, color=pal[i], label=f"β={beta:g}: velocity")
    ax.plot(cont.lr_lam.unique(), cont.lr_lam.unique() / 4, color="k", lw=0.6, ls="--", label="lr(λ+wd)/4")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="lr (λ + wd)",
        ylabel="|continuous / exact - 1|",
        title="continuous model's error in stationary variances\n(= lr(λ+wd) / (2(1+β)): curves overlap)",
    )
    ax.legend(fontsize=7)
    fig.suptitle("Linear regression on digits: simulation vs exact discrete theory vs continuous model")
    fig.tight_layout()
    save(fig, path, dpi)


def sampling(cells, tables, path, dpi: int) -> None:
    """Reshuffled vs i.i.d. batches: variance along the top modes over time."""
    chosen = _by_sampling(cells, "reshuffle")
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.8 * len(chosen), 4), squeeze=False)
    pal = sns.color_palette()
    for ax, c in zip(axes[0], chosen):
        s = c.sel(start="theta_star").isel(step=slice(1, None))
        n, bs = c.attrs["n_samples"], c.attrs["batch_size"]
        fpc = (n - bs) / (n - 1)
        for i, m in enumerate(s.mode.values[:3]):
            q = s.sel(mode=m)
            ax.plot(
                q.step,
                q.sim_position_var,
                color=pal[i],
                lw=0.7,
                alpha=0.8,
                label=f"mode {m} (λ={float(q.eigval):.3g}): simulation",
            )
            ax.plot(q.step, q.discrete_position_var, color=pal[i], lw=1.2, ls="--")
            ax.plot(q.step, q.iid_position_var * fpc, color=pal[i], lw=1, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="SGD step k", ylabel="Var $u_i^T\\theta_k$", title=_title(c))
        ax.legend(fontsize=6)
    fig.suptitle(
        "Reshuffled batches (dashed: exact reshuffling theory; dotted: i.i.d. theory with "
        "the finite-population factor (N-S)/(N-1))",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path, dpi)


# ----------------------------------------------------------------------------
# pure theory
# ----------------------------------------------------------------------------


def ou_example():
    """The paper's 2D example: H with eigenvectors (-1,1), (1,1) and eigenvalues 4, 1;
    diffusion diag(4, 1); ``dx = -H x dt + sqrt(2 D) dW``."""
    u = np.array([[-1.0, 1.0], [1.0, 1.0]]) / np.sqrt(2)
    h = u @ np.diag([4.0, 1.0]) @ u.T
    d = np.diag([4.0, 1.0])
    sigma = theory.continuous_lyapunov(-h, 2 * d)  # -H S - S H + 2D = 0
    q = h @ sigma - d  # drift -H x = -(D + Q) S^{-1} x
    return h, d, sigma, q


def ou_currents(path, dpi: int) -> None:
    h, d, sigma, q = ou_example()
    prec = np.linalg.inv(sigma)
    g = np.linspace(-3, 3, 121)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx, yy], axis=-1)
    loss = 0.5 * np.einsum("...i,ij,...j->...", pts, h, pts)
    pot = 0.5 * np.einsum("...i,ij,...j->...", pts, prec, pts)
    cur = -np.einsum("ij,...j->...i", q @ prec, pts)
    rng = np.random.default_rng(0)
    dt, n = 1e-3, 6000
    x = np.zeros((n, 2))
    noise = rng.standard_normal((n, 2)) @ np.sqrt(2 * d * dt)
    for k in range(1, n):
        x[k] = x[k - 1] - h @ x[k - 1] * dt + noise[k]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, field, title in (
        (axes[0], loss, "training loss $x^T H x / 2$"),
        (axes[1], pot, "modified potential $U = x^T Σ^{-1} x / 2$"),
    ):
        ax.contour(xx, yy, field, levels=12, cmap="viridis")
        ax.plot(x[:, 0], x[:, 1], color="0.4", lw=0.3, alpha=0.7)
        ax.set(xlabel="$x_1$", ylabel="$x_2$", title=title, aspect="equal", xlim=(-3, 3), ylim=(-3, 3))
    axes[1].streamplot(xx, yy, cur[..., 0], cur[..., 1], color="C3", density=0.8, linewidth=0.8)
    fig.suptitle(
        "2D OU process (H eigvecs (-1,1),(1,1), eigvals 4,1; D = diag(4,1)): the stationary density "
        "is not the Gibbs density of the loss;\nred: probability current $-Q∇U$ "
        "(Q antisymmetric), grey: a simulated trajectory",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path, dpi)


def power_law_exponent(
    alpha: float, kappa: float, hp: Hyperparameters, decades: float = 5.0, max_modes: int = 5000
) -> tuple[np.ndarray, np.ndarray, float]:
    """``E||theta_t - theta_0||^2`` from the fixed point for ``lam_i = i^-alpha``
    (``lam`` spanning ``decades`` decades, at most ``max_modes`` modes) and
    ``noise_var_i = lam_i^kappa``. The exponent is fitted between 10x the fastest
    and 1/10 of the slowest relaxation time ``(1 - beta)/(lr lam)``, where the
    spectrum, not its ends, sets the growth. Returns (steps, msd, exponent)."""
    n_modes = int(min(max_modes, np.ceil(10 ** (decades / alpha))))
    lam = np.arange(1, n_modes + 1, dtype=float) ** -alpha
    tau = (1 - hp.momentum) / (hp.lr * lam)
    t_lo, t_hi = max(10 * tau.min(), 10.0), tau.max() / 10
    steps = np.unique(np.logspace(0, np.log10(100 * tau.max()), 50).astype(int))
    msd = theory.msd_from_start(lam, lam**kappa, 0.0, 0.0, steps, hp)
    sel = (steps >= t_lo) & (steps <= t_hi)
    c = np.polyfit(np.log(steps[sel]), np.log(msd[sel]), 1)[0] if sel.sum() >= 3 else np.nan
    return steps, msd, float(c)


def power_law(path, dpi: int) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    pal = sns.color_palette()
    base = Hyperparameters(lr=0.1, batch_size=32, momentum=0.9, weight_decay=0.0)
    for i, alpha in enumerate((1.0, 1.5, 2.0, 3.0)):
        steps, msd, c = power_law_exponent(alpha, 1.0, base)
        axes[0].plot(steps, msd, color=pal[i], label=f"α={alpha:g}: c={c:.2f}")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="SGD step t",
        ylabel="$E\\|\\theta_t - \\theta_0\\|^2$",
        title="λ_i = i^-α over 5 decades, noise ∝ λ (C ~ H)",
    )
    axes[0].legend(fontsize=7)
    alphas = np.linspace(1.0, 3.0, 7)
    for j, kappa in enumerate((0.0, 0.5, 1.0, 2.0)):
        axes[1].plot(
            alphas,
            [power_law_exponent(a, kappa, base)[2] for a in alphas],
            "o-",
            ms=3,
            color=pal[j],
            label=f"noise ∝ λ^{kappa:g}",
        )
    axes[1].set(xlabel="spectral decay α", ylabel="fitted exponent c", title="exponent vs spectrum and noise")
    axes[1].legend(fontsize=7)
    lrs = np.logspace(-3, 0, 7)
    axes[2].plot(
        lrs,
        [power_law_exponent(2.0, 1.0, Hyperparameters(lr, 32, 0.9, 0.0))[2] for lr in lrs],
        "o-",
        ms=3,
        color=pal[0],
        label="vs lr (β=0.9)",
    )
    axes[2].set(xscale="log", xlabel="learning rate", ylabel="fitted exponent c", title="α=2, noise ∝ λ")
    betas = np.array([0.0, 0.5, 0.8, 0.9, 0.95, 0.99])
    axes[3].plot(
        betas,
        [power_law_exponent(2.0, 1.0, Hyperparameters(0.1, 32, b, 0.0))[2] for b in betas],
        "o-",
        ms=3,
        color=pal[1],
        label="vs β (lr=0.1)",
    )
    for bs, ls in ((8, ":"), (128, "--")):
        axes[3].plot(
            betas,
            [power_law_exponent(2.0, 1.0, Hyperparameters(0.1, bs, b, 0.0))[2] for b in betas],
            ls=ls,
            color="0.4",
            label=f"S={bs} (S only rescales D(t))",
        )
    axes[3].set(xlabel="momentum β", ylabel="fitted exponent c", title="α=2, noise ∝ λ")
    axes[3].legend(fontsize=7)
    fig.suptitle(
        "A power-law Hessian spectrum gives a power-law distance from the start (exact discrete theory, "
        "start at the fixed point; c fitted between 10x the fastest and 1/10 of the slowest relaxation time)",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path, dpi)
