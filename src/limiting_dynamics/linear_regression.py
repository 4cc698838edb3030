"""The exactly solvable experiment: SGD with momentum on least squares over real data.

Features are scikit-learn's digits pixels (scaled to [0, 1]) plus a bias, the
target is the digit's label. With ``L(theta) = 1/(2N) sum_n (x_n^T theta - y_n)^2``
the Hessian is ``H = X^T X / N`` everywhere and the per-sample gradient is
``x_n (x_n^T theta - y_n)``, so the gradient noise depends on the state. The
theory takes it at the fixed point ``theta_fp = (H + wd I)^{-1} H theta*``;
:func:`state_dependent_noise` measures what that leaves out.

Many independent chains of PyTorch-convention SGD with momentum run side by side
(vectorised in numpy), with minibatches drawn with replacement or by
reshuffling every epoch, from ``theta*`` and from a start displaced along the
top two eigenvectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import theory
from .errors import LinearRegressionError  # noqa: F401  (re-exported: lr.LinearRegressionError)
from .hyperparameters import Hyperparameters


@dataclass
class Problem:
    x: np.ndarray  # (N, d) features, last column the bias
    y: np.ndarray  # (N,) targets
    theta_star: np.ndarray  # least-squares solution (minimum norm)
    hessian: np.ndarray  # X^T X / N
    eigvals: np.ndarray  # descending
    eigvecs: np.ndarray  # columns, same order

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.x.shape[1]


def digits_problem() -> Problem:
    """Digits pixels / 16 plus a bias column, regressed on the label (all 1,797 images)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.hstack([digits.data / 16.0, np.ones((digits.data.shape[0], 1))])
    return make_problem(x, digits.target.astype(float))


def make_problem(x: np.ndarray, y: np.ndarray) -> Problem:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    theta_star = np.linalg.lstsq(x, y, rcond=None)[0]
    h = x.T @ x / x.shape[0]
    w, u = np.linalg.eigh(h)
    order = np.argsort(w)[::-1]
    return Problem(x, y, theta_star, h, np.maximum(w[order], 0.0), u[:, order])


def per_sample_gradients(problem: Problem, theta: np.ndarray) -> np.ndarray:
    return problem.x * (problem.x @ theta - problem.y)[:, None]


def noise_covariance(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """Per-sample gradient covariance at ``theta`` (normalised by 1/N)."""
    g = per_sample_gradients(problem, theta)
    g = g - g.mean(axis=0)
    return g.T @ g / problem.n


def state_dependent_noise(problem: Problem, position_cov: np.ndarray) -> float:
    """Relative size of the noise the fixed-point approximation leaves out.

    With ``theta = theta_fp + delta`` and ``E delta = 0``, the mean per-sample
    covariance is ``C(theta_fp) + (1/N) sum_n (x_n^T S x_n) x_n x_n^T - H S H``
    for ``S = Cov(delta)``; returns the trace of the extra term over
    ``tr C(theta_fp)`` (the fixed point enters through ``problem``'s caller).
    """
    q = np.einsum("ni,ij,nj->n", problem.x, position_cov, problem.x)
    extra = (problem.x * q[:, None]).T @ problem.x / problem.n - problem.hessian @ position_cov @ problem.hessian
    return float(np.trace(extra))


def state_dependent_path(
    problem: Problem,
    hp: Hyperparameters,
    x0: np.ndarray,
    steps: int,
    modes: np.ndarray,
    lag_anchor: int,
    lags: np.ndarray,
) -> tuple[xr.Dataset, np.ndarray]:
    """Exact moments of SGD on least squares with batches drawn with replacement,
    state-dependent noise included.

    The minibatch gradient is linear in theta and the batch draw independent of
    it, so the second moments close: ``E[Cov(xi | theta)] = E[C(theta)] / S`` with
    ``E C(theta) = C(mu) + (1/N) sum_n (x_n^T Sigma x_n) x_n x_n^T - H Sigma H`` for
    ``theta ~ (mu, Sigma)``, the noise term of :func:`theory.moment_path`. Returns
    the same fields as :func:`theory.dense_path` and the lag-MSD from
    ``lag_anchor`` (``Cov(z_{k+tau}, z_k) = A^tau Sigma_k``).
    """
    fp = theory.fixed_point(problem.hessian, problem.theta_star, hp.weight_decay)
    sysm = theory.dense_system(problem.hessian, np.zeros_like(problem.hessian), hp)
    d = problem.d
    x, y, h = problem.x, problem.y, problem.hessian

    def noise(z: np.ndarray, cov: np.ndarray) -> np.ndarray:
        cxx = cov[:d, :d]
        resid = x @ (fp + z[:d]) - y
        weight = resid**2 + ((x @ cxx) * x).sum(axis=1)
        gbar = x.T @ resid / problem.n
        c_mean = (x * weight[:, None]).T @ x / problem.n - np.outer(gbar, gbar) - h @ cxx @ h
        return c_mean / hp.batch_size

    anchor = int(lag_anchor)
    path, kept = theory.moment_path(
        sysm,
        np.concatenate([x0, np.zeros(d)]),
        steps,
        project=modes,
        extra_noise=noise,
        keep={anchor} | {anchor + int(t) for t in lags},
    )
    lag = []
    za, ca = kept[anchor]
    for t in lags:
        zt, ct = kept[anchor + int(t)]
        cross = np.linalg.matrix_power(sysm.A, int(t)) @ ca
        diff = ct + ca - cross - cross.T
        lag.append(np.sum((zt[:d] - za[:d]) ** 2) + np.trace(diff[:d, :d]))
    return path, np.asarray(lag)


@dataclass(frozen=True)
class Cell:
    """One cell of the check: the hyperparameters (their seed seeds the chains) and the sampling scheme."""

    hp: Hyperparameters
    sampling: str

    @property
    def name(self) -> str:
        return f"mom{self.hp.momentum:g}_{self.sampling}"


def simulate(
    problem: Problem,
    cell: Cell,
    theta_start: np.ndarray,
    steps: int,
    chains: int,
    kept: int,
    modes: np.ndarray,
    lag_anchor: int,
    lags: np.ndarray,
    rng: np.random.Generator,
) -> dict:
    """Run ``chains`` independent SGD chains for ``steps`` steps from ``theta_start`` (v = 0).

    Returns chain means and standard errors, every step, of ``||theta_k - theta_0||^2``
    and ``||v_k||^2``; the mean and variance of the projections of
    ``theta - theta_fp`` and ``v`` on the columns of ``modes``; the projections
    of the first ``kept`` chains; and the lag-MSD from ``lag_anchor``.
    """
    hp = cell.hp
    fp = theory.fixed_point(problem.hessian, problem.theta_star, hp.weight_decay)
    n, bs = problem.n, hp.batch_size
    per_epoch = n // bs
    theta = np.tile(theta_start, (chains, 1))
    v = np.zeros_like(theta)
    k_modes = modes.shape[1]
    out = {
        "msd": np.empty((steps + 1, 2)),
        "sq_velocity": np.empty((steps + 1, 2)),
        "position_mean": np.empty((steps + 1, k_modes)),
        "position_var": np.empty((steps + 1, k_modes)),
        "position_var_stderr": np.empty((steps + 1, k_modes)),
        "velocity_mean": np.empty((steps + 1, k_modes)),
        "velocity_var": np.empty((steps + 1, k_modes)),
        "chain_position": np.empty((kept, steps + 1, k_modes), dtype=np.float32),
        "chain_velocity": np.empty((kept, steps + 1, k_modes), dtype=np.float32),
        "lag_msd": np.full((len(lags), 2), np.nan),
    }
    lag_index = {int(lag_anchor) + int(t): j for j, t in enumerate(lags)}
    anchor_theta = None
    perm = None

    def record(k: int) -> None:
        nonlocal anchor_theta
        d2 = ((theta - theta_start) ** 2).sum(axis=1)
        v2 = (v**2).sum(axis=1)
        for key, val in (("msd", d2), ("sq_velocity", v2)):
            out[key][k] = val.mean(), val.std(ddof=1) / np.sqrt(chains)
        px, pv = (theta - fp) @ modes, v @ modes
        out["position_mean"][k], out["position_var"][k] = px.mean(axis=0), px.var(axis=0, ddof=1)
        # standard error of the variance from the chains themselves (the stationary
        # distribution is not Gaussian: minibatch noise on digits is heavy-tailed)
        out["position_var_stderr"][k] = ((px - px.mean(axis=0)) ** 2).std(axis=0, ddof=1) / np.sqrt(chains)
        out["velocity_mean"][k], out["velocity_var"][k] = pv.mean(axis=0), pv.var(axis=0, ddof=1)
        out["chain_position"][:, k] = px[:kept]
        out["chain_velocity"][:, k] = pv[:kept]
        if k == lag_anchor:
            anchor_theta = theta.copy()
        if k in lag_index and anchor_theta is not None:
            lag2 = ((theta - anchor_theta) ** 2).sum(axis=1)
            out["lag_msd"][lag_index[k]] = lag2.mean(), lag2.std(ddof=1) / np.sqrt(chains)

    record(0)
    rows = np.arange(chains)[:, None]
    for k in range(steps):
        if cell.sampling == "replacement":
            idx = rng.integers(0, n, size=(chains, bs))
        else:
            pos = k % per_epoch
            if pos == 0:
                perm = np.argsort(rng.random((chains, n)), axis=1)
            idx = perm[rows, pos * bs + np.arange(bs)[None, :]]
        xb = problem.x[idx]  # (chains, S, d)
        resid = np.einsum("csd,cd->cs", xb, theta) - problem.y[idx]
        grad = np.einsum("csd,cs->cd", xb, resid) / bs
        v = hp.momentum * v + grad + hp.weight_decay * theta
        theta = theta - hp.lr * v
        if not np.all(np.isfinite(theta)):
            raise FloatingPointError(
                f"linear-regression chains diverged at step {k + 1} ({cell.name}, "
                f"lr {hp.lr}); need {theory.STABILITY} for every mode"
            )
        record(k + 1)
    return out


def run_cell(
    problem: Problem,
    cell: Cell,
    steps: int,
    chains: int,
    kept: int,
    top_modes: int,
    displacement: float,
    lag_anchor: int,
    lags,
) -> xr.Dataset:
    """Simulation (seeded by ``cell.hp.seed``) and exact/continuous theory for one cell,
    from theta* and from a displaced start."""
    hp = cell.hp
    if not theory.stable_modes(problem.eigvals, hp).all():
        raise ValueError(
            f"lr {hp.lr} is unstable for this problem: lr (lam_max + wd) = "
            f"{hp.lr * (problem.eigvals[0] + hp.weight_decay):.3g}; need {theory.STABILITY} for every mode"
        )
    modes = problem.eigvecs[:, :top_modes]
    fp = theory.fixed_point(problem.hessian, problem.theta_star, hp.weight_decay)
    c_fp = noise_covariance(problem, fp)
    lags = np.asarray(lags, dtype=np.int64)
    starts = {
        "theta_star": problem.theta_star,
        "displaced": problem.theta_star + displacement * (modes[:, 0] + modes[:, 1]) / np.sqrt(2),
    }
    rng = np.random.default_rng(hp.seed)
    exact = theory.Setting(sampling=cell.sampling, n_samples=problem.n)  # the exact theory of the cell's sampling
    per_start = []
    for start in starts.values():
        sim = simulate(problem, cell, start, steps, chains, kept, modes, lag_anchor, lags, rng)
        x0, v0 = start - fp, np.zeros(problem.d)
        th = {}
        # discrete: exact for the cell's sampling; iid: discrete with replacement (what the
        # reshuffling changes); continuous: the paper's model (i.i.d. noise only)
        for name_, setting in (
            ("discrete", exact),
            ("iid", theory.DISCRETE),
            ("continuous", theory.CONTINUOUS),
        ):
            if name_ == "iid" and cell.sampling == "replacement":
                th[name_] = th["discrete"]
                continue
            path = theory.dense_path(
                problem.hessian,
                c_fp,
                x0,
                v0,
                steps,
                hp,
                setting=setting,
                project=modes,
            )
            lag = theory.dense_lag_msd_from_start(
                problem.hessian,
                c_fp,
                x0,
                v0,
                lag_anchor,
                lags,
                hp,
                setting=setting,
            )
            th[name_] = (path, lag)
        if cell.sampling == "replacement":
            th["statedep"] = state_dependent_path(problem, hp, x0, steps, modes, lag_anchor, lags)
        data = {
            "sim_msd_from_start": (("step",), sim["msd"][:, 0]),
            "sim_msd_from_start_stderr": (("step",), sim["msd"][:, 1]),
            "sim_sq_velocity": (("step",), sim["sq_velocity"][:, 0]),
            "sim_sq_velocity_stderr": (("step",), sim["sq_velocity"][:, 1]),
            "sim_lag_msd": (("lag",), sim["lag_msd"][:, 0]),
            "sim_lag_msd_stderr": (("lag",), sim["lag_msd"][:, 1]),
            "chain_position": (("chain", "step", "mode"), sim["chain_position"]),
            "chain_velocity": (("chain", "step", "mode"), sim["chain_velocity"]),
        }
        for key in ("position_mean", "position_var", "position_var_stderr", "velocity_mean", "velocity_var"):
            data[f"sim_{key}"] = (("step", "mode"), sim[key])
        for model, (path, lag) in th.items():  # discrete, iid, continuous[, statedep]
            data[f"{model}_msd_from_start"] = (("step",), path.msd_from_start.values)
            data[f"{model}_sq_velocity"] = (("step",), path.sq_velocity.values)
            data[f"{model}_lag_msd"] = (("lag",), lag)
            for key in ("position_mean", "position_var", "velocity_mean", "velocity_var"):
                data[f"{model}_{key}"] = (("step", "mode"), path[key].values)
        per_start.append(
            xr.Dataset(data, coords={"step": np.arange(steps + 1), "lag": lags, "mode": np.arange(1, top_modes + 1)})
        )
    ds = xr.concat(per_start, dim=xr.DataArray(list(starts), dims="start", name="start"))
    stationary = theory.dense_stationary_covariance(problem.hessian, c_fp, hp, setting=exact)[: problem.d, : problem.d]
    ds = ds.assign_coords(
        eigval=("mode", problem.eigvals[:top_modes]), noise_var=("mode", np.einsum("ij,ik,kj->j", modes, c_fp, modes))
    )
    ds.attrs.update(
        lr=hp.lr,
        batch_size=hp.batch_size,
        momentum=hp.momentum,
        weight_decay=hp.weight_decay,
        sampling=cell.sampling,
        cell=cell.name,
        n_samples=problem.n,
        n_features=problem.d,
        chains=chains,
        seed=hp.seed,
        lag_anchor=int(lag_anchor),
        displacement=displacement,
        noise_trace_at_fixed_point=float(np.trace(c_fp)),
        state_dependent_noise_fraction=state_dependent_noise(problem, stationary) / float(np.trace(c_fp)),
        continuous_model_noise="i.i.d. (the continuous model has no reshuffling)",
    )
    _describe(ds)
    return ds


_QUANTITIES = {  # variable name without its source prefix -> what it is
    "msd_from_start": "E||theta_k - theta_0||^2",
    "sq_velocity": "E||v_k||^2",
    "lag_msd": "E||theta_{k+tau} - theta_k||^2 from k = lag_anchor",
    "position_mean": "mean of u_i^T (theta_k - theta_fp)",
    "position_var": "variance of u_i^T (theta_k - theta_fp)",
    "velocity_mean": "mean of u_i^T v_k",
    "velocity_var": "variance of u_i^T v_k",
}
_SOURCES = {
    "sim": "simulated chains",
    "discrete": "exact discrete theory for the cell's sampling",
    "iid": "exact discrete theory, batches drawn with replacement",
    "continuous": "continuous model (i.i.d. noise)",
    "statedep": "exact theory with state-dependent noise",
}
_NAMES = {
    "start": "starting point: theta_star, or displaced along (u_1 + u_2) / sqrt(2)",
    "step": "SGD steps since the start",
    "lag": "lag tau (SGD steps)",
    "mode": "Hessian eigenvector (1 = largest eigenvalue)",
    "eigval": "Hessian eigenvalue of the mode",
    "noise_var": "per-sample gradient variance along the eigenvector at the fixed point",
    "chain_position": "u_i^T (theta_k - theta_fp) of single chains",
    "chain_velocity": "u_i^T v_k of single chains",
}


def _describe(ds: xr.Dataset) -> None:
    """CF ``units`` and ``long_name`` on every variable of a :func:`run_cell` Dataset."""
    for name in ds.variables:
        if name in _NAMES:
            long_name = _NAMES[name]
        else:
            source, _, rest = str(name).partition("_")
            long_name = f"{_QUANTITIES[rest.removesuffix('_stderr')]}: {_SOURCES[source]}"
            if rest.endswith("_stderr"):
                long_name = "standard error of " + long_name
        ds[name].attrs.update(units="1", long_name=long_name)


def comparison_table(ds: xr.Dataset, steps_at: list[int]) -> list[dict]:
    """Rows: quantity, start, step or lag, simulation, its standard error, the exact discrete
    theory for the cell's sampling and the z-score; the effect of the sampling scheme
    (discrete theory over its i.i.d. version); the continuous model's relative error
    against the discrete i.i.d. theory."""
    rows = []
    base = {"cell": ds.attrs["cell"], "momentum": ds.attrs["momentum"], "sampling": ds.attrs["sampling"]}
    for start in ds.start.values:
        s = ds.sel(start=start)

        def add(quantity, where, p, var_name, err=None):
            sim = float(p[f"sim_{var_name}"])
            err = float(p[f"sim_{var_name}_stderr"]) if err is None else err
            disc, iid, cont = (float(p[f"{m}_{var_name}"]) for m in ("discrete", "iid", "continuous"))
            exact = float(p[f"statedep_{var_name}"]) if f"statedep_{var_name}" in p else np.nan
            rows.append(
                {
                    **base,
                    "start": str(start),  # noqa: B023
                    "quantity": quantity,
                    "at": where,
                    "simulation": sim,
                    "stderr": err,
                    "discrete": disc,
                    "z_discrete": (sim - disc) / err if err > 0 else np.nan,
                    "rel_error_discrete": sim / disc - 1 if disc else np.nan,
                    "state_dependent": exact,
                    "z_state_dependent": (sim - exact) / err if err > 0 else np.nan,
                    "sampling_effect": disc / iid - 1 if iid else np.nan,
                    "continuous": cont,
                    "continuous_rel_error": cont / iid - 1 if iid else np.nan,
                }
            )

        for k in steps_at:
            p = s.sel(step=k)
            add("msd_from_start", f"step {k}", p, "msd_from_start")
            add("sq_velocity", f"step {k}", p, "sq_velocity")
            for m in s.mode.values:
                add(f"position_var_mode{m}", f"step {k}", p.sel(mode=m), "position_var")
        for t in s.lag.values:
            add("lag_msd", f"lag {int(t)} from step {ds.attrs['lag_anchor']}", s.sel(lag=t), "lag_msd")
    return rows


def discrete_vs_continuous(momenta, lr_lam=np.logspace(-4, 0, 9)) -> list[dict]:  # noqa: B008
    """Relative error of the continuous model's stationary variances against the exact
    discrete ones as ``lr * (lam + wd)`` grows (noise_var and S drop out of the ratio)."""
    rows = []
    for beta in momenta:
        hp = Hyperparameters(lr=1.0, batch_size=1, momentum=beta, weight_decay=0.0)
        d = theory.stationary_moments(lr_lam, 1.0, hp)
        c = theory.stationary_moments(lr_lam, 1.0, hp, setting=theory.CONTINUOUS)
        for i, x in enumerate(lr_lam):
            rows.append(
                {
                    "momentum": beta,
                    "lr_lam": float(x),
                    "position_var_rel_error": float(c.position_var[i] / d.position_var[i] - 1),
                    "velocity_var_rel_error": float(c.velocity_var[i] / d.velocity_var[i] - 1),
                }
            )
    return rows
