"""The errors a user can cause (bad config, data, files or settings).

They live here, free of heavy imports, so that the command line can catch them
without loading torch for stages that never need it. Each message says what is
wrong and how to fix it; the CLI prints it on one line and exits with status 2.
"""

from __future__ import annotations


class LimitingDynamicsError(Exception):
    """Base of every expected, user-facing failure."""


class ConfigError(LimitingDynamicsError, ValueError):
    """A config value that is not allowed; the message says which and why."""


class DataError(LimitingDynamicsError, ValueError):
    """A data set that cannot be prepared or loaded; the message says why."""


class ModelError(LimitingDynamicsError, ValueError):
    """A model config that cannot be built; the message says why."""


class CheckpointError(LimitingDynamicsError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class DivergenceError(LimitingDynamicsError, RuntimeError):
    """Training produced a non-finite loss or parameters."""


class TrajectoryFormatError(LimitingDynamicsError, ValueError):
    """A trajectory file that does not follow this format version."""


class TheoryError(LimitingDynamicsError, ValueError):
    """A question the theory has no finite answer to (unstable mode, bad arguments)."""


class HessianError(LimitingDynamicsError, ValueError):
    """Settings the Hessian estimators cannot work with."""


class NoiseError(LimitingDynamicsError, ValueError):
    """Settings the noise estimators cannot work with."""


class LinearRegressionError(LimitingDynamicsError, ValueError):
    """Settings this experiment cannot run with (unstable learning rate, diverged chains)."""


class Interrupted(LimitingDynamicsError, RuntimeError):
    """A long job stopped on a signal (SIGTERM, SIGINT) after writing its checkpoint."""


class WriteError(LimitingDynamicsError, OSError):
    """An output could not be written (no permission, disk full, file size limit); nothing was left behind."""


class ResultFileError(LimitingDynamicsError, ValueError):
    """A result file (Hessian, gradient noise, comparison) that is unreadable or incomplete."""


class FigureError(LimitingDynamicsError, ValueError):
    """Input files a figure cannot be drawn from (a role unknown, missing, or given several files for one)."""
