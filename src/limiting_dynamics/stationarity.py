"""Does a long, autocorrelated series have a slow trend? A batch-means drift test.

A run's per-step quantities (the squared step ``||theta_{k+1} - theta_k||^2``
over its stationary window, say) are strongly autocorrelated: neighbouring
values share most of their momentum buffer, so a naive regression of the raw
series on the step count sees thousands of "independent" points and reports a
standard error far too small. Comparing rolling means (the largest over the
smallest, :func:`.local_displacement.stationarity_ratio`) avoids that but
only sees changes of a large factor: a steady 30% rise passes it.

:func:`drift` averages the series over ``batches`` contiguous batches of
(nearly) equal length. Once a batch is several correlation times long its mean
is close to independent of the other batches' means, so the batch means are a
short series of roughly independent, roughly Gaussian numbers on which
ordinary least squares is honest. A straight line is fitted to the batch means
against the centre step of each batch; its slope times the span of the series
(first to last step), divided by the overall mean, is ``relative_change``. Its
standard error comes from the residual scatter of the batch means about the
line (``batches - 2`` degrees of freedom). Where the batches are not much
longer than the correlation time, neighbouring batch means are still
positively correlated and that scatter understates the error; the residuals'
lag-1 autocorrelation measures this. Residuals of a line through ``n``
independent points have a lag-1 autocorrelation of about ``-2 / n`` on
average, so ``r`` is the measured one plus ``2 / n`` (capped at 0.9), and for
``r > 0`` the error is inflated by ``sqrt((1 + r) / (1 - r))`` (the variance
factor of a slope on AR(1) residuals of coefficient ``r``, to first order).
This is a heuristic, not exact: with 20 batch means ``r`` is itself uncertain
by about 0.2. On AR(1) noise of correlation time 100 steps over 2,500 steps
(batches of 125 steps) it brings the rms of ``relative_change / stderr`` from
1.8 to 1.3; with batches several correlation times long it stays near 1.

Decision rule: the series is reported ``stationary`` unless its fitted change
is both large and significant, i.e. ``stationary = |relative_change| <
max(0.1, 3 * relative_change_stderr)``. The floor of 10% ignores drifts too
small to matter for a measurement of a level; the three standard errors keep
stationary noise from tripping the test (about a 0.3% false-alarm rate for an
exact error). A series too short or too noisy to resolve a drift therefore
passes: read ``relative_change_stderr`` with the verdict (a stderr above
about 0.1 means a 30% drift could not have been seen).
"""

from __future__ import annotations

import numpy as np

FLOOR = 0.1  # smallest relative change over the series that counts as a drift
N_SIGMA = 3.0  # and it must exceed this many standard errors
R_MAX = 0.9  # cap on the lag-1 correlation used to inflate the error


def drift(series, batches: int) -> dict:
    """Linear trend of ``series`` from ``batches`` contiguous batch means (module doc).

    Returns ``relative_change`` (fitted change from the first to the last
    step over the overall mean), ``relative_change_stderr``, ``stationary``
    (``|relative_change| < max(0.1, 3 * stderr)``), and the ingredients
    ``mean``, ``batch_means``, ``batch_centres`` (steps, from 0) and
    ``residual_lag1`` (the measured lag-1 autocorrelation of the residuals,
    before the ``2 / batches`` correction).
    """
    x = np.asarray(series, dtype=float)
    batches = int(batches)
    if x.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {x.shape}")
    if batches < 4:
        raise ValueError(f"need at least 4 batches for a line and its scatter, got {batches}")
    if x.size < 2 * batches:
        raise ValueError(f"series of {x.size} values is too short for {batches} batches (need >= {2 * batches})")
    if not np.all(np.isfinite(x)):
        raise ValueError("series has non-finite values")
    mean = float(x.mean())
    if mean == 0:
        raise ValueError("series has mean 0: no relative change")
    steps = np.arange(x.size, dtype=float)
    parts = np.array_split(np.arange(x.size), batches)
    means = np.array([x[p].mean() for p in parts])
    centres = np.array([steps[p].mean() for p in parts])
    tc = centres - centres.mean()
    sxx = float(np.sum(tc**2))
    slope = float(np.sum(tc * (means - means.mean())) / sxx)
    resid = means - means.mean() - slope * tc
    ss = float(np.sum(resid**2))
    slope_var = ss / (batches - 2) / sxx
    r1 = float(np.sum(resid[1:] * resid[:-1]) / ss) if ss > 0 else 0.0
    r = min(r1 + 2.0 / batches, R_MAX)  # residuals of a line on n uncorrelated points have E[r1] ~ -2/n
    if r > 0:
        slope_var *= (1 + r) / (1 - r)
    span = float(x.size - 1)
    change = slope * span / mean
    stderr = float(np.sqrt(slope_var)) * span / abs(mean)
    return {
        "relative_change": change,
        "relative_change_stderr": stderr,
        "stationary": bool(abs(change) < max(FLOOR, N_SIGMA * stderr)),
        "mean": mean,
        "batch_means": means,
        "batch_centres": centres,
        "residual_lag1": r1,
    }
