"""CF-1.10 compliance of NetCDF files for the tests (IOOS compliance-checker, run
offline): ``check_cf(path)`` fails on any failed check of high or medium
priority; ``KINDS`` names the result files by kind."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import xarray as xr
from compliance_checker.base import BaseCheck
from compliance_checker.cf import util as cf_util
from compliance_checker.cf.cf_1_10 import CF1_10Check
from compliance_checker.suite import CheckSuite

CHECKER = "cf:1.10"
CheckSuite.checkers[CHECKER] = CF1_10Check  # the CF checker alone (loading every plugin warns of deprecations)

# the checker crashes (np.diff of strings) on a string-valued dimension coordinate such as
# `cell` or `tensor`; this module then checks the numeric ones' monotonicity itself
_STRING_COORD_CRASH = "check_coordinate_variables_strict_monotonicity"


def _failed(results, priority: int) -> list[str]:
    out = []
    for r in results:
        if r.children:
            out += _failed(r.children, priority)
        elif r.weight >= priority and r.value[1] and r.value[0] < r.value[1]:
            out += [f"{r.name}: {m}" for m in r.msgs] or [f"{r.name}: {r.value[0]}/{r.value[1]}"]
    return out


def cf_failures(path: str | Path, priority: int = BaseCheck.MEDIUM) -> list[str]:
    """Failed CF-1.10 checks of ``priority`` or higher, and checks that crashed.

    Offline: the checker fetches a standard-name table only when a file names a
    version other than its packaged one (``standard_name_vocabulary``); that
    download is refused here and the packaged table used."""
    suite = CheckSuite()
    refuse = mock.patch.object(cf_util, "download_cf_standard_name_table", side_effect=OSError("offline"))
    with refuse:
        nc = suite.load_dataset(str(path))
        try:
            results, crashed = suite.run_all(nc, [CHECKER])[CHECKER]
        finally:
            nc.close()
    out = _failed(results, priority)
    with xr.open_dataset(path, decode_cf=False) as ds:
        dims = [ds[d] for d in ds.dims if d in ds.variables]
    if _STRING_COORD_CRASH in crashed and any(c.dtype.kind in "OSU" for c in dims):
        del crashed[_STRING_COORD_CRASH]
        for c in dims:
            step = np.diff(c.values) if c.dtype.kind in "fiu" else np.array([1])
            if not (np.all(step > 0) or np.all(step < 0)):
                out.append(f"coordinate variable {c.name} is not strictly monotonic")
    out += [f"check {name} crashed: {exc!r}" for name, (exc, _) in crashed.items()]
    return out


def check_cf(path: str | Path) -> None:
    """Assert that the NetCDF file ``path`` passes the CF-1.10 checks of high and medium priority."""
    failures = cf_failures(path)
    assert not failures, f"{path} is not CF-1.10 compliant:\n  " + "\n  ".join(failures)


KINDS = {  # kind of result file -> glob under the results directory (one file of each is checked)
    "history": "converge/history.nc",
    "trajectory": "trajectories/*_seed*.nc",
    "all_cells": "trajectories/all_cells.nc",
    "hessian": "hessian/*.nc",
    "noise": "noise/*.nc",
    "drift": "drift/*.nc",
    "landscape": "landscape/*.nc",
    "linear_regression": "linear_regression/*.nc",
    "theory": "analysis/theory/*.nc",
    "summary": "analysis/summary.nc",
    "predictions": "analysis/predictions.nc",
}
