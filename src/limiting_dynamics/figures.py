"""Every figure, in one place (torch-free, and free of matplotlib: the Snakefile imports it).

Each entry of :data:`FIGURES` says, for ``results/figures/<name>.<format>``:

- ``category``: its category in the HTML report;
- ``draw``: its plotting function, ``"module.function"`` of :mod:`limiting_dynamics.plots`
  (imported only when the figure is drawn, by the plot stage);
- ``inputs``: its input files by role. The role is the name of the plotting
  function's parameter that receives them (opened: one object, or a list for
  :func:`each`), the rule's input name, and the ``ROLE=PATH`` of
  ``limiting-dynamics plot FIGURE --inputs``;
- ``settings``: the ``plots`` parameters the function takes by name (besides ``path`` and ``dpi``);
- ``needs``: the workflow's switches that must all be on for the default target
  to ask for the figure (``figure_switches`` in workflow/rules/common.smk);
- ``caption``: its caption in the report (reStructuredText).

An input pattern names the cells it runs over by a placeholder that
workflow/rules/common.smk fills in (``figure_context``, the names in
:data:`CONTEXT`): ``{probed}`` each probed cell, ``{phase_cell}`` the
phase-space figure's cell, ``{linreg}`` each linear-regression cell.
"""

from __future__ import annotations

import inspect
import itertools
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

# the placeholders of input patterns (each a cell id, or a list of them)
CONTEXT = ("probed", "phase_cell", "linreg")
# the switches a figure can need (each on or off for a config)
SWITCHES = ("hessian", "drift", "landscape", "comparison", "modes", "linear_regression")
# how the plot stage opens a file of each kind (stages.plot.READERS)
READS = ("dataset", "hessian", "table", "table_by_cell")


@dataclass(frozen=True)
class Inputs:
    """The files of one role: every pattern, expanded over its placeholder's cells."""

    patterns: tuple[str, ...]
    many: bool  # the function gets a list (else the one file's contents)
    read: str  # how each file is opened (READS)

    def paths(self, context: Mapping[str, str | list[str]]) -> list[str]:
        out = []
        for pattern in self.patterns:
            names = [n for _, n, _, _ in string.Formatter().parse(pattern) if n]
            values = [[context[n]] if isinstance(context[n], str) else list(context[n]) for n in names]
            out += [pattern.format(**dict(zip(names, combo))) for combo in itertools.product(*values)]
        return out


def _read(pattern: str, read: str | None) -> str:
    return read or ("table" if pattern.endswith(".csv") else "dataset")


def one(pattern: str, read: str | None = None) -> Inputs:
    """One file (a NetCDF file opens as a dataset, a CSV file as a table, unless ``read`` says otherwise)."""
    return Inputs((pattern,), many=False, read=_read(pattern, read))


def each(*patterns: str, read: str | None = None) -> Inputs:
    """A list of files: every pattern, over every cell its placeholder names."""
    return Inputs(patterns, many=True, read=_read(patterns[0], read))


@dataclass(frozen=True)
class Figure:
    """One figure (the fields are described at the top of this module)."""

    category: str
    draw: str
    caption: str
    inputs: dict[str, Inputs] = field(default_factory=dict)
    settings: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "caption", inspect.cleandoc(self.caption))


# inputs that several figures read
TRAJECTORIES = one("results/trajectories/all_cells.nc")
SUMMARY = one("results/analysis/summary.csv", read="table_by_cell")
COMPARISONS = each("results/analysis/theory/{probed}.nc")
LINREG = {
    "cells": each("results/linear_regression/{linreg}.nc"),
    "tables": each("results/linear_regression/comparison.csv", "results/linear_regression/discrete_vs_continuous.csv"),
}

FIGURES: dict[str, Figure] = {
    "convergence": Figure(
        "Convergence",
        "runs.convergence",
        inputs={"history": one("results/converge/history.nc")},
        caption="""
        Reaching convergence: train and test cross-entropy (log scale) and accuracy per
        epoch, in eval mode, and the learning rate of the cosine schedule. The final
        weights are theta_0 of every hyperparameter cell (each cell then runs its own
        burn-in at its own hyperparameters before recording).
        """,
    ),
    "msd": Figure(
        "Diffusion",
        "runs.msd",
        inputs={"traj": TRAJECTORIES, "summary": SUMMARY},
        caption="""
        Squared distance from the start of recording, ``||theta_t - theta_0||^2``, against
        the number of SGD steps on log-log axes, one panel per hyperparameter cell. The
        total (blue) is split per parameter tensor into its radial part (change of norm,
        which weight decay drives on BatchNorm-scaled weights) and the angular rest. Dashed
        lines are least-squares power laws ``t^c`` fitted over the configured window on
        log-spaced points; the legend gives ``c`` with its 95% bootstrap
        interval (resampling parameter tensors). ``c = 1`` is Brownian motion, ``c = 2`` ballistic drift.
        """,
    ),
    "rotation": Figure(
        "Diffusion",
        "runs.rotation",
        inputs={"traj": TRAJECTORIES, "summary": SUMMARY},
        caption="""
        How far the scale-invariant weights (those feeding BatchNorm) have turned from
        theta_0: the norm-weighted root-mean-square angle over those tensors, per seed.
        Their gradient is orthogonal to them, so once weight decay and noise balance
        their norm they move on spheres, and any walk on a sphere saturates: a Brownian
        walk's apparent exponent has dropped to 0.95 at 0.44 rad (dashed) and to 0.5 at
        1.28 rad. Where the fit window of ``c`` (dotted) lies beyond the dashed line,
        the measured exponent is bent by the sphere; ``c_small_angle`` in the summary is
        fitted over the part of the run before it.
        """,
    ),
    "local_displacement": Figure(
        "Diffusion",
        "runs.local_displacement",
        inputs={"traj": TRAJECTORIES, "summary": SUMMARY},
        settings=("smoothing",),
        caption="""
        Per-step squared displacement ``||theta_{t+1} - theta_t||^2 = lr^2 ||v_t||^2``
        of every run as a rolling mean over ``plots.smoothing`` steps, one colour per
        seed (the legend gives each run's stationarity ratio, the largest over the
        smallest rolling mean), for each cell, with two consistency checks of its
        stationary level, means over seeds: dashed, the noise formula with the
        gradients read off the run's own momentum buffers; dotted, the norm
        equilibrium of the scale-invariant weights plus that formula for the rest
        (an identity at stationarity). Neither is a prediction: the prediction, from
        the gradient noise of independent minibatches
        ``lr^2 tr Cov(g_S) / (1 - beta^2)``, is the predictions table's
        ``measured_over_predicted``.
        """,
    ),
    "scaling": Figure(
        "Hyperparameters",
        "runs.hyperparameter_scaling",
        inputs={"summary": SUMMARY},
        settings=("default",),
        caption="""
        Top: the diffusion exponent ``c`` of the squared distance and of the distance
        measured along the spheres of the scale-invariant weights, against each
        hyperparameter swept one at a time around the default cell: every seed's run
        with its 95% bootstrap interval (faint) and the mean over seeds with one
        standard deviation between them (joined). Dotted: Brownian ``c = 1``. Bottom:
        the stationary local displacement of every run (2 standard errors), two
        consistency checks of it (crosses: the noise formula with the gradients read
        off the run; triangles: the norm equilibrium of the scale-invariant weights
        plus the noise formula for the rest), and the paper's scaling
        ``lr^2 tr(C) / (S (1 - beta^2))`` with its single constant ``tr(C)`` fitted on
        the default cell (dashed). Where the step departs from the dashed line, the
        noise trace itself changes with the hyperparameters: the settled norm of the
        scale-invariant weights sets it.
        """,
    ),
    "metrics": Figure(
        "Performance",
        "runs.metrics",
        inputs={"traj": TRAJECTORIES},
        caption="""
        Train (solid) and test (dashed) cross-entropy and accuracy, evaluated in eval mode
        on the full training and test sets at the configured interval during each limiting
        run. Flat curves show that performance has converged while the weights keep moving.
        """,
    ),
    "hessian_spectrum": Figure(
        "Hessian",
        "runs.hessian_spectrum",
        inputs={"cells": each("results/hessian/{probed}.nc", read="hessian")},
        needs=("hessian",),
        caption="""
        The Hessian of the loss SGD samples (BatchNorm in the mode given in the
        config) at each probed run's own theta_0, after its burn-in. Left: the top
        eigenvalues found by Lanczos with full reorthogonalisation (the number of
        Hessian-vector products in the title). Right: the spectral density from
        stochastic Lanczos quadrature (Gaussian-smoothed, log scale; grey lines: the
        top eigenvalues) and the Hutchinson estimate of the trace with its standard
        error.
        """,
    ),
    "theory_modes": Figure(
        "Theory vs experiment",
        "network_vs_theory.theory_modes",
        inputs={"cells": COMPARISONS, "predictions": one("results/analysis/predictions.csv", read="table_by_cell")},
        needs=("comparison", "modes"),
        caption="""
        Theory against experiment along the top Hessian eigenvectors, one row per
        family (spherical: the default cell's top 5 modes; quadratic: the top 10 modes
        of every cell of the quadratic family; the same sets as the results page).
        Filled markers are predictions: the Hessian at each run's own theta_0 and the
        gradient noise of independent minibatches along each eigenvector, turned by
        the exact discrete theory of SGD with momentum on a quadratic into the
        stationary variance of the position ``u_i^T theta`` and of the momentum buffer
        ``u_i^T v`` and the oscillation frequency (underdamped modes only), compared
        with the run over its mode window. Open markers are consistency checks: the
        same theory with the noise read off the run's own momentum buffer. Right: the
        stationary local displacement of every run against its prediction from
        independent noise (filled, 2 standard errors) and the two checks (open).
        Dashed: equality. Titles: median measured/predicted over the markers shown.
        """,
    ),
    "theory_validity": Figure(
        "Theory vs experiment",
        "network_vs_theory.theory_validity",
        inputs={"cells": COMPARISONS},
        needs=("comparison", "modes"),
        caption="""
        Where the quadratic per-mode theory holds, every run of both families against
        its learning rate: how long the top-5 eigenvectors of theta_0 stay eigenvectors
        (relative residual below 0.5 at the steps the run kept; red bars: the end of the
        mode window), and the measured over predicted position variance, velocity
        variance and oscillation frequency per mode (green band: within [0.8, 1.25]).
        The frequency's bars span two Cramér-Rao standard deviations: no unbiased
        estimate from one window of that length is more precise, so a ratio outside
        the green band but inside its bar is what the window allows. The orange
        bands of the variances are what one window expects of the ratio, ± 2 of its
        standard deviations (theory.window_variance_scatter): a single run reads a
        position variance only to within about 40%.
        """,
    ),
    "phase_space": Figure(
        "Theory vs experiment",
        "network_vs_theory.phase_space",
        inputs={
            "traj": one("results/trajectories/{phase_cell}.nc"),
            "comparison": one("results/analysis/theory/{phase_cell}.nc"),
        },
        needs=("comparison", "modes"),
        caption="""
        One run in phase space along its three top Hessian eigenvectors (the first
        cell of the quadratic family when there is one, where the eigenvectors hold
        and the top modes oscillate; else the default cell): position
        ``u_i^T(theta_k - theta_0)`` against momentum buffer ``u_i^T v_k`` for the last
        steps of the mode window (coloured by step), with the predicted stationary 95%
        ellipse (exact discrete theory, eigenvalue at theta_0, independent noise)
        centred on the window's mean. Bottom: the position over the whole run with
        the predicted +-2 standard deviations; the mode window is shaded.
        """,
    ),
    "theory_msd": Figure(
        "Theory vs experiment",
        "network_vs_theory.theory_msd",
        inputs={"cells": COMPARISONS},
        needs=("comparison",),
        caption="""
        What a fixed quadratic can and cannot explain. Per run: the measured squared
        distance from theta_0 (dots), the measured stationary lag-MSD from the
        block-sign sketch recorded every step (line), and the predicted stationary
        lag-MSD built from the measured Hessian spectrum and the noise of independent
        minibatches: the top eigenvectors with their measured noise plus the bulk of
        the SLQ spectral density carrying the rest of the measured ``tr C`` (dashed),
        and the top modes alone (dotted). How the bulk's noise spreads over its
        eigenvalues is the one assumption (``sigma^2 ~ lam^s``, ``s`` measured on the
        top modes); the band spans ``s = 0`` to ``s = 1``. The shaded lags are where
        the prediction is within 25% of the measurement. Thin lines: two standard
        deviations of one stationary run's measurement about the prediction, for the
        time average (red) and for the exact distance from theta_0, one anchor (blue,
        dashed). The sketch adds a bias of its own (reported per run); a run that
        started away from its stationary state drifts, and the dots show it.
        """,
    ),
    "noise_curvature": Figure(
        "Theory vs experiment",
        "network_vs_theory.noise_curvature",
        inputs={"cells": COMPARISONS},
        needs=("comparison",),
        caption="""
        Per-sample gradient noise ``sigma_i^2 = u_i^T C u_i`` along each top
        eigenvector from independent minibatches (filled; open: read off the run's
        momentum buffer), corrected for the sampling scheme, against the Hessian
        eigenvalue, per run, with the least-squares slope in the legend. The paper
        assumes ``C ~ H`` (slope 1, dashed).
        """,
    ),
    "loss_landscape": Figure(
        "Theory vs experiment",
        "network_vs_theory.loss_landscape",
        inputs={"landscape": one("results/landscape/landscape.nc")},
        needs=("hessian", "landscape"),
        caption="""
        Train loss (training subset) and test loss, both in eval mode, on the plane
        through the default cell's theta_0 spanned by two Hessian eigenvectors, with the
        limiting run's projection on that plane (the grid spans the trajectory's
        largest excursion times the configured factor). The paper used eigenvectors 1
        and 30 on a 40 x 40 grid.
        """,
    ),
    "eigenvector_drift": Figure(
        "Theory vs experiment",
        "network_vs_theory.eigenvector_drift",
        inputs={"cells": each("results/drift/{probed}.nc")},
        needs=("drift",),
        caption="""
        How long the Hessian eigenvectors of theta_0 stay eigenvectors, one row per
        probed cell (its seeds together). The limiting run keeps its weights at a few
        steps, and there the Hessian of the same loss is applied to each eigenvector
        ``u_i`` of theta_0: left, the relative
        residual ``||H u_i - (u_i^T H u_i) u_i|| / u_i^T H u_i`` (0 for an eigenvector;
        the dashed line is where it counts as one no longer); right, the curvature
        along ``u_i`` over its eigenvalue at theta_0. The dotted line is one
        oscillation period of the top mode: a per-mode comparison needs the
        eigenvectors to hold over several periods.
        """,
    ),
    "linreg_phase_space": Figure(
        "Linear regression",
        "theory_engine.phase_space",
        inputs=LINREG,
        needs=("linear_regression",),
        caption="""
        SGD with momentum on least squares (digits pixels plus bias regressed on the label)
        started a small distance away from theta* along the top two Hessian eigenvectors,
        one column per momentum (batches drawn with replacement). Top rows: the position
        along eigenvector 1 and 2 over steps: a few single chains (grey), the mean of all
        chains (orange) and the exact discrete theory's mean (dashed) with its 95% band
        (noise taken at the fixed point). Bottom row: the mean motion in phase space
        (position vs momentum buffer), theory and chains. Higher momentum turns the
        overdamped relaxation into slowly decaying spirals.
        """,
    ),
    "linreg_frequency": Figure(
        "Linear regression",
        "theory_engine.frequency",
        inputs=LINREG,
        needs=("linear_regression",),
        caption="""
        Frequency of the largest peak of the periodogram of the chains' fluctuations along
        each top eigenvector (second half of the run, from theta*), against the
        eigenvalue, with the exact discrete theory (argument of the one-step propagator's
        eigenvalues) and the continuous model (``sqrt(omega^2 - gamma^2)``). Zero means
        overdamped; a peak at the lowest resolvable frequency reflects the run length.
        """,
    ),
    "linreg_theory": Figure(
        "Linear regression",
        "theory_engine.theory_vs_simulation",
        inputs=LINREG,
        needs=("linear_regression",),
        caption="""
        Linear regression: simulation against the exact discrete-time theory (solid) and
        the paper's continuous model (dotted). Top: distance from theta*, lag-MSD and the
        squared momentum buffer. Bottom: variances along the top eigenvectors (all cells,
        starts and steps) against theory; z-scores of every comparison (dashed: +-2); the
        continuous model's relative error in the stationary variances as ``lr (lambda + wd)``
        grows.
        """,
    ),
    "linreg_sampling": Figure(
        "Linear regression",
        "theory_engine.sampling",
        inputs=LINREG,
        needs=("linear_regression",),
        caption="""
        Batches reshuffled every epoch (a DataLoader's order) against i.i.d. batches: the
        variance along the top eigenvectors over steps, simulated (solid), exact
        reshuffling theory (dashed) and i.i.d. theory with only the finite-population
        factor ``(N - S)/(N - 1)`` (dotted). Within an epoch the batches' noise sums to
        zero, so modes slower than an epoch see much less noise than i.i.d. sampling gives.
        """,
    ),
    # the theory engine's own figures read no file; drawn with the linear-regression check
    "theory_ou_currents": Figure(
        "Theory",
        "theory_engine.ou_currents",
        needs=("linear_regression",),
        caption="""
        The paper's two-dimensional example of a modified loss: an Ornstein-Uhlenbeck
        process with Hessian eigenvectors (-1, 1), (1, 1), eigenvalues 4 and 1, and
        diffusion diag(4, 1). Left: the training loss. Right: the modified potential
        ``U`` whose Boltzmann density is the stationary density; the red streamlines are
        the probability current ``-Q grad U`` (``Q`` antisymmetric) that makes trajectories
        circulate instead of sampling the loss. Grey: one simulated trajectory.
        """,
    ),
    "theory_power_law": Figure(
        "Theory",
        "theory_engine.power_law",
        needs=("linear_regression",),
        caption="""
        Exact discrete theory for a synthetic spectrum ``lambda_i = i^-alpha`` (400 modes)
        with gradient noise ``noise_var_i = lambda_i^kappa``, started at the fixed point.
        The distance from the start grows as a power law over decades with an exponent
        ``c`` set by the spectral decay, the noise structure, the learning rate and the
        momentum; the batch size only rescales the curve.
        """,
    ),
}


def figure_files(name: str, context: Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    """The input files of figure ``name`` by role, its patterns filled from ``context`` (see :data:`CONTEXT`)."""
    return {role: spec.paths(context) for role, spec in FIGURES[name].inputs.items()}


def figures_requested(switches: Mapping[str, bool]) -> list[str]:
    """The figures whose every needed switch is on (``switches``: each name of :data:`SWITCHES`)."""
    return [name for name, fig in FIGURES.items() if all(switches[s] for s in fig.needs)]
