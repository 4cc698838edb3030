"""Trajectory stages: the run record as a NetCDF trajectory, and all cells in one file."""

from __future__ import annotations

import json

from .. import run_record, trajectory
from ..atomic import write_netcdf
from ..provenance import provenance_attrs
from .common import log, params


def cmd_export_trajectory(a) -> None:
    p = params(a)
    record = run_record.load(a.raw)
    attrs = {
        **p["hyperparameters"],
        "cell": p["cell"],
        "family": p["family"],
        "dataset": p["dataset"],
        "model": json.dumps(p["model"]),
        "sampling": p["sampling"],
        "augment_shift": p["augment_shift"],
        "label_noise": p["label_noise"],
        "optimizer": record["optimizer"],
        "numerics": record["numerics"],
        **provenance_attrs(p, record["device"], record["precision"]),
    }
    ds = trajectory.build_dataset(record, attrs)
    trajectory.validate_trajectory(ds, a.out)
    write_netcdf(ds, a.out, trajectory.encoding_for(ds))
    log(f"trajectory of {p['cell']} ({ds.sizes['step']} steps) -> {a.out}")


def cmd_combine_trajectories(a) -> None:
    ds = trajectory.combine(a.inputs, a.cells)
    write_netcdf(ds, a.out, trajectory.encoding_for(ds))
    log(f"{len(a.cells)} cells -> {a.out}")
