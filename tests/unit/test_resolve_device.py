"""compute.device: cuda where torch sees no GPU is one error that says what was found and what to do."""

import pytest
import torch

from limiting_dynamics.errors import ConfigError
from limiting_dynamics.training import resolve_device

PREFIX = "compute.device is 'cuda' but no CUDA GPU is visible to this job; "


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def _message(name="cuda") -> str:
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    assert "\n" not in str(err.value)  # the CLI prints it as one line
    return str(err.value)


def test_cuda_build_without_gpu_names_build_findings_and_fixes(no_gpu):
    no_gpu.setattr(torch.version, "cuda", "13.0")
    msg = _message()
    assert msg.startswith(PREFIX)
    assert f"torch {torch.__version__} is a CUDA 13.0 build" in msg
    assert "torch.cuda.device_count() is 0, CUDA_VISIBLE_DEVICES is unset" in msg
    assert "NVIDIA driver is 580 or newer" in msg and "nvidia-smi" in msg
    assert "CPU-only build" in msg and "compute.device: cpu" in msg


def test_hidden_gpus_are_reported(no_gpu):
    no_gpu.setattr(torch.version, "cuda", "12.8")
    no_gpu.setenv("CUDA_VISIBLE_DEVICES", "")
    msg = _message()
    assert "CUDA_VISIBLE_DEVICES='' (it hides every GPU)" in msg and "NVIDIA driver is 525 or newer" in msg


def test_a_counted_but_unusable_gpu_points_at_the_driver(no_gpu):
    no_gpu.setattr(torch.version, "cuda", "13.0")
    no_gpu.setattr(torch.cuda, "device_count", lambda: 2)
    no_gpu.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    msg = _message()
    assert "torch.cuda.device_count() is 2, CUDA_VISIBLE_DEVICES='0,1';" in msg and "older driver" in msg


def test_unknown_cuda_major_still_names_the_build(no_gpu):
    no_gpu.setattr(torch.version, "cuda", "99.1")
    assert "the NVIDIA driver supports CUDA 99.1" in _message()


def test_cpu_only_build_says_so(no_gpu):
    no_gpu.setattr(torch.version, "cuda", None)
    msg = _message()
    assert msg.startswith(PREFIX) and "is a CPU-only build (torch.version.cuda is None)" in msg
    assert "with CUDA" in msg and "compute.device: cpu" in msg and "nvidia-smi" not in msg


def test_auto_and_cpu_fall_back_without_error(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
