"""Provenance every output carries: the package, git, torch, xarray, numpy, scipy
and Python versions, a hash of the stage's settings, the numerics (torch's CUDA
and cuDNN builds, the device, the determinism settings) and a CF-style header
(``Conventions``, ``title``, ISO UTC ``history``) set in one place by
:func:`stamp`.

Torch-free: what only torch can tell (the builds, the GPU, the determinism
flags) is recorded when the stage has imported torch already (``sys.modules``);
stages that never use torch do not load it for their header."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

from . import __version__

CONVENTIONS = "CF-1.10"
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")  # Linux: the loaded kernel module's version


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _torch_version_file() -> str:
    """The text of the installed ``torch/version.py`` ('' if there is none), read
    without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.submodule_search_locations:
        version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
        if version_file.is_file():
            return version_file.read_text()
    return ""


def torch_version() -> str:
    """``torch.__version__`` (with its build tag, e.g. ``+cu130``) without
    importing torch in stages that do not need it."""
    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", _torch_version_file(), re.M)
    if match:
        return match.group(1)
    return importlib.metadata.version("torch")


def torch_cuda_build() -> str | None:
    """``torch.version.cuda``: the CUDA runtime torch was built with (``"13.0"``),
    ``None`` for a CPU-only build; read without importing torch when it is not loaded."""
    if "torch" in sys.modules:
        return sys.modules["torch"].version.cuda
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", _torch_version_file(), re.M)
    return match.group(1) if match else None


def describe_cuda_build(cuda: str | None) -> str:
    """``"CUDA 13.0 build"``, or ``"a CPU-only build"`` for ``torch.version.cuda is None``."""
    return f"CUDA {cuda} build" if cuda else "a CPU-only build"


def version_line() -> str:
    """What ``limiting-dynamics --version`` prints: the package version and the
    torch it runs with (version and CUDA build), without importing torch."""
    try:
        ours = importlib.metadata.version("limiting-dynamics")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        ours = __version__
    try:
        torch = f"torch {torch_version()}, {describe_cuda_build(torch_cuda_build())}"
    except importlib.metadata.PackageNotFoundError:
        torch = "torch not installed"
    return f"limiting-dynamics {ours} ({torch}; Python {platform.python_version()})"


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
    return hashlib.sha256(json.dumps(plain_dicts(params), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def plain_dicts(obj):
    """``obj`` with every dict subclass made a plain dict, read through ``dict.items``
    (a stage's settings record what the stage reads; hashing or saving them is not a
    read), inside lists and tuples too; an ``OrderedDict`` (a module's state dict,
    with its metadata) is kept as it is. Checkpoints need it too: ``weights_only``
    loading accepts no other dict class."""
    if isinstance(obj, OrderedDict):
        return obj
    if isinstance(obj, dict):
        return {k: plain_dicts(v) for k, v in dict.items(obj)}
    if type(obj) in (list, tuple):
        return type(obj)(plain_dicts(v) for v in obj)
    return obj


@functools.lru_cache(maxsize=1)
def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version (``"580.65.06"``) from the kernel module
    (``/proc/driver/nvidia/version``) or ``nvidia-smi``; ``None`` when neither tells."""
    try:
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+(?:\.\d+)+)", NVIDIA_DRIVER_FILE.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.split()
    return lines[0] if proc.returncode == 0 and lines else None


def numerics_attrs(device=None) -> dict:
    """How the numbers were computed: numpy and scipy versions; with torch
    loaded, torch's CUDA and cuDNN builds and its determinism settings; and
    ``device_name``, the name of the stage's ``device`` (``"cpu"``, or the GPU
    model, then with ``nvidia_driver_version`` where the driver tells it).
    Without a ``device`` the name is given only when this process has used
    CUDA; a torch-free stage cannot name a GPU and leaves it out. Values are
    strings and integers (NetCDF attributes; the flags are 0 or 1). Never
    imports torch."""
    out = {
        "numpy_version": importlib.metadata.version("numpy"),
        "scipy_version": importlib.metadata.version("scipy"),
    }
    kind = str(device).split(":")[0] if device is not None else None
    if kind == "cpu":
        out["device_name"] = "cpu"
    torch = sys.modules.get("torch")
    if torch is None:
        return out
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    out.update(
        torch_cuda_version=torch.version.cuda or "none (CPU-only build)",
        torch_cudnn_version=str(cudnn) if cudnn is not None else "none",
        torch_deterministic_algorithms=int(torch.are_deterministic_algorithms_enabled()),
        torch_deterministic_warn_only=int(torch.is_deterministic_algorithms_warn_only_enabled()),
        cudnn_benchmark=int(bool(torch.backends.cudnn.benchmark)),
        cudnn_deterministic=int(bool(torch.backends.cudnn.deterministic)),
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG", "unset"),
    )
    if kind == "cuda" or (kind is None and torch.cuda.is_initialized()):
        try:
            index = torch.device(device).index if device is not None else None
            out["device_name"] = torch.cuda.get_device_name(torch.cuda.current_device() if index is None else index)
        except (RuntimeError, AssertionError, ValueError):  # no usable GPU after all: say nothing
            return out
        driver = nvidia_driver_version()
        if driver is not None:
            out["nvidia_driver_version"] = driver
    return out


def provenance_attrs(params: dict | None = None, device: str | None = None, precision: str | None = None) -> dict:
    """Attributes every result carries: package, torch, xarray, numpy, scipy
    and Python versions, the git revision, :func:`numerics_attrs`, and where
    known the stage's ``config_sha256``, ``device`` and ``precision``."""
    out = {
        "limiting_dynamics_version": __version__,
        "git_revision": git_revision(),
        "torch_version": torch_version(),
        "xarray_version": importlib.metadata.version("xarray"),
        "python_version": platform.python_version(),
        **numerics_attrs(device),
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
