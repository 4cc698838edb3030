"""The workflow on local data sets in their real formats (generated, tiny): CIFAR-10
files, and an ImageNet folder streamed by DataLoader workers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import xarray as xr
from conftest import TINY, Workflow
from generated_data import cifar10_config, imagenet_stream_config, write_cifar10, write_image_folder


@pytest.mark.integration
def test_workflow_runs_on_cifar10_files(tmp_path):
    root = write_cifar10(tmp_path / "cifar-10-batches-py")
    cfg = copy.deepcopy(TINY)
    cfg["data"] = cifar10_config(root, image_size=8)
    cfg["converge"]["batch_size"] = 32  # 100 training images here
    cfg["linear_regression"]["enabled"] = False
    (tmp_path / "wf").mkdir()
    wf = Workflow(tmp_path / "wf", cfg)
    # CIFAR-10 differs from the digits only in how the files are read into memory: the chain up
    # to the trajectory covers it (later stages read the same in-memory tensors as for the digits)
    target = "results/trajectories/lr0.05_bs32_mom0.9_wd0.005_seed0.nc"
    wf.run(target)
    traj = xr.load_dataset(wf.path(target))
    assert traj.attrs["dataset"] == "cifar10" and traj.sizes["step"] == TINY["limiting"]["steps"]
    assert np.isfinite(traj.sq_dist_from_start.values).all()


@pytest.mark.integration
def test_workflow_streams_an_imagenet_folder(tmp_path):
    root = write_image_folder(tmp_path / "imagenet", n_train=30, n_val=5)
    cfg = copy.deepcopy(TINY)
    cfg["compute"]["threads"] = 2  # one DataLoader worker process
    cfg["data"] = imagenet_stream_config(root, stream_subset=48)
    cfg["converge"].update(batch_size=32, augment_shift=0)
    cfg["limiting"]["augment_shift"] = 0
    cfg["hessian"]["n_samples"] = cfg["landscape"]["n_samples"] = 48
    cfg["linear_regression"]["enabled"] = False
    (tmp_path / "wf").mkdir()
    wf = Workflow(tmp_path / "wf", cfg)
    target = "results/analysis/theory/lr0.05_bs32_mom0.9_wd0.005_seed0.nc"
    wf.run(target)
    traj = xr.load_dataset(wf.path("results/trajectories/lr0.05_bs32_mom0.9_wd0.005_seed0.nc"))
    assert traj.attrs["dataset"] == "imagenet" and np.isfinite(traj.sq_dist_from_start.values).all()
    assert traj.attrs["numerics"] == "autocast=none; channels_last=false; compile_model=false"
    assert "resuming" not in wf.path("results/logs/limiting_run/lr0.05_bs32_mom0.9_wd0.005_seed0.log").read_text()
    # the gradient noise is that of the streamed, cropped and flipped batches SGD sees
    nz = xr.load_dataset(wf.path("results/noise/lr0.05_bs32_mom0.9_wd0.005_seed0.nc"))
    assert nz.attrs["batch_source"] == "StreamBatches" and nz.attrs["n_train"] == 3 * 30  # all files, 3 classes
    assert np.isfinite(nz.attrs["trace_cov"]) and nz.attrs["trace_cov"] > 0
