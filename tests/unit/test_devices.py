"""One GPU per concurrent job (a lock per GPU, claimed for the life of the
process) and the determinism settings on CUDA, all tested without a GPU: the
device count is passed in, and torch's CUDA calls are replaced where needed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from limiting_dynamics import devices, provenance, training
from limiting_dynamics.stages import common

# a job claiming one of 4 GPUs: prints the index (and whether torch got loaded), holds it until stdin closes
CHILD = r"""
import sys
from limiting_dynamics.devices import GpuSlotsBusy, claim_gpu_slot
try:
    index = claim_gpu_slot(4, sys.argv[1], timeout=float(sys.argv[2]), poll=0.05)
except GpuSlotsBusy as exc:
    print(exc, file=sys.stderr, flush=True)
    sys.exit(3)
print(index, "torch" in sys.modules, flush=True)
sys.stdin.read()
"""


def _claim(lock_dir, timeout: float) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", devices.WAIT_ENV)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(lock_dir), str(timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _index(proc: subprocess.Popen) -> int:
    line = proc.stdout.readline().split()
    assert line, proc.stderr.read()
    assert line[1] == "False"  # the claim does not load torch
    return int(line[0])


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def _unset_cublas(monkeypatch) -> None:
    """CUBLAS_WORKSPACE_CONFIG unset now and as it was after the test, whatever the test sets."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # records the value before the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")


@pytest.fixture
def no_slot():
    """Whatever a test claims in this process is given back after it."""
    devices.release_gpu_slot()
    yield
    devices.release_gpu_slot()


def test_concurrent_jobs_get_distinct_gpus_a_fifth_waits_and_a_freed_gpu_is_reused(tmp_path):
    procs = [_claim(tmp_path, 30) for _ in range(4)]  # started together, claiming at once
    try:
        by_index = {_index(p): p for p in procs}
        assert sorted(by_index) == [0, 1, 2, 3]

        procs.append(late := _claim(tmp_path, 0.5))  # all four taken: it waits, says so, then fails clearly
        _, err = late.communicate(timeout=30)
        assert late.returncode == 3
        assert "waiting for a free GPU: all 4 visible GPUs are claimed by other jobs" in err
        assert "all 4 visible GPUs stayed claimed by other jobs" in err and "--resources gpu=N" in err

        procs.append(waiter := _claim(tmp_path, 60))  # waits until a job ends, then takes its GPU
        time.sleep(0.5)
        assert waiter.poll() is None
        _release(by_index[2])
        assert _index(waiter) == 2

        _release(by_index[0])  # a GPU freed by an ended job is claimed again
        procs.append(again := _claim(tmp_path, 5))
        assert _index(again) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=30)


def test_a_second_claim_of_a_process_keeps_its_gpu_and_release_frees_it(tmp_path, no_slot):
    first = devices.claim_gpu_slot(4, tmp_path, timeout=0)
    assert devices.claim_gpu_slot(4, tmp_path, timeout=0) == first == 0
    holder = _claim(tmp_path, 5)
    try:
        assert _index(holder) == 1
        devices.release_gpu_slot()
        assert devices.claim_gpu_slot(4, tmp_path, timeout=0) == 0
    finally:
        _release(holder)


def test_lock_names_follow_the_visible_devices():
    assert devices.slot_names(3) == ["gpu-0", "gpu-1", "gpu-2"]
    assert devices.slot_names(2, "2,3") == ["gpu-2", "gpu-3"]  # the same GPU, the same lock, whoever sees it
    assert devices.slot_names(1, "GPU-1a2b/c") == ["gpu-GPU-1a2b_c"]
    assert devices.slot_names(2, "5") == ["gpu-0", "gpu-1"]  # a list that does not match the count: indices


def test_the_lock_directory_is_a_parameter_with_an_environment_default(monkeypatch, tmp_path):
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "locks"))
    assert devices.default_lock_dir() == tmp_path / "locks"
    monkeypatch.delenv(devices.LOCK_DIR_ENV)
    assert devices.default_lock_dir().name == "limiting-dynamics-gpu-slots"


@pytest.fixture
def fake_cuda(monkeypatch, tmp_path, no_slot):
    """A machine that reports ``count`` CUDA GPUs; records what setup_device sets."""
    calls = {"deterministic": [], "set_device": []}
    state = {"count": 4}
    monkeypatch.setattr(training, "resolve_device", lambda name: torch.device("cpu" if name == "cpu" else "cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state["count"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(str(d)))
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, **kw: calls["deterministic"].append(mode))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    _unset_cublas(monkeypatch)
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path))
    calls["state"] = state
    return calls


def test_on_cuda_the_determinism_settings_are_applied_and_a_gpu_is_claimed(fake_cuda, tmp_path):
    device = devices.setup_device("cuda", True, log=lambda m: None)
    assert device == torch.device("cuda", 0)
    assert fake_cuda["set_device"] == ["cuda:0"]
    assert (tmp_path / "gpu-0.lock").exists()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert fake_cuda["deterministic"] == [True]
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True


def test_without_determinism_a_gpu_is_still_claimed_and_nothing_else_changes(fake_cuda):
    assert devices.setup_device("cuda", False, log=lambda m: None) == torch.device("cuda", 0)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and fake_cuda["deterministic"] == []
    assert torch.backends.cudnn.benchmark is True


def test_a_job_pinned_to_one_gpu_claims_nothing(fake_cuda, tmp_path):
    fake_cuda["state"]["count"] = 1  # e.g. SLURM's CUDA_VISIBLE_DEVICES of the job's own GPU
    assert devices.setup_device("auto", True) == torch.device("cuda")
    assert fake_cuda["set_device"] == [] and not list(tmp_path.glob("*.lock"))
    assert fake_cuda["deterministic"] == [True]


def test_on_the_cpu_nothing_changes(fake_cuda, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: pytest.fail("counted GPUs for a CPU job"))
    assert devices.setup_device("cpu", True) == torch.device("cpu")
    assert fake_cuda["deterministic"] == [] and fake_cuda["set_device"] == []
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.backends.cudnn.benchmark is True
    assert not list(tmp_path.glob("*.lock"))
    assert devices.apply_determinism(True, torch.device("cpu")) is False


@pytest.mark.parametrize(("before", "after"), [(":16:8", ":16:8"), (":4096:8", ":4096:8"), (":0:0", ":4096:8")])
def test_a_deterministic_cublas_setting_is_kept_any_other_replaced(fake_cuda, monkeypatch, before, after):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", before)
    assert devices.apply_determinism(True, torch.device("cuda")) is True
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == after


def test_the_output_header_reports_the_determinism_settings(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    _unset_cublas(monkeypatch)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        devices.apply_determinism(True, "cuda")
        attrs = provenance.numerics_attrs()
    finally:
        torch.use_deterministic_algorithms(before)
    assert attrs["torch_deterministic_algorithms"] == 1 and attrs["cudnn_benchmark"] == 0
    assert attrs["torch_deterministic_warn_only"] == 1  # a kernel without a deterministic version warns, not stops
    assert attrs["cudnn_deterministic"] == 1 and attrs["cublas_workspace_config"] == ":4096:8"


def test_the_stages_pass_compute_deterministic(monkeypatch):
    seen = []
    monkeypatch.setattr(devices, "setup_device", lambda name, det, **kw: seen.append((name, det)) or "dev")
    assert common.device_for({"device": "cuda", "deterministic": False}) == "dev"
    common.device_for({"device": "auto", "deterministic": True})
    assert seen == [("cuda", False), ("auto", True)]
    with pytest.raises(KeyError):  # no default in code for what the config sets
        common.device_for({"device": "auto"})
