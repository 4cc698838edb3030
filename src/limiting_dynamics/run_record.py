"""The run record: what :func:`.training.limiting_run` returns, stored by the
limiting-run stage as ``record.npz`` and read back by the export stage (which
turns it into a trajectory with :func:`.trajectory.build_dataset`). Its one
definition: arrays, plus the scalars and texts named here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path

SCALARS = ("sq_param_norm_start", "sq_velocity_start", "burn_in_steps", "n_params", "sketch_seed", "sketch_block")
TEXTS = ("optimizer", "precision", "numerics", "device")


def save(record: dict, path: str | Path) -> None:
    """Write ``record`` (with its ``device``) as an uncompressed ``.npz``, atomically."""
    arrays = {k: np.asarray(v) for k, v in record.items() if k not in TEXTS}
    arrays["tensor_name"] = np.asarray(record["tensor_name"], dtype=str)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **{k: np.str_(record[k]) for k in TEXTS})


def load(path: str | Path) -> dict:
    """The record as :func:`save` wrote it: scalars as Python numbers, texts and
    tensor names as ``str``."""
    with np.load(path, allow_pickle=False) as f:
        record = {k: f[k] for k in f.files}
    for k in SCALARS:
        if k in record:
            record[k] = record[k].item()
    for k in TEXTS:
        record[k] = str(record[k])
    record["tensor_name"] = [str(s) for s in record["tensor_name"]]
    return record
