"""Provenance every output carries: the package, git, torch, xarray and Python
versions, a hash of the stage's settings, and a CF-style header (``Conventions``,
``title``, ISO UTC ``history``) set in one place by :func:`stamp` (torch-free)."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

from . import __version__

CONVENTIONS = "CF-1.10"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def torch_version() -> str:
    """``torch.__version__`` (with its build tag, e.g. ``+cu130``) without
    importing torch in stages that do not need it."""
    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.submodule_search_locations:
        version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
        match = (
            re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M)
            if version_file.is_file()
            else None
        )
        if match:
            return match.group(1)
    return importlib.metadata.version("torch")


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """The commit of the package's source tree (``-dirty`` with uncommitted
    changes to tracked files), or why it is unknown."""
    here = str(Path(__file__).resolve().parent)
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def config_sha256(params: dict) -> str:
    """SHA-256 of a stage's settings (the config sections it reads) as canonical JSON."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def provenance_attrs(params: dict | None = None, device: str | None = None, precision: str | None = None) -> dict:
    """Attributes every result carries: package, torch, xarray and Python
    versions, the git revision, and where known the stage's ``config_sha256``,
    ``device`` and ``precision``."""
    out = {
        "limiting_dynamics_version": __version__,
        "git_revision": git_revision(),
        "torch_version": torch_version(),
        "xarray_version": importlib.metadata.version("xarray"),
        "python_version": platform.python_version(),
    }
    if params is not None:
        out["config_sha256"] = config_sha256(params)
    if device is not None:
        out["device"] = str(device)
    if precision is not None:
        out["precision"] = str(precision)
    return out


def stamp(ds, title: str, command: str, params: dict | None = None, device=None, precision=None, **attrs):
    """Give the xarray Dataset ``ds`` the header every result file carries: CF
    ``Conventions``, ``title``, a ``history`` line naming the stage
    (``limiting-dynamics COMMAND``) at the present UTC time, the ``attrs`` and
    :func:`provenance_attrs`. Returns ``ds``."""
    ds.attrs.update(
        Conventions=CONVENTIONS,
        title=title,
        history=f"{now_iso()} created by limiting-dynamics {command}",
        **attrs,
        **provenance_attrs(params, device, precision),
    )
    return ds
