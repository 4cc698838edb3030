"""The diffusion exponent ``c`` over windows matched across cells.

Over a fixed window of steps, ``c`` differs between cells for a reason the
theory states outright: to leading order (overdamped modes, noise covariance
scaling as ``1 / S``, the spherical weights at their norm equilibrium) the
distance from theta_0 is ``D(t) = [lr / (S (1 - beta))] F(tau)`` with
``tau = lr t / (1 - beta)`` (docs/theory.md, "Comparing c across cells"). Its
log-slope ``c`` is then a function of ``tau`` alone, and ``F`` bends over as
modes saturate and the weights turn on their spheres, so over the same steps a
larger lr or beta reaches a larger ``tau`` and shows a smaller ``c`` by a change
of time unit alone; S only scales ``D``. A difference between cells is
evidence of something beyond that only when ``c`` is compared over the same
range of ``tau``, or over the same range of the rotation angle of the
scale-invariant weights (the other clock of the spherical regime).

* :func:`time_window`: the range of ``tau`` every run of a family covers,
  starting after :data:`MOMENTUM_TIMES` memory times ``1 / (1 - beta)`` of the
  slowest-forgetting cell (before that the walk is ballistic, ``c`` near 2,
  and the collapse does not hold);
* :func:`angle_window`: the range of the rms angle every run covers;
* :func:`matched_table`: per run, ``c`` (with the bootstrap interval of
  :func:`.diffusion.fit_exponent`) over both windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import diffusion
from .hyperparameters import NAMES as HYPERPARAMETERS

MOMENTUM_TIMES = 3.0  # matched windows start after this many momentum memory times 1 / (1 - beta) ...
FIRST_STEP = 10  # ... and not before this step
MIN_SPAN = 3.0  # a window narrower than this ratio of its ends gets no fit (NaN)

#: The leading-order theory's sign of dc/d(hyperparameter) over a fixed window of
#: steps and over a matched window of tau: -1 falls, 0 no dependence.
THEORY_SIGN = {
    "fixed_steps": {"lr": -1, "momentum": -1, "batch_size": 0},
    "matched_time": {"lr": 0, "momentum": 0, "batch_size": 0},
}


@dataclass
class Run:
    """What the matched fits read of one trajectory."""

    cell: str
    family: str
    hyperparameters: dict
    steps: np.ndarray  # tensor_step
    parts: np.ndarray  # (tensor_step, tensor): per-tensor squared distance from theta_0
    angle: np.ndarray  # rms rotation angle of the scale-invariant tensors (rad), running maximum

    @property
    def time_unit(self) -> float:
        """``lr / (1 - beta)``: tau per step."""
        return float(self.hyperparameters["lr"]) / (1.0 - float(self.hyperparameters["momentum"]))

    @property
    def start_step(self) -> float:
        """The first step a matched window may use: past the momentum's memory."""
        return max(float(FIRST_STEP), MOMENTUM_TIMES / (1.0 - float(self.hyperparameters["momentum"])))


def load_run(ds) -> Run:
    """A :class:`Run` from a trajectory Dataset (:mod:`.trajectory`)."""
    angle = np.asarray(ds["rotation_angle_si"].values, float)
    return Run(
        cell=str(ds.attrs["cell"]),
        family=str(ds.attrs.get("family", "spherical")),
        hyperparameters={k: ds.attrs[k] for k in HYPERPARAMETERS},
        steps=np.asarray(ds["tensor_step"].values, float),
        parts=diffusion.tensor_parts(ds)["sq_dist_from_start"],
        angle=np.maximum.accumulate(np.nan_to_num(angle, nan=0.0)),
    )


def time_window(runs: list[Run]) -> tuple[float, float]:
    """``(tau_lo, tau_hi)`` covered by every run past its momentum memory
    (``tau_lo >= tau_hi``: no common window)."""
    lo = max(r.time_unit * r.start_step for r in runs)
    hi = min(r.time_unit * r.steps[-1] for r in runs)
    return lo, hi


def angle_window(runs: list[Run]) -> tuple[float, float]:
    """``(angle_lo, angle_hi)`` in rad that every run covers past its momentum
    memory; ``(nan, nan)`` when no run has scale-invariant weights."""
    if not all(r.angle[-1] > 0 for r in runs):
        return float("nan"), float("nan")
    lo = max(float(np.interp(r.start_step, r.steps, r.angle)) for r in runs)
    hi = min(float(r.angle[-1]) for r in runs)
    return lo, hi


def step_at_angle(run: Run, angle: float) -> float:
    """The first recorded step at which the run's (running-maximum) angle reaches ``angle``."""
    i = int(np.searchsorted(run.angle, angle))
    return float(run.steps[min(i, len(run.steps) - 1)])


def fit_steps(run: Run, t_lo: float, t_hi: float, cfg: dict, rng: np.random.Generator) -> diffusion.ExponentFit | None:
    """``c`` over steps ``[t_lo, t_hi]`` of one run (None when the window is
    narrower than :data:`MIN_SPAN` or outside the run)."""
    last = float(run.steps[-1])
    if not (np.isfinite(t_lo) and np.isfinite(t_hi)) or t_hi < MIN_SPAN * t_lo or t_hi > last * (1 + 1e-9):
        return None
    return diffusion.fit_exponent(
        run.steps,
        run.parts,
        window=(t_lo / last, t_hi / last),
        n_points=int(cfg["fit_points"]),
        n_boot=int(cfg["bootstrap_samples"]),
        rng=rng,
    )


def _columns(prefix: str, fit: diffusion.ExponentFit | None) -> dict:
    if fit is None:
        return {prefix: np.nan, f"{prefix}_low": np.nan, f"{prefix}_high": np.nan}
    return {prefix: fit.c, f"{prefix}_low": fit.c_low, f"{prefix}_high": fit.c_high}


def matched_table(runs: list[Run], cfg: dict) -> pd.DataFrame:
    """One row per run: ``c`` over its family's common window of ``tau``
    (``c_matched_time``) and of the rotation angle (``c_matched_angle``), each
    with its bootstrap interval, the windows (in tau, rad and this run's
    steps) and the angle the run has turned by the end of the time window
    (under norm equilibrium it depends on wd and tau only, so it should agree
    between cells of one wd). ``cfg`` is the ``analysis`` section."""
    rng = np.random.default_rng(int(cfg["seed"]))
    rows = []
    for family in sorted({r.family for r in runs}):
        members = [r for r in runs if r.family == family]
        tau_lo, tau_hi = time_window(members)
        a_lo, a_hi = angle_window(members)
        for r in members:
            t_lo, t_hi = tau_lo / r.time_unit, tau_hi / r.time_unit
            time_fit = fit_steps(r, t_lo, t_hi, cfg, rng)
            s_lo, s_hi = (step_at_angle(r, a_lo), step_at_angle(r, a_hi)) if a_hi > a_lo else (np.nan, np.nan)
            angle_fit = fit_steps(r, s_lo, s_hi, cfg, rng)
            rows.append(
                {
                    "cell": r.cell,
                    **r.hyperparameters,
                    "family": family,
                    "matched_time_lo": tau_lo,
                    "matched_time_hi": tau_hi,
                    "matched_time_step_lo": t_lo,
                    "matched_time_step_hi": t_hi,
                    **_columns("c_matched_time", time_fit),
                    "rotation_angle_at_matched_time_hi": float(np.interp(t_hi, r.steps, r.angle)),
                    "matched_angle_lo": a_lo,
                    "matched_angle_hi": a_hi,
                    "matched_angle_step_lo": s_lo,
                    "matched_angle_step_hi": s_hi,
                    **_columns("c_matched_angle", angle_fit),
                }
            )
    return pd.DataFrame(rows).set_index("cell")
