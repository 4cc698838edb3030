"""Write files so that they are complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from .errors import WriteError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same directory (same filesystem), so the
    final ``os.replace`` is atomic. On any exception the temporary file is
    removed and ``path`` is left untouched. A failure to create, write or
    rename the file (no permission, a full disk, a file size limit; the
    netCDF library reports these as ``RuntimeError("NetCDF: ...")``) becomes a
    :class:`.errors.WriteError` that names ``path``. The file gets the
    permissions the umask gives (``0o666 & ~umask``), as any other new file
    would, not the private 0600 of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temporary(path)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, WriteError) or not (isinstance(exc, OSError) or _netcdf_failure(exc)):
                raise
            raise WriteError(
                f"writing {path} failed ({getattr(exc, 'strerror', None) or exc}); check free disk "
                f"space, quotas and file size limits; nothing was written"
            ) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _create_temporary(path: Path) -> Path:
    """Create an empty, new file beside ``path`` and return its name.

    Unlike :func:`tempfile.mkstemp` (always mode 0600), the file is created
    with mode 0666 and the kernel takes the process umask off at creation, so
    the result gets the permissions any other program's new file would get
    (0644 under umask 022, 0600 under 077; a default ACL of the directory
    applies too). The umask is never read or changed: ``os.umask`` can only be
    read by setting it, which would race with files other threads create.
    ``O_EXCL`` makes the name ours alone; writers that reopen the file by name
    (``open(tmp, "wb")``, netCDF, matplotlib) truncate it and keep its mode.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def _netcdf_failure(exc: BaseException) -> bool:
    """The netCDF library reports a failed write (e.g. a full disk) as
    ``RuntimeError("NetCDF: HDF error")``."""
    return isinstance(exc, RuntimeError) and str(exc).startswith("NetCDF:")


def _plain(value):
    """numpy scalars and arrays as plain Python values for JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_plain) + "\n")


def write_netcdf(ds, path: str | Path, encoding: dict | None = None) -> None:
    """Write the xarray Dataset ``ds`` to ``path`` through a temporary file
    (complete or absent). Floating-point dimension coordinates get no
    ``_FillValue`` (CF: a coordinate variable has no missing values)."""
    encoding = dict(encoding or {})
    for dim in ds.dims:
        if dim in ds.coords and ds[dim].dtype.kind == "f":
            encoding[dim] = {"_FillValue": None, **encoding.get(dim, {})}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding or {})
