"""SGD with momentum on a quadratic loss: exact discrete-time moments and the
paper's continuous-time (underdamped Langevin) model.

Conventions (PyTorch SGD, see docs/theory.md): with ``a = lam + wd`` and
``x = u^T (theta - theta_fp)`` the coordinate of a Hessian eigen-mode relative
to the fixed point ``theta_fp = (H + wd I)^{-1} H theta*``,

    v_{k+1} = beta v_k + a x_k + xi_k
    x_{k+1} = x_k - lr v_{k+1}

i.e. ``z_{k+1} = A z_k + B xi_k`` for ``z = (x, v)`` with
``A = [[1 - lr a, -lr beta], [a, beta]]`` and ``B = [-lr, 1]^T``. ``xi_k`` is
the minibatch noise along the mode: variance ``noise_var / S`` for batches
drawn with replacement (``noise_var = u^T C u``, ``C`` the per-sample gradient
covariance normalised by 1/N). All times are SGD steps.

``Setting(model="discrete")`` solves this recursion exactly (matrix powers, discrete
Lyapunov equations). ``Setting(model="continuous")`` is the paper's approximation
``m x'' + (1 - beta) x' = -a x + noise`` with mass ``m = lr (1 + beta) / 2``,
noise intensity ``lr noise_var / S`` and ``t = lr k``; its velocity ``x'`` is
reported as the momentum buffer ``v = -x'``.

Sampling: ``"replacement"`` gives independent noise every step.
``"reshuffle"`` (a fresh permutation every epoch, ``M = floor(N / S)`` disjoint
batches per epoch, what a DataLoader does) makes the noise of two batches of
the same epoch anti-correlated: per step ``Var = (noise_var / S)(N - S)/(N - 1)``
and ``Cov = -noise_var / (N - 1)`` between distinct batches of one epoch. The
theory treats this exactly under one approximation: the per-sample gradients
are taken at the fixed point (state-independent noise). Runs start at the
beginning of an epoch; stationary quantities are averaged over the phase
within the epoch, as a time average over a long run is.

Undefined cases raise :class:`TheoryError`: a mode outside the stability region
(``0 < lr a < 2 (1 + beta)`` for the discrete recursion, ``a > 0`` for the
continuous model) has no stationary distribution; ``msd_from_start`` also
accepts marginal modes (``a = 0``), whose variance grows without bound.

Per-mode functions take arrays over modes and are vectorised over them; the
``dense_*`` functions take full ``H`` and ``C`` (they need not commute) in small
dimension. The functions take the cell's :class:`.Hyperparameters` as ``hp``
(the seed is not used, nor the batch size where no noise enters) and which theory
as ``setting``, a :class:`Setting` (time model, how batches are drawn, training-set
size; :data:`DISCRETE` by default); :func:`moment_path` is the one-step
moment recursion that :func:`dense_path` and the linear-regression check share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import xarray as xr

from .data.drawing import SAMPLINGS
from .errors import TheoryError
from .hyperparameters import Hyperparameters

MODELS = ("discrete", "continuous")
STABILITY = "0 < lr (lam + wd) < 2 (1 + beta)"  # the heavy-ball recursion's stability region, as messages state it


def stable_modes(eigvals, hp: Hyperparameters) -> np.ndarray:
    """Which modes the heavy-ball recursion keeps bounded: ``0 < lr (lam + wd) < 2 (1 + beta)``.

    The two eigenvalues of a mode's update matrix (state ``(x, v)``, ``a = lam + wd``)
    ``[[1 - lr a, -lr beta], [a, beta]]`` lie inside the unit circle exactly there: their
    product is ``beta``, and at ``lr a = 2 (1 + beta)`` one of them reaches -1 (at
    ``lr a = 0``, +1); beyond either edge the mode grows.
    """
    a = hp.lr * (np.asarray(eigvals, float) + hp.weight_decay)
    return (a > 0) & (a < 2 * (1 + hp.momentum))


# ----------------------------------------------------------------------------
# small batched linear algebra
# ----------------------------------------------------------------------------


def _T(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _sandwich(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``p s p^T`` over leading batch dimensions."""
    return p @ s @ _T(p)


def _kron(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n, m = a.shape[-1], b.shape[-1]
    out = np.einsum("...ij,...kl->...ikjl", a, b)
    return out.reshape(*out.shape[:-4], n * m, n * m)


def discrete_lyapunov(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``X = a X a^T + q``; batched over leading dimensions for small ``n``."""
    n = a.shape[-1]
    if a.ndim == 2 and n > 4:
        return scipy.linalg.solve_discrete_lyapunov(a, q)
    lhs = np.eye(n * n) - _kron(a, a)
    x = np.linalg.solve(lhs, q.reshape(*q.shape[:-2], n * n, 1))
    return x.reshape(q.shape)


def continuous_lyapunov(g: np.ndarray, n_: np.ndarray) -> np.ndarray:
    """``g X + X g^T + n_ = 0``; batched over leading dimensions for small size."""
    n = g.shape[-1]
    if g.ndim == 2 and n > 4:
        return scipy.linalg.solve_continuous_lyapunov(g, -n_)
    eye = np.broadcast_to(np.eye(n), g.shape)
    lhs = _kron(g, eye) + _kron(eye, g)
    x = np.linalg.solve(lhs, -n_.reshape(*n_.shape[:-2], n * n, 1))
    return x.reshape(n_.shape)


def _as_steps(steps, name: str) -> np.ndarray:
    k = np.asarray(steps)
    if k.ndim != 1 or k.size == 0:
        raise TheoryError(f"{name} must be a non-empty 1-D array of step counts")
    if not np.issubdtype(k.dtype, np.integer):
        if not np.all(np.isfinite(k)) or np.any(k != np.round(k)):
            raise TheoryError(f"{name} must be whole numbers of SGD steps")
        k = k.astype(np.int64)
    if np.any(k < 0):
        raise TheoryError(f"{name} must be >= 0")
    return k


# ----------------------------------------------------------------------------
# the linear systems
# ----------------------------------------------------------------------------


@dataclass
class DiscreteSystem:
    """``z_{k+1} = A z_k + B xi_k``; Cov(xi_j, xi_l) = Q if j == l, K if j != l in one epoch."""

    A: np.ndarray  # (..., n, n)
    B: np.ndarray  # (..., n, d)
    Q: np.ndarray  # (..., d, d)
    K: np.ndarray | None  # (..., d, d) or None (independent steps)
    epoch: int | None  # steps per epoch when K is given
    n_pos: int  # the first n_pos state coordinates are positions

    def _doubling(self) -> _Doubling:
        if not hasattr(self, "_table"):
            self._table = _Doubling(self.A, self._noise(self.Q) if self.K is None else None)
        return self._table

    def power(self, k: int) -> np.ndarray:
        return self._doubling().power(k)

    def _noise(self, q: np.ndarray) -> np.ndarray:
        return _sandwich(self.B, q)

    def check_stable(self, allow_marginal: bool = False) -> None:
        if not hasattr(self, "_rho"):
            self._rho = np.abs(np.linalg.eigvals(self.A)).max(axis=-1)
        rho = self._rho
        bad = rho > 1 + 1e-12 if allow_marginal else rho >= 1 - 1e-12
        if np.any(bad):
            raise TheoryError(
                f"{int(np.sum(bad))} mode(s) are outside the stability region of SGD with momentum "
                f"(need {STABILITY}); spectral radius up to {float(rho.max()):.6g}: "
                "no stationary distribution"
            )

    def _partial_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``P[i] = A^i`` and ``Sg[i] = sum_{j<i} A^j B`` for i = 0..epoch."""
        m = self.epoch
        eye = np.broadcast_to(np.eye(self.A.shape[-1]), self.A.shape)
        p = [eye]
        s = [np.zeros(self.B.shape)]
        for _ in range(m):
            s.append(p[-1] @ self.B + s[-1])
            p.append(self.A @ p[-1])
        return np.stack(p), np.stack(s)

    def _reshuffle_parts(self):
        self.check_stable()
        if not hasattr(self, "_cache"):
            p, s = self._partial_sums()
            m = self.epoch
            w = discrete_lyapunov(self.A, self._noise(self.Q - self.K))
            r0 = discrete_lyapunov(p[m], _sandwich(s[m], self.K))
            self._cache = (p, s, w, r0)
        return self._cache

    def stationary(self) -> np.ndarray:
        """Stationary covariance (phase-averaged for reshuffling)."""
        if self.K is None:
            self.check_stable()
            return discrete_lyapunov(self.A, self._noise(self.Q))
        p, s, w, r0 = self._reshuffle_parts()
        phases = [_sandwich(p[i], r0) + _sandwich(s[i], self.K) for i in range(self.epoch)]
        return w + np.mean(phases, axis=0)

    def cov_from_rest(self, k: int) -> np.ndarray:
        """Covariance after ``k`` steps from a deterministic start (at an epoch's beginning)."""
        if self.K is None:
            self.check_stable(allow_marginal=True)
            return self._doubling().sum(k)
        p, s, w, r0 = self._reshuffle_parts()
        e, ph = divmod(int(k), self.epoch)
        ak = self.power(k)
        aem = self.power(e * self.epoch)
        return w - _sandwich(ak, w) + _sandwich(p[ph], r0 - _sandwich(aem, r0)) + _sandwich(s[ph], self.K)

    def lag_cov_from_rest(self, k: int, tau: int) -> np.ndarray:
        """``Cov(z_{k+tau}, z_k)`` for a run started at rest (at an epoch's beginning)."""
        cross = self.power(tau) @ self.cov_from_rest(k)
        if self.K is None:
            return cross
        p, s, _, _ = self._reshuffle_parts()
        ph = int(k) % self.epoch
        r = min(int(tau), self.epoch - ph)
        return cross + self.power(int(tau) - r) @ s[r] @ self.K @ _T(s[ph])

    def one_step(self) -> tuple[np.ndarray, np.ndarray]:
        """Propagator and noise covariance of one step (independent part)."""
        return self.A, self._noise(self.Q)

    def lag_cov(self, tau: int) -> np.ndarray:
        """Stationary ``E[z_{k+tau} z_k^T]`` (phase-averaged for reshuffling)."""
        at = self.power(tau)
        if self.K is None:
            return at @ self.stationary()
        p, s, w, r0 = self._reshuffle_parts()
        m = self.epoch
        total = at @ w
        acc = np.zeros_like(w)
        for ph in range(m):
            r = min(int(tau), m - ph)
            forward = at @ s[ph] + self.power(int(tau) - r) @ s[r]
            acc = acc + at @ _sandwich(p[ph], r0) + forward @ self.K @ _T(s[ph])
        return total + acc / m


class _Doubling:
    """``a^k`` and ``sum_{j<k} a^j q a^jT`` for many ``k`` by binary doubling
    (valid for any ``a``, marginal modes included). The blocks ``a^(2^i)`` and
    ``sum_{j<2^i} a^j q a^jT`` are computed once and shared by every ``k``."""

    def __init__(self, a: np.ndarray, q: np.ndarray | None = None):
        self.eye = np.broadcast_to(np.eye(a.shape[-1]), a.shape)
        self.pow2, self.q, self.sum2 = [a], q, [q]

    def _grow(self, k: int) -> None:
        while (1 << len(self.pow2)) <= k:
            p = self.pow2[-1]
            if self.q is not None:
                s = self.sum2[-1]
                self.sum2.append(s + _sandwich(p, s))
            self.pow2.append(p @ p)

    def _walk(self, k: int, with_sum: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """``a^k`` and, if asked, ``sum_{j<k} a^j q a^jT`` from the blocks of k's bits."""
        k = int(k)
        self._grow(k)
        pw, total, i = self.eye.copy(), (np.zeros_like(self.q) if with_sum else None), 0
        while k:
            if k & 1:
                if with_sum:
                    total = total + _sandwich(pw, self.sum2[i])
                pw = pw @ self.pow2[i]
            k >>= 1
            i += 1
        return pw, total

    def power(self, k: int) -> np.ndarray:
        return self._walk(k, False)[0]

    def sum(self, k: int) -> np.ndarray:
        return self._walk(k, True)[1]


@dataclass
class ContinuousSystem:
    """``dz = G z dt + noise`` with diffusion ``N`` (per unit time); ``dt = lr`` per SGD step."""

    G: np.ndarray
    N: np.ndarray
    dt: float
    n_pos: int

    def power(self, k: int) -> np.ndarray:
        return scipy.linalg.expm(self.G * (self.dt * k))

    def check_stable(self, allow_marginal: bool = False) -> None:
        re = np.real(np.linalg.eigvals(self.G)).max(axis=-1)
        bad = re > 1e-12 if allow_marginal else re >= -1e-12
        if np.any(bad):
            raise TheoryError(
                f"{int(np.sum(bad))} mode(s) have lam + wd <= 0 in the continuous model: no stationary distribution"
            )

    def stationary(self) -> np.ndarray:
        self.check_stable()
        return continuous_lyapunov(self.G, self.N)

    def cov_from_rest(self, k: int) -> np.ndarray:
        """``int_0^t e^{Gs} N e^{G^T s} ds`` at ``t = k dt``: one step by Van Loan's
        matrix exponential, then the exact sum over steps by doubling (stable for long
        times, valid for marginal modes)."""
        self.check_stable(allow_marginal=True)
        if not hasattr(self, "_table"):  # one step's propagator and noise, once per system
            n = self.G.shape[-1]
            blk = np.zeros(self.G.shape[:-2] + (2 * n, 2 * n))
            blk[..., :n, :n] = -self.G
            blk[..., :n, n:] = self.N
            blk[..., n:, n:] = _T(self.G)
            e = scipy.linalg.expm(blk * self.dt)
            self._table = _Doubling(_T(e[..., n:, n:]), _T(e[..., n:, n:]) @ e[..., :n, n:])
        return self._table.sum(k)

    def lag_cov(self, tau: int) -> np.ndarray:
        return self.power(tau) @ self.stationary()

    def lag_cov_from_rest(self, k: int, tau: int) -> np.ndarray:
        return self.power(tau) @ self.cov_from_rest(k)

    def one_step(self) -> tuple[np.ndarray, np.ndarray]:
        return self.power(1), self.cov_from_rest(1)


# ----------------------------------------------------------------------------
# building the systems from hyperparameters
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """Which theory a function evaluates: the time model (``"discrete"``, the exact
    recursion, or ``"continuous"``, the paper's Langevin approximation), how the
    minibatches are drawn (``"replacement"`` or ``"reshuffle"``) and the training-set
    size ``n_samples`` that reshuffling needs."""

    model: str = "discrete"
    sampling: str = "replacement"
    n_samples: int | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise TheoryError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.sampling not in SAMPLINGS:
            raise TheoryError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.sampling == "reshuffle" and self.model == "continuous":
            raise TheoryError("sampling='reshuffle' has no continuous-time model; use model='discrete'")

    def noise_scales(self, batch_size):
        """(factor for Var of one step, factor for Cov of two steps in one epoch, steps per epoch),
        the factors times the per-sample variance; the last two None for sampling with replacement."""
        s = int(batch_size)
        if self.sampling == "replacement":
            return 1.0 / s, None, None
        n = int(self.n_samples)
        return (n - s) / (s * (n - 1)), -1.0 / (n - 1), n // s


DISCRETE = Setting()  # the exact recursion, batches drawn with replacement
CONTINUOUS = Setting(model="continuous")  # the paper's Langevin model, batches drawn with replacement


def _replacement_only(setting: Setting, what: str) -> None:
    if setting.model != "discrete" or setting.sampling != "replacement":
        raise TheoryError(f"{what} is derived for the discrete model with sampling with replacement only")


def _check_hyper(hp: Hyperparameters, setting: Setting):
    lr, batch_size, momentum, weight_decay = hp.lr, hp.batch_size, hp.momentum, hp.weight_decay
    if not (np.isfinite(lr) and lr > 0):
        raise TheoryError(f"lr must be > 0, got {lr}")
    if not (0 <= momentum < 1):
        raise TheoryError(f"momentum must be in [0, 1), got {momentum}")
    if not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise TheoryError(f"weight_decay must be >= 0, got {weight_decay}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise TheoryError(f"batch_size must be a positive integer, got {batch_size}")
    if setting.sampling == "reshuffle":
        n_samples = setting.n_samples
        if n_samples is None or int(n_samples) < 2 * int(batch_size):
            raise TheoryError(
                "sampling='reshuffle' needs n_samples (training-set size) >= 2 * batch_size, "
                f"got n_samples={n_samples}, batch_size={batch_size}"
            )


def _mode_system(eigvals, noise_var, hp: Hyperparameters, setting: Setting):
    _check_hyper(hp, setting)
    lr, batch_size, momentum, weight_decay = hp.lr, hp.batch_size, hp.momentum, hp.weight_decay
    lam = np.atleast_1d(np.asarray(eigvals, dtype=float))
    var = np.broadcast_to(np.asarray(noise_var, dtype=float), lam.shape)
    if lam.ndim != 1:
        raise TheoryError("eigvals must be a 1-D array over modes")
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(var))):
        raise TheoryError("eigvals and noise_var must be finite")
    if np.any(var < 0):
        raise TheoryError("noise_var must be >= 0")
    a = lam + weight_decay
    beta = momentum
    if setting.model == "continuous":
        gamma, omega2 = (1 - beta) / (lr * (1 + beta)), 2 * a / (lr * (1 + beta))
        mass = lr * (1 + beta) / 2
        g = np.zeros(lam.shape + (2, 2))
        g[:, 0, 1] = -1.0
        g[:, 1, 0] = omega2
        g[:, 1, 1] = -2 * gamma
        n_ = np.zeros_like(g)
        n_[:, 1, 1] = lr * var / batch_size / mass**2
        return ContinuousSystem(g, n_, lr, 1)
    A = np.zeros(lam.shape + (2, 2))
    A[:, 0, 0] = 1 - lr * a
    A[:, 0, 1] = -lr * beta
    A[:, 1, 0] = a
    A[:, 1, 1] = beta
    B = np.broadcast_to(np.array([[-lr], [1.0]]), lam.shape + (2, 1)).copy()
    f_var, f_cov, epoch = setting.noise_scales(batch_size)
    Q = (f_var * var)[:, None, None]
    K = None if f_cov is None else (f_cov * var)[:, None, None]
    return DiscreteSystem(A, B, Q, K, epoch, 1)


def dense_system(
    hessian,
    noise_cov,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> DiscreteSystem | ContinuousSystem:
    """The linear system of ``z = (theta - theta_fp, v)`` with full ``H`` and ``C``
    (``C``: the per-sample gradient covariance, taken at the fixed point)."""
    _check_hyper(hp, setting)
    lr, batch_size, momentum, weight_decay = hp.lr, hp.batch_size, hp.momentum, hp.weight_decay
    h = np.asarray(hessian, dtype=float)
    c = np.asarray(noise_cov, dtype=float)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or c.shape != h.shape:
        raise TheoryError(f"hessian and noise_cov must be square matrices of one shape, got {h.shape} and {c.shape}")
    d = h.shape[0]
    eye = np.eye(d)
    ha = 0.5 * (h + h.T) + weight_decay * eye
    beta = momentum
    if setting.model == "continuous":
        gamma, mass = (1 - beta) / (lr * (1 + beta)), lr * (1 + beta) / 2
        g = np.block([[np.zeros((d, d)), -eye], [2 * ha / (lr * (1 + beta)), -2 * gamma * eye]])
        n_ = np.zeros((2 * d, 2 * d))
        n_[d:, d:] = lr * c / batch_size / mass**2
        return ContinuousSystem(g, n_, lr, d)
    A = np.block([[eye - lr * ha, -lr * beta * eye], [ha, beta * eye]])
    B = np.vstack([-lr * eye, eye])
    f_var, f_cov, epoch = setting.noise_scales(batch_size)
    return DiscreteSystem(A, B, f_var * c, None if f_cov is None else f_cov * c, epoch, d)


# ----------------------------------------------------------------------------
# public API: per mode
# ----------------------------------------------------------------------------


def langevin_parameters(eigvals, hp: Hyperparameters) -> xr.Dataset:
    """The continuous model per mode: ``gamma`` (half the damping rate), ``omega``
    (natural frequency), both per unit of ``t = lr k``, the damped frequency, and
    the regime (``underdamped`` when ``omega > gamma``)."""
    _check_hyper(hp, CONTINUOUS)
    lr, momentum = hp.lr, hp.momentum
    a = np.asarray(eigvals, dtype=float) + hp.weight_decay
    gamma = (1 - momentum) / (lr * (1 + momentum))
    omega = np.sqrt(np.maximum(2 * a / (lr * (1 + momentum)), 0.0))
    damped = np.sqrt(np.maximum(omega**2 - gamma**2, 0.0))
    regime = np.where(omega > gamma, "underdamped", np.where(omega == gamma, "critical", "overdamped"))
    return xr.Dataset(
        {
            "gamma": ("mode", np.full(a.shape, gamma)),
            "omega": ("mode", omega),
            "damped_frequency": ("mode", damped),
            "regime": ("mode", regime.astype(str)),
        },
        attrs={"time_unit": "t = lr * steps"},
    )


def oscillation_frequency(eigvals, hp: Hyperparameters, *, setting: Setting = DISCRETE) -> np.ndarray:
    """Oscillation frequency of each mode's mean motion in cycles per SGD step (0: no oscillation).

    Discrete: the argument of the eigenvalues of ``A`` over ``2 pi``; continuous:
    ``sqrt(omega^2 - gamma^2) lr / (2 pi)``.
    """
    if setting.model == "continuous":
        return langevin_parameters(eigvals, hp)["damped_frequency"].values * hp.lr / (2 * np.pi)
    lam = np.asarray(eigvals, dtype=float)
    sysm = _mode_system(lam, np.zeros_like(lam), hp, DISCRETE)
    mu = np.linalg.eigvals(sysm.A)
    return np.abs(np.angle(mu)).max(axis=-1) / (2 * np.pi)


def fluctuation_spectrum_peak(eigvals, hp: Hyperparameters, *, n_freq: int = 20000) -> np.ndarray:
    """Frequency (cycles per step) where the stationary power spectrum of each
    mode's position peaks under white noise (discrete model):
    ``|[(e^{2 pi i f} I - A)^{-1} B]_x|^2`` on a grid of ``n_freq`` log-spaced
    frequencies up to 1/2. It lies below the mean motion's damped frequency and
    is 0 (the grid's lowest point) for overdamped and near-critical modes.
    """
    lam = np.atleast_1d(np.asarray(eigvals, dtype=float))
    sysm = _mode_system(lam, np.zeros_like(lam), hp, DISCRETE)
    freq = np.concatenate([[0.0], np.logspace(-7, np.log10(0.5), n_freq)])
    zf = np.exp(2j * np.pi * freq)
    a = sysm.A[:, None]  # (modes, 1, 2, 2)
    # (z I - A)^{-1} B for 2x2: adjugate / determinant
    det = (zf - a[..., 0, 0]) * (zf - a[..., 1, 1]) - a[..., 0, 1] * a[..., 1, 0]
    b0, b1 = sysm.B[:, None, 0, 0], sysm.B[:, None, 1, 0]
    x = ((zf - a[..., 1, 1]) * b0 + a[..., 0, 1] * b1) / det
    return freq[np.argmax(np.abs(x) ** 2, axis=-1)]


def stationary_moments(
    eigvals,
    noise_var,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> xr.Dataset:
    """Per-mode stationary ``position_var``, ``velocity_var`` (momentum buffer)
    and ``position_velocity_cov``, as an xarray Dataset over ``mode``.

    Raises :class:`TheoryError` for modes without a stationary distribution.
    """
    sysm = _mode_system(eigvals, noise_var, hp, setting)
    cov = sysm.stationary()
    return xr.Dataset(
        {
            "position_var": ("mode", cov[:, 0, 0]),
            "velocity_var": ("mode", cov[:, 1, 1]),
            "position_velocity_cov": ("mode", cov[:, 0, 1]),
        },
        coords={"eigval": ("mode", np.asarray(eigvals, dtype=float))},
        attrs={
            "model": setting.model,
            "sampling": setting.sampling,
            "lr": hp.lr,
            "batch_size": int(hp.batch_size),
            "momentum": hp.momentum,
            "weight_decay": hp.weight_decay,
        },
    )


def mean_trajectory(eigvals, x0, v0, steps, hp: Hyperparameters, *, setting: Setting = DISCRETE) -> xr.Dataset:
    """Mean position and momentum buffer of each mode at each of ``steps``, from ``(x0, v0)``."""
    k = _as_steps(steps, "steps")
    lam = np.atleast_1d(np.asarray(eigvals, dtype=float))
    sysm = _mode_system(lam, np.zeros_like(lam), hp, Setting(model=setting.model))
    z0 = np.stack(np.broadcast_arrays(np.asarray(x0, float), np.asarray(v0, float), lam)[:2], axis=-1)[..., None]
    z = np.stack([(sysm.power(kk) @ z0)[..., 0] for kk in k])
    return xr.Dataset(
        {"position": (("step", "mode"), z[..., 0]), "velocity": (("step", "mode"), z[..., 1])},
        coords={"step": k, "eigval": ("mode", lam)},
    )


def covariance_at(
    eigvals,
    noise_var,
    steps,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> xr.Dataset:
    """Per-mode covariance of ``(x, v)`` after each of ``steps`` steps from a deterministic start."""
    k = _as_steps(steps, "steps")
    sysm = _mode_system(eigvals, noise_var, hp, setting)
    cov = np.stack([sysm.cov_from_rest(kk) for kk in k])
    return xr.Dataset(
        {
            "position_var": (("step", "mode"), cov[..., 0, 0]),
            "velocity_var": (("step", "mode"), cov[..., 1, 1]),
            "position_velocity_cov": (("step", "mode"), cov[..., 0, 1]),
        },
        coords={"step": k},
    )


def _msd(sysm, z0: np.ndarray, k: np.ndarray) -> np.ndarray:
    n = sysm.n_pos
    out = []
    for kk in k:
        mean = (sysm.power(kk) @ z0)[..., 0]
        cov = sysm.cov_from_rest(kk)
        d2 = (mean[..., :n] - z0[..., :n, 0]) ** 2
        var = np.diagonal(cov, axis1=-2, axis2=-1)[..., :n]
        out.append(np.sum(d2 + var))
    return np.asarray(out)


def msd_from_start(
    eigvals,
    noise_var,
    x0,
    v0,
    steps,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """``E||theta_k - theta_0||^2`` summed over modes for each k in ``steps``.

    ``x0``, ``v0``: the start's per-mode position relative to the fixed point
    ``(H + wd I)^{-1} H theta*`` and momentum buffer.
    """
    k = _as_steps(steps, "steps")
    lam = np.atleast_1d(np.asarray(eigvals, dtype=float))
    sysm = _mode_system(lam, noise_var, hp, setting)
    x0, v0 = np.broadcast_arrays(np.asarray(x0, float), np.asarray(v0, float), lam)[:2]
    z0 = np.stack([x0, v0], axis=-1)[..., None]
    return _msd(sysm, z0, k)


def lag_msd(
    eigvals,
    noise_var,
    lags,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """Stationary ``E||theta_{k+tau} - theta_k||^2`` summed over modes for each tau in ``lags``."""
    tau = _as_steps(lags, "lags")
    sysm = _mode_system(eigvals, noise_var, hp, setting)
    return _lag_msd(sysm, tau)


def lag_msd_sampling_sd(
    eigvals,
    noise_var,
    lags,
    steps: int,
    hp: Hyperparameters,
    *,
    multiplicity=None,
    sketch_dim: int | None = None,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """Standard deviation of the *time-averaged* lag-MSD of one stationary run of
    ``steps`` recorded points, per lag: how far one run's measurement scatters
    about :func:`lag_msd` (docs/theory.md, "How well one run measures the
    lag-MSD").

    For a Gaussian stationary mode with position autocovariance ``R``, the
    increments ``d_a = x_{a+L} - x_a`` have covariance
    ``G(j) = 2 R(j) - R(j + L) - R(j - L)`` between anchors ``j`` apart, and the
    mean of ``d_a^2`` over ``M = steps - L`` anchors has variance
    ``(2 / M^2) sum_{|j| < M} (M - |j|) G(j)^2``; independent modes add, each
    node counted ``multiplicity`` times. ``sketch_dim``: the measurement is the
    squared norm of a random projection to that many dimensions, drawn afresh
    for the run, which adds about ``(sum_i G_i(j))^2 / sketch_dim`` to each term.
    A projection fixed across runs misreads every anchor alike: that bias is not
    covered here (the comparison measures it against the exact values). Discrete model,
    sampling with replacement only (the reshuffled recursion is not stationary
    step by step)."""
    _replacement_only(setting, "the lag-MSD sampling error")
    tau = _as_steps(lags, "lags")
    n = int(steps)
    if np.any(tau >= n):
        raise TheoryError(f"every lag must be below the run's {n} points")
    sysm = _mode_system(eigvals, noise_var, hp, setting)
    mult = np.ones(sysm.A.shape[0]) if multiplicity is None else np.asarray(multiplicity, float)
    r = _autocovariance(sysm, n)[0]  # R(k) per mode, k = 0 .. n - 1
    out = []
    for lag in tau:
        anchors = n - int(lag)
        j = np.arange(anchors)
        g = 2 * r[j] - r[j + lag] - r[np.abs(j - lag)]  # (j, mode)
        per_j = (g**2 * mult).sum(axis=1)
        if sketch_dim:
            per_j = per_j + (g * mult).sum(axis=1) ** 2 / float(sketch_dim)
        weights = np.where(j == 0, anchors, 2.0 * (anchors - j))  # j and -j
        out.append(np.sqrt(2.0 * float((weights * per_j).sum())) / anchors)
    return np.asarray(out)


def lag_msd_single_anchor_sd(
    eigvals,
    noise_var,
    lags,
    hp: Hyperparameters,
    *,
    multiplicity=None,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """Standard deviation of ``||theta_{t+tau} - theta_t||^2`` from *one* anchor
    ``t`` of a stationary run, per lag (docs/theory.md, "How well one run
    measures the lag-MSD"): the exact distance from theta_0 that every run
    records is such a measurement.

    Each Gaussian mode's increment has variance ``G_i(tau) = 2 (R_i(0) - R_i(tau))``,
    so ``d_i^2`` has variance ``2 G_i^2``; independent modes add, each node
    counted ``multiplicity`` times: ``sd = sqrt(2 sum_i m_i G_i(tau)^2)``.
    Discrete model, sampling with replacement only."""
    _replacement_only(setting, "the lag-MSD sampling error")
    tau = _as_steps(lags, "lags")
    sysm = _mode_system(eigvals, noise_var, hp, setting)
    mult = np.ones(sysm.A.shape[0]) if multiplicity is None else np.asarray(multiplicity, float)
    r = _autocovariance(sysm, int(tau.max()) + 1)[0]  # R(k) per mode
    g = 2.0 * (r[0] - r[tau])  # (lag, mode)
    return np.sqrt(2.0 * (g**2 * mult).sum(axis=1))


def _autocovariance(sysm: DiscreteSystem, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stationary autocovariances ``E[x_{k+j} x_k]`` and ``E[v_{k+j} v_k]`` of
    each mode for ``j = 0 .. n - 1`` (``n x modes`` each): ``A^j Sigma``.
    Independent steps only (sampling with replacement)."""
    rx, rv = np.empty((n, sysm.A.shape[0])), np.empty((n, sysm.A.shape[0]))
    m = sysm.stationary()
    for k in range(n):
        rx[k], rv[k] = m[:, 0, 0], m[:, 1, 1]
        m = sysm.A @ m
    return rx, rv


def _sample_variance_moments(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the sample variance (about the window's
    own mean, ``np.var``) of ``n`` consecutive points of a stationary Gaussian
    process with autocovariance ``r`` (``n x modes``, lags ``0 .. n - 1``).

    With ``Sigma`` the ``n x n`` Toeplitz covariance and ``M = I - 11^T / n``,
    ``s^2 = x^T M x / n``: ``E s^2 = R(0) - 1^T Sigma 1 / n^2`` and
    ``Var s^2 = (2 / n^2) [tr Sigma^2 - (2 / n) |Sigma 1|^2 + (1^T Sigma 1)^2 / n^2]``,
    each sum taken over lags in O(n)."""
    n = r.shape[0]
    j = np.arange(n)[:, None]
    tr_sq = n * r[0] ** 2 + 2.0 * ((n - j[1:]) * r[1:] ** 2).sum(axis=0)
    s = np.cumsum(r, axis=0)  # S(m) = sum_{j <= m} R(j)
    row = s + s[::-1] - r[0]  # (Sigma 1)_k = S(k) + S(n - 1 - k) - R(0)
    total = row.sum(axis=0)  # 1^T Sigma 1
    mean = r[0] - total / n**2
    var = 2.0 / n**2 * (tr_sq - 2.0 / n * (row**2).sum(axis=0) + total**2 / n**2)
    return mean, np.sqrt(np.maximum(var, 0.0))


def window_variance_scatter(
    eigvals,
    hp: Hyperparameters,
    steps: int,
    *,
    setting: Setting = DISCRETE,
) -> xr.Dataset:
    """How one window of ``steps`` consecutive steps measures each mode's
    stationary position and velocity variance (docs/theory.md, "How well one
    window measures a mode's variance"): the expected sample variance (about
    the window's mean) over the stationary one (``*_window_bias``, below 1
    because the window's own mean takes out its slowest fluctuations) and the
    standard deviation of that ratio (``*_window_sd``). Both are ratios, so they
    do not depend on the noise level. Gaussian modes of the discrete model,
    sampling with replacement only."""
    _replacement_only(setting, "the one-window scatter")
    n = int(steps)
    if n < 2:
        raise TheoryError(f"a window needs at least 2 steps, got {steps}")
    lam = np.atleast_1d(np.asarray(eigvals, dtype=float))
    sysm = _mode_system(lam, np.ones_like(lam), hp, setting)
    out = {}
    for name, r in zip(("position", "velocity"), _autocovariance(sysm, n)):
        mean, sd = _sample_variance_moments(r)
        out[f"{name}_window_bias"] = ("mode", mean / r[0])
        out[f"{name}_window_sd"] = ("mode", sd / r[0])
    return xr.Dataset(out, coords={"eigval": ("mode", lam)}, attrs={"window_steps": n})


def lag_covariance(
    eigvals,
    noise_var,
    lags,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> xr.Dataset:
    """Stationary cross-covariances ``E[x_{k+tau} x_k]``, ``E[v_{k+tau} v_k]``,
    ``E[x_{k+tau} v_k]`` per mode and lag (phase-averaged for reshuffling), and the
    position autocorrelation ``rho(tau) = E[x_{k+tau} x_k] / Var x``."""
    tau = _as_steps(lags, "lags")
    sysm = _mode_system(eigvals, noise_var, hp, setting)
    cov = np.stack([sysm.lag_cov(t) for t in tau])
    var = sysm.stationary()[:, 0, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = cov[..., 0, 0] / var
    return xr.Dataset(
        {
            "position": (("lag", "mode"), cov[..., 0, 0]),
            "velocity": (("lag", "mode"), cov[..., 1, 1]),
            "position_velocity": (("lag", "mode"), cov[..., 0, 1]),
            "position_autocorrelation": (("lag", "mode"), rho),
        },
        coords={"lag": tau},
    )


def _lag_msd(sysm, tau: np.ndarray) -> np.ndarray:
    n = sysm.n_pos
    var = np.diagonal(sysm.stationary(), axis1=-2, axis2=-1)[..., :n].sum()
    return np.asarray([2 * var - 2 * np.diagonal(sysm.lag_cov(t), axis1=-2, axis2=-1)[..., :n].sum() for t in tau])


# ----------------------------------------------------------------------------
# public API: dense (non-commuting H and C, small dimension)
# ----------------------------------------------------------------------------


def fixed_point(hessian, theta_star, weight_decay: float) -> np.ndarray:
    """``(H + wd I)^{-1} H theta*``: where SGD with weight decay settles on average."""
    h = np.asarray(hessian, dtype=float)
    return np.linalg.solve(h + weight_decay * np.eye(h.shape[0]), h @ np.asarray(theta_star, dtype=float))


def dense_stationary_covariance(
    hessian,
    noise_cov,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """Stationary covariance of ``(theta - theta_fp, v)``, shape ``(2d, 2d)``."""
    return dense_system(hessian, noise_cov, hp, setting=setting).stationary()


def dense_covariance_at(
    hessian,
    noise_cov,
    steps,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """Covariance of ``(theta, v)`` after each of ``steps`` from a deterministic start, ``(len(steps), 2d, 2d)``."""
    k = _as_steps(steps, "steps")
    sysm = dense_system(hessian, noise_cov, hp, setting=setting)
    return np.stack([sysm.cov_from_rest(kk) for kk in k])


def dense_mean(
    hessian, x0, v0, steps, hp: Hyperparameters, *, setting: Setting = DISCRETE
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``theta - theta_fp`` and ``v`` at each of ``steps``: arrays ``(len(steps), d)``."""
    k = _as_steps(steps, "steps")
    h = np.asarray(hessian, dtype=float)
    sysm = dense_system(h, np.zeros_like(h), hp, setting=Setting(model=setting.model))
    z0 = np.concatenate([np.asarray(x0, float), np.asarray(v0, float)])
    z = np.stack([sysm.power(kk) @ z0 for kk in k])
    d = h.shape[0]
    return z[:, :d], z[:, d:]


def dense_msd_from_start(
    hessian,
    noise_cov,
    x0,
    v0,
    steps,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """``E||theta_k - theta_0||^2`` with full ``H`` and ``C``; ``x0 = theta_0 - theta_fp``."""
    k = _as_steps(steps, "steps")
    sysm = dense_system(hessian, noise_cov, hp, setting=setting)
    z0 = np.concatenate([np.asarray(x0, float), np.asarray(v0, float)])[:, None]
    return _msd(sysm, z0, k)


def dense_lag_msd(
    hessian,
    noise_cov,
    lags,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """Stationary lag-MSD with full ``H`` and ``C``."""
    tau = _as_steps(lags, "lags")
    return _lag_msd(dense_system(hessian, noise_cov, hp, setting=setting), tau)


# ----------------------------------------------------------------------------
# whole paths (every step) and lag-MSD of a run started at rest
# ----------------------------------------------------------------------------


def moment_path(
    system: DiscreteSystem | ContinuousSystem,
    z0: np.ndarray,
    n_steps: int,
    project: np.ndarray | None = None,
    extra_noise=None,
    keep=(),
) -> tuple[xr.Dataset, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Mean and covariance of ``z`` at every step 0..n_steps from ``z0`` (covariance 0)
    by the exact one-step recursion ``Sigma <- A Sigma A^T + W``.

    For reshuffling the recursion carries ``Cov(z_k, xi_k) = S_p K`` (the
    current epoch's earlier batches). ``extra_noise(mean, cov)``, for discrete
    systems, returns a further covariance of the step's noise ``xi_k`` given the
    moments of ``z_k`` (e.g. noise that depends on the state); it enters as
    ``B extra B^T``. Returns the summed moments (``msd_from_start``,
    ``sq_velocity``), the mean and variance of the position and velocity
    projected on the columns of ``project`` if given, and ``{k: (mean, cov)}``
    for the steps in ``keep``.
    """
    if extra_noise is not None and not isinstance(system, DiscreteSystem):
        raise TheoryError("extra_noise needs the discrete model")
    n = system.n_pos
    a, w1 = system.one_step()
    k_mat = getattr(system, "K", None)
    z = z0.astype(float).copy()
    cov = np.zeros(a.shape)
    sp = None if k_mat is None else np.zeros(system.B.shape)
    u = None if project is None else np.asarray(project, dtype=float)
    keep = {int(k) for k in keep}
    kept = {}
    rows = {
        key: []
        for key in ("msd_from_start", "sq_velocity", "position_mean", "position_var", "velocity_mean", "velocity_var")
    }
    for k in range(n_steps + 1):
        x, v = z[:n], z[n:]
        cxx, cvv = cov[:n, :n], cov[n:, n:]
        rows["msd_from_start"].append(np.sum((x - z0[:n]) ** 2) + np.trace(cxx))
        rows["sq_velocity"].append(np.sum(v**2) + np.trace(cvv))
        if u is not None:
            rows["position_mean"].append(u.T @ x)
            rows["velocity_mean"].append(u.T @ v)
            rows["position_var"].append(((cxx @ u) * u).sum(axis=0))
            rows["velocity_var"].append(((cvv @ u) * u).sum(axis=0))
        if k in keep:
            kept[k] = (z.copy(), cov.copy())
        new = a @ cov @ a.T + w1
        if k_mat is not None:
            if k % system.epoch == 0:
                sp = np.zeros(system.B.shape)
            cross = a @ sp @ k_mat @ system.B.T
            new = new + cross + cross.T
            sp = a @ sp + system.B
        if extra_noise is not None:
            new = new + _sandwich(system.B, extra_noise(z, cov))
        cov = new
        z = a @ z
    data = {
        "msd_from_start": ("step", np.asarray(rows["msd_from_start"])),
        "sq_velocity": ("step", np.asarray(rows["sq_velocity"])),
    }
    if u is not None:
        for key in ("position_mean", "position_var", "velocity_mean", "velocity_var"):
            data[key] = (("step", "mode"), np.asarray(rows[key]))
    return xr.Dataset(data, coords={"step": np.arange(n_steps + 1)}), kept


def dense_path(
    hessian,
    noise_cov,
    x0,
    v0,
    n_steps: int,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
    project=None,
) -> xr.Dataset:
    """Exact moments at every step 0..n_steps from ``(x0, v0)`` with full ``H`` and ``C``.

    Returns ``msd_from_start`` (``E||theta_k - theta_0||^2``), ``sq_velocity``
    (``E||v_k||^2``) and, for the columns of ``project`` (e.g. top eigenvectors),
    the mean and variance of the projected position ``theta - theta_fp`` and velocity.
    """
    sysm = dense_system(hessian, noise_cov, hp, setting=setting)
    if setting.model == "discrete":
        sysm.check_stable(allow_marginal=True)
    z0 = np.concatenate([np.asarray(x0, float), np.asarray(v0, float)])
    return moment_path(sysm, z0, int(n_steps), project)[0]


def dense_lag_msd_from_start(
    hessian,
    noise_cov,
    x0,
    v0,
    anchor: int,
    lags,
    hp: Hyperparameters,
    *,
    setting: Setting = DISCRETE,
) -> np.ndarray:
    """``E||theta_{k+tau} - theta_k||^2`` at ``k = anchor`` for a run started at ``(x0, v0)``:
    exact before stationarity is reached (tends to :func:`dense_lag_msd` for large ``anchor``)."""
    tau = _as_steps(lags, "lags")
    sysm = dense_system(hessian, noise_cov, hp, setting=setting)
    z0 = np.concatenate([np.asarray(x0, float), np.asarray(v0, float)])
    n = sysm.n_pos
    k = int(anchor)
    mk = sysm.power(k) @ z0
    ck = sysm.cov_from_rest(k)
    out = []
    for t in tau:
        mt = sysm.power(k + int(t)) @ z0
        ct = sysm.cov_from_rest(k + int(t))
        cross = sysm.lag_cov_from_rest(k, int(t))
        diff = ct + ck - cross - cross.T
        out.append(np.sum((mt[:n] - mk[:n]) ** 2) + np.trace(diff[:n, :n]))
    return np.asarray(out)
