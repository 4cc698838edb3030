"""Are two runs' results the same? (by hand, e.g. before and after a refactor)

    python bench/compare_results.py RESULTS_A RESULTS_B

Compares, file by file, every CSV table byte for byte and every data variable
and coordinate of every NetCDF file bit for bit (NaN equal to NaN; attributes
such as provenance and time stamps are not compared). Prints one line per file
kind and the differences; exits 1 if anything differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return a.tobytes() == b.tobytes() or bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def compare_netcdf(fa: Path, fb: Path) -> list[str]:
    with xr.open_dataset(fa) as a, xr.open_dataset(fb) as b:
        a, b = a.load(), b.load()
    diffs = []
    names = set(a.variables) | set(b.variables)
    for name in sorted(names):
        if name not in a.variables or name not in b.variables:
            diffs.append(f"{name}: only in {'B' if name not in a.variables else 'A'}")
        elif not same_array(a[name].values, b[name].values):
            diffs.append(f"{name}: values differ")
    return diffs


def main(a: str, b: str) -> int:
    root_a, root_b = Path(a), Path(b)
    files_a = {p.relative_to(root_a) for p in root_a.rglob("*") if p.suffix in (".csv", ".nc")}
    files_b = {p.relative_to(root_b) for p in root_b.rglob("*") if p.suffix in (".csv", ".nc")}
    bad = 0
    for rel in sorted(files_a ^ files_b):
        print(f"only in {'A' if rel in files_a else 'B'}: {rel}")
        bad += 1
    checked = {".csv": 0, ".nc": 0}
    for rel in sorted(files_a & files_b):
        fa, fb = root_a / rel, root_b / rel
        diffs = (
            ([] if fa.read_bytes() == fb.read_bytes() else ["bytes differ"])
            if rel.suffix == ".csv"
            else compare_netcdf(fa, fb)
        )
        checked[rel.suffix] += 1
        for d in diffs:
            print(f"{rel}: {d}")
        bad += bool(diffs)
    print(
        f"{checked['.csv']} CSV files byte-compared, {checked['.nc']} NetCDF files compared variable by variable: "
        + ("all identical" if not bad else f"{bad} differ")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
