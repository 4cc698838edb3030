"""Shared fixtures: the tiny config (tests/tiny_config.yaml) and a copy of the
workflow in a temporary directory, run with the real Snakemake."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

TINY = yaml.safe_load((Path(__file__).with_name("tiny_config.yaml")).read_text())
PLAIN_NUMERICS = {"channels_last": False, "autocast": "none", "compile_model": False}  # a stage's "numerics"


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY)


@functools.cache
def _no_slurm_controller_bin() -> str:
    """A directory holding an ``scontrol`` that fails at once. Snakemake collects its
    executor plugins at every start, and the SLURM plugin then runs ``scontrol show
    config``; where SLURM's client tools are installed but no controller runs (CI
    installs SLURM for tests/integration/test_slurm.py, which starts its own), that
    call waits about 9 s for each Snakemake process. Runs that do not use SLURM put
    this directory first on their PATH; the SLURM test does not."""
    d = Path(tempfile.mkdtemp(prefix="no-slurm-controller-"))
    exe = d / "scontrol"
    exe.write_text("#!/bin/sh\necho 'no SLURM controller in this test' >&2\nexit 1\n")
    exe.chmod(0o755)
    return str(d)


def run_path(slurm: bool = False) -> str:
    """PATH for a process the tests start: this interpreter's scripts first (snakemake,
    limiting-dynamics), and unless ``slurm``, an ``scontrol`` that fails at once."""
    parts = ([] if slurm else [_no_slurm_controller_bin()]) + [str(Path(sys.executable).parent), os.environ["PATH"]]
    return os.pathsep.join(parts)


def _snakemake_exe() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else "snakemake"


class Workflow:
    """A copy of the workflow in a temporary directory, run with the real Snakemake."""

    def __init__(self, root: Path, config: dict):
        self.root = root
        self.env: dict[str, str] = {}  # added to every run's environment
        shutil.copy(REPO / "Snakefile", root / "Snakefile")
        shutil.copytree(REPO / "workflow", root / "workflow")
        (root / "config").mkdir()
        self.write_config(config)

    def write_config(self, config: dict) -> None:
        (self.root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _env(self, slurm: bool = False) -> dict:
        return {**os.environ, "PATH": run_path(slurm), **self.env}

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
    return data.load_prepared(path, "cpu")


def pytest_collection_modifyitems(items):
    """Everything under tests/integration is marked ``integration`` (``-m "not integration"`` skips it)."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


class StopAt:
    """A stop flag that reports SIGTERM once the loop has called it ``n`` times."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self):
        import signal

        self.calls += 1
        return signal.SIGTERM if self.calls >= self.n else None


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread (a busy machine stalls many small multi-threaded ops)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL_RESNET = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}


def drawing(sampling="reshuffle", augment_shift=0, label_noise=0.0):
    """How the tests' runs draw their batches (plain reshuffled batches unless told)."""
    from limiting_dynamics.data.drawing import BatchDrawing

    return BatchDrawing(sampling, augment_shift, label_noise)


def short_limiting_run(digits, hp, steps=40, burn_in=5, **kw):
    """A limiting run of the small ResNet on the digits (burn-in included), quiet."""
    import torch

    from limiting_dynamics.models import build_model
    from limiting_dynamics.training import Numerics, limiting_run

    torch.manual_seed(0)
    model = build_model(SMALL_RESNET, 10, 1)
    kw.setdefault("recording", recording_plan())
    return limiting_run(
        model,
        digits,
        hp,
        steps=steps,
        burn_in=burn_in,
        eval_every=20,
        drawing=drawing(kw.pop("sampling", "reshuffle"), kw.pop("augment_shift", 0), kw.pop("label_noise", 0.0)),
        device=torch.device("cpu"),
        cell="testcell",
        log=lambda s: None,
        numerics=Numerics(),
        **kw,
    )


def recording_plan(**kw):
    """The tests' recording plan: per-tensor norms every 10 steps, fused norms as the config's default
    ("auto"), and whatever ``kw`` adds (directions, sketch)."""
    from limiting_dynamics.recording import RecordingPlan

    return RecordingPlan(**{"tensor_every": 10, "compile": "auto", **kw})


@pytest.fixture(scope="session")
def record(digits):
    """The record of one short limiting run at lr 0.05, S 32, beta 0.9, wd 5e-3."""
    from limiting_dynamics.hyperparameters import Hyperparameters

    return short_limiting_run(digits, Hyperparameters(0.05, 32, 0.9, 5e-3, 0))


def assert_same_result(ref, cut, timeless=("history", "seconds")) -> None:
    """Two result data sets with the same variables, values (bit for bit) and
    attributes, but for the attributes that record when and how long."""
    import numpy as np

    assert set(ref.variables) == set(cut.variables)
    for name in ref.variables:
        np.testing.assert_array_equal(cut[name].values, ref[name].values, err_msg=name)
        assert cut[name].attrs == ref[name].attrs, name
    assert {k: v for k, v in ref.attrs.items() if k not in timeless} == {
        k: v for k, v in cut.attrs.items() if k not in timeless
    }
