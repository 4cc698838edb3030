"""Provenance of the numerics in every output's header (provenance.stamp)."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from limiting_dynamics import provenance
from limiting_dynamics.atomic import write_netcdf
from limiting_dynamics.provenance import numerics_attrs, stamp

TORCH_ATTRS = (
    "torch_cuda_version",
    "torch_cudnn_version",
    "torch_deterministic_algorithms",
    "cudnn_benchmark",
    "cudnn_deterministic",
    "cublas_workspace_config",
)


def _dataset():
    return xr.Dataset({"x": ("step", np.arange(4.0))}, coords={"step": np.arange(4)})


def test_stamp_records_the_numerics_with_torch_loaded(tmp_path, monkeypatch):
    import scipy
    import torch

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ds = stamp(_dataset(), "a test", "test", {"a": 1}, "cpu", "float32")
    assert ds.attrs["numpy_version"] == np.__version__ and ds.attrs["scipy_version"] == scipy.__version__
    assert ds.attrs["torch_cuda_version"] == (torch.version.cuda or "none (CPU-only build)")
    assert ds.attrs["torch_deterministic_algorithms"] == int(torch.are_deterministic_algorithms_enabled())
    assert ds.attrs["cudnn_benchmark"] == int(torch.backends.cudnn.benchmark)
    assert ds.attrs["cublas_workspace_config"] == ":4096:8"
    assert ds.attrs["device_name"] == "cpu" and ds.attrs["device"] == "cpu"
    assert "nvidia_driver_version" not in ds.attrs  # only beside a GPU's name
    # every attribute is NetCDF-safe: it survives a write and a read
    write_netcdf(ds, tmp_path / "out.nc")
    back = xr.load_dataset(tmp_path / "out.nc").attrs
    for key in ("numpy_version", "scipy_version", "device_name", *TORCH_ATTRS):
        assert back[key] == ds.attrs[key], key
        assert isinstance(ds.attrs[key], str | int) and not isinstance(ds.attrs[key], bool), key


def test_determinism_settings_are_read_when_stamped(monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    attrs = numerics_attrs("cpu")
    assert attrs["cudnn_benchmark"] == 1 and attrs["torch_deterministic_algorithms"] == 1
    assert attrs["cublas_workspace_config"] == "unset"


def test_a_gpu_is_named_with_its_driver(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(provenance, "nvidia_driver_version", lambda: "580.65.06")
    attrs = numerics_attrs("cuda")
    assert attrs["device_name"] == "NVIDIA H200" and attrs["nvidia_driver_version"] == "580.65.06"
    monkeypatch.setattr(provenance, "nvidia_driver_version", lambda: None)  # no driver to ask: left out
    assert "nvidia_driver_version" not in numerics_attrs("cuda:0")


def test_a_gpu_that_cannot_be_named_is_left_out(monkeypatch):
    import torch

    def no_gpu(index=None):
        raise RuntimeError("no CUDA GPUs are available")

    monkeypatch.setattr(torch.cuda, "get_device_name", no_gpu)
    attrs = numerics_attrs("cuda:0")
    assert "device_name" not in attrs and "nvidia_driver_version" not in attrs and "torch_cuda_version" in attrs


@pytest.mark.parametrize(
    "text, version",
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:24 UTC 2025\n", "580.65.06"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build\n", "580.95.05"),
    ],
)
def test_the_driver_version_is_read_from_the_kernel_module(monkeypatch, tmp_path, text, version):
    (tmp_path / "version").write_text(text)
    monkeypatch.setattr(provenance, "NVIDIA_DRIVER_FILE", tmp_path / "version")
    provenance.nvidia_driver_version.cache_clear()
    try:
        assert provenance.nvidia_driver_version() == version
        (tmp_path / "version").unlink()  # no kernel module file and no nvidia-smi: unknown
        monkeypatch.setattr(provenance.shutil, "which", lambda name: None)
        provenance.nvidia_driver_version.cache_clear()
        assert provenance.nvidia_driver_version() is None
    finally:
        provenance.nvidia_driver_version.cache_clear()


def test_stamping_without_torch_does_not_import_it(tmp_path):
    """The analysis and plot stages are torch-free; their header must not load torch."""
    code = (
        "import sys\n"
        "import numpy as np, xarray as xr\n"
        "from limiting_dynamics.atomic import write_netcdf\n"
        "from limiting_dynamics.provenance import stamp\n"
        "ds = stamp(xr.Dataset({'x': ('step', np.arange(3.0))}), 't', 'test', {'a': 1})\n"
        f"write_netcdf(ds, {str(tmp_path / 'out.nc')!r})\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
        "print(sorted(ds.attrs))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loaded, keys = proc.stdout.splitlines()
    assert loaded == "[]"
    assert "'numpy_version'" in keys and "'scipy_version'" in keys and "'torch_version'" in keys
    assert not any(f"'{k}'" in keys for k in TORCH_ATTRS)  # only what torch itself can tell is left out
    assert "'device_name'" not in keys  # no device given and no GPU used: nothing to name


def test_version_line_names_torch_and_its_cuda_build_without_importing_torch():
    code = (
        "import sys\nfrom limiting_dynamics.provenance import version_line\n"
        "print(version_line())\nprint('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    line, loaded = proc.stdout.splitlines()
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    assert f"torch {torch.__version__}, {build}" in line and loaded == "False"
