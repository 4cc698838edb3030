"""Shared fixtures: tiny configs and a copy of the workflow in a temporary directory."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

TINY = {
    "compute": {
        "device": "cpu",
        "threads": 1,
        "mem_mb": 4000,
        "compile_recording": "auto",
        "checkpoint_steps": 20,
        "checkpoint_epochs": 1,
        "channels_last": False,
        "autocast": "none",
        "compile_model": False,
    },
    "data": {
        "name": "digits",
        "image_size": 8,
        "channels": 1,
        "test_fraction": 0.2,
        "split_seed": 0,
        "loader": "memory",
    },
    "model": {"arch": "resnet", "blocks": [1], "width": 8, "stem": "cifar"},
    "converge": {
        "checkpoint": None,
        "epochs": 2,
        "lr": 0.1,
        "batch_size": 128,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,
        "sampling": "reshuffle",
        "augment_shift": 1,
        "label_noise": 0.1,
        "seed": 0,
    },
    "limiting": {
        "steps": 60,
        "eval_every": 30,
        "tensor_every": 5,
        "sampling": "reshuffle",
        "augment_shift": 1,
        "label_noise": 0.1,
        "burn_in": {"relaxation_times": 0.1, "chained_relaxation_times": 0.05, "min_steps": 5, "max_steps": 20},
        "phase_space": {"modes": 3, "sketch_dim": 16, "sketch_seed": 0},
    },
    "cells": {
        "default": {"lr": 0.05, "batch_size": 32, "momentum": 0.9, "weight_decay": 5.0e-3, "seed": 0},
        "replicates": 1,
        "sweeps": {"lr": [0.02], "batch_size": [], "momentum": [], "weight_decay": [], "seed": []},
        "grid": {},
    },
    "analysis": {
        "fit_window": [0.1, 1.0],
        "fit_points": 16,
        "bootstrap_samples": 200,
        "stationary_window": [0.5, 1.0],
        "stationary_batches": 5,
        "stationarity_window": 10,
        "mode_window": [0.0, 0.5],
        "curvature_block": 10,
        "spectrum_segment": 16,
        "seed": 0,
    },
    "plots": {"dpi": 60, "smoothing": 5, "context": "paper", "format": "png"},
    "linear_regression": {
        "enabled": True,
        "lr": 2.0e-4,
        "batch_size": 32,
        "weight_decay": 0.01,
        "momenta": [0.9, 0.99],
        "samplings": ["replacement", "reshuffle"],
        "steps": 40,
        "chains": 16,
        "kept_chains": 4,
        "top_modes": 3,
        "displacement": 0.1,
        "lag_anchor": 0.5,
        "lags": [1, 5],
        "seed": 0,
    },
    "hessian": {
        "enabled": True,
        "cells": "all",
        "n_samples": 64,
        "draws": 2,
        "batch_size": 32,
        "bn_mode": "train",
        "precision": "float32",
        "top_k": 3,
        "tol": 1.0e-2,
        "max_iter": 30,
        "slq_vectors": 2,
        "slq_iterations": 8,
        "hutchinson_samples": 4,
        "reuse_graph": True,
        "drift_steps": [2, 5],
        "drift_modes": 2,
        "seed": 0,
    },
    "noise": {"enabled": True, "n_batches": 8, "bn_mode": "train", "per_sample": True, "chunk": 64, "seed": 0},
    "landscape": {"enabled": True, "modes": [1, 3], "grid": 5, "extent_factor": 1.5, "n_samples": 64, "seed": 0},
}


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY)


def _snakemake_exe() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else "snakemake"


class Workflow:
    """A copy of the workflow in a temporary directory, run with the real Snakemake."""

    def __init__(self, root: Path, config: dict):
        self.root = root
        shutil.copy(REPO / "Snakefile", root / "Snakefile")
        shutil.copytree(REPO / "workflow", root / "workflow")
        (root / "config").mkdir()
        self.write_config(config)

    def write_config(self, config: dict) -> None:
        (self.root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _env(self) -> dict:
        return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [_snakemake_exe(), "--cores", "2", *args], cwd=self.root, env=self._env(), capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, *args: str) -> subprocess.Popen:
        """Snakemake in the background (stdout and stderr together, as text)."""
        return subprocess.Popen(
            [_snakemake_exe(), "--cores", "2", *args],
            cwd=self.root,
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def planned_jobs(self, *args: str) -> dict[str, int]:
        """Rule -> job count of a dry run (empty when nothing would run)."""
        out = self.run("-n", "--quiet", "rules", *args).stdout
        jobs = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
                jobs[parts[0]] = int(parts[1])
        return jobs

    def path(self, rel: str) -> Path:
        return self.root / rel


@pytest.fixture
def workflow_factory(tmp_path):
    def make(config: dict) -> Workflow:
        return Workflow(tmp_path, config)

    return make


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The prepared digits (8x8, one channel) as tensors, for unit tests of training."""
    from limiting_dynamics.data import datasets as data

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    data.save_prepared(data.prepare(TINY["data"]), path)
    return data.load_prepared(path)
