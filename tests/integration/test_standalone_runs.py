"""Runs of the workflow that need a directory of their own, apart from the tiny run
that tests/integration/test_workflow.py shares between its tests (a separate file,
so that the test runner can give them to its other worker): a bad config, a
diverging cell, torchvision's ResNet-18 through every stage, lint and format,
and the command line's one-line failures."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from conftest import REPO, TINY, Workflow, run_path

from limiting_dynamics.config import cell_id, default_cell

pytestmark = pytest.mark.integration

DEFAULT = cell_id(default_cell(TINY["cells"]))


def test_bad_config_stops_before_any_job(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["cells"]["default"]["momentum"] = 1.0
    w = Workflow(tmp_path, cfg)
    proc = w.run(check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Config error: config key 'cells.default.momentum': value 1.0 is not allowed: must be < 1" in text
    assert "Traceback" not in text
    assert not (tmp_path / "results").exists()


def test_diverging_cell_stops_with_a_clear_error_and_no_complete_output(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["cells"]["sweeps"]["lr"] = [1.0e30]
    cfg["cells"]["default"]["weight_decay"] = 0.0
    cfg["limiting"]["burn_in"] = {
        "relaxation_times": 0.0,
        "chained_relaxation_times": None,
        "min_steps": 0,
        "max_steps": 0,
    }
    cfg["linear_regression"]["enabled"] = False
    cfg["hessian"]["enabled"] = False
    cfg["noise"]["enabled"] = False
    w = Workflow(tmp_path, cfg)
    proc = w.run("--keep-going", check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    bad = "lr1e+30_bs32_mom0.9_wd0_seed0"
    log = (tmp_path / f"results/logs/limiting_run/{bad}.log").read_text()
    assert re.search(rf"error: cell {re.escape(bad)} diverged at step \d+", log)
    assert "Traceback" not in log
    assert (tmp_path / f"results/runs/{bad}/diverged.json").exists()
    assert not (tmp_path / f"results/runs/{bad}/record.npz").exists()
    assert not (tmp_path / f"results/trajectories/{bad}.nc").exists()
    assert not (tmp_path / "results/analysis/summary.csv").exists()
    # the healthy cell still finished (--keep-going)
    assert (tmp_path / "results/trajectories/lr0.05_bs32_mom0.9_wd0_seed0.nc").exists()


def test_torchvision_resnet18_runs_through_the_pipeline(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["model"] = {"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet"}
    cfg["data"].update(image_size=16, channels=3)
    cfg["converge"]["epochs"] = 1
    cfg["limiting"].update(steps=12, eval_every=6)
    cfg["limiting"]["burn_in"] = {
        "relaxation_times": 0.0,
        "chained_relaxation_times": None,
        "min_steps": 2,
        "max_steps": 2,
    }
    cfg["cells"]["sweeps"]["lr"] = []  # one cell: the other cells' chains run the same code on the same model
    cfg["cells"]["quadratic"]["lr"] = []
    cfg["linear_regression"]["enabled"] = False
    cfg["hessian"].update(n_samples=16, batch_size=16, top_k=2, max_iter=4, slq_iterations=3)
    cfg["limiting"]["phase_space"]["modes"] = 2
    cfg["landscape"].update(modes=[1, 2], grid=3, n_samples=16)
    cfg["noise"].update(n_batches=4, per_sample=False)
    cfg["analysis"].update(fit_points=8, stationary_batches=4)
    w = Workflow(tmp_path, cfg)
    w.run()
    ds = xr.load_dataset(tmp_path / f"results/trajectories/{DEFAULT}.nc")
    assert ds.attrs["n_params"] == pytest.approx(11.18e6, rel=0.01)
    assert ds.sizes["step"] == 12 and ds.sizes["tensor"] == 62
    assert ds.mode_position.shape == (12, 2) and ds.sketch.shape[0] == 12


def test_lint_and_format_are_clean():
    exe = Path(sys.executable).parent
    env = {**os.environ, "PATH": run_path()}
    lint = subprocess.run([str(exe / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, env=env)
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [str(exe / "snakefmt"), "--check", "Snakefile", "workflow"], cwd=REPO, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_cli_failure_is_one_line_without_traceback(tmp_path):
    exe = shutil.which("limiting-dynamics", path=str(Path(sys.executable).parent)) or "limiting-dynamics"
    proc = subprocess.run(
        [
            exe,
            "limiting-run",
            "--data",
            str(tmp_path / "none.npz"),
            "--checkpoint",
            "x.pt",
            "--params",
            '{"hyperparameters": {"lr": 0.1, "batch_size": 8, "momentum": 0.9,'
            ' "weight_decay": 0, "seed": 0}, "device": "cpu", "deterministic": true}',
            "--out",
            str(tmp_path / "o.npz"),
            "--diverged-record",
            str(tmp_path / "d.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    # settings written by hand that lack a key the stage reads: one line naming it
    incomplete = subprocess.run(
        [exe, "limiting-run", "--data", "d.npz", "--checkpoint", "x.pt", "--params", '{"device": "cpu"}']
        + ["--out", str(tmp_path / "o.npz"), "--diverged-record", str(tmp_path / "d.json")],
        capture_output=True,
        text=True,
    )
    assert incomplete.returncode == 2 and "Traceback" not in incomplete.stderr
    assert incomplete.stderr.strip().count("\n") == 0 and "--params has no" in incomplete.stderr


def test_every_error_class_of_the_package_is_one_kind():
    """Every exception class the package defines derives from LimitingDynamicsError,
    so the CLI turns each into one line (found by importing every module)."""
    import importlib
    import inspect
    import pkgutil

    import limiting_dynamics
    from limiting_dynamics.errors import LimitingDynamicsError

    found = {}
    for info in pkgutil.walk_packages(limiting_dynamics.__path__, "limiting_dynamics."):
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("limiting_dynamics"):
                found[f"{obj.__module__}.{name}"] = obj
    assert len(found) >= 10
    assert [n for n, c in found.items() if not issubclass(c, LimitingDynamicsError)] == []
