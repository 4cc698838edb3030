"""Bad input, tried: every case gives one line saying what is wrong (no
traceback) and leaves no file that looks complete.

Each row: what the user did, and the exact line they see. Config mistakes are
caught by ``check_config`` before any job runs (Snakemake prints the line after
``Config error: ``); their table is in tests/unit/test_config.py. Here are the
stage commands as the rules call them, which print
``limiting-dynamics <stage>: error: <line>`` and exit with status 2."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import PLAIN_NUMERICS, TINY, Workflow

from limiting_dynamics.checkpoints import read_checkpoint, save_checkpoint
from limiting_dynamics.cli import EXIT_ERROR, main
from limiting_dynamics.data import datasets as data
from limiting_dynamics.models import build_model

MODEL = TINY["model"]


HP = {"lr": 0.05, "batch_size": 32, "momentum": 0.9, "weight_decay": 5e-3, "seed": 0}


CELL = "lr0.05_bs32_mom0.9_wd0.005_seed0"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Prepared digits, an (untrained) theta_0, a cell's burn-in state and an exported trajectory."""
    root = tmp_path_factory.mktemp("bad")
    data.save_prepared(data.prepare(TINY["data"]), root / "digits.npz")
    torch.manual_seed(0)
    model = build_model(MODEL, 10, 1)
    save_checkpoint({"model": model.state_dict()}, root / "theta0.pt")
    assert (
        _cli(
            "burn-in",
            "--data",
            root / "digits.npz",
            "--checkpoint",
            root / "theta0.pt",
            "--params",
            json.dumps(_cell_params(burn_in_steps=3)),
            "--out",
            root / "burn.pt",
            "--diverged-record",
            root / "diverged.json",
        )[0]
        == 0
    )
    assert (
        _cli(
            "limiting-run",
            "--data",
            root / "digits.npz",
            "--checkpoint",
            root / "burn.pt",
            "--params",
            json.dumps(_cell_params()),
            "--out",
            root / "record.npz",
            "--diverged-record",
            root / "diverged.json",
        )[0]
        == 0
    )
    assert (
        _cli(
            "export-trajectory",
            "--raw",
            root / "record.npz",
            "--params",
            json.dumps(_export_params()),
            "--out",
            root / "traj.nc",
        )[0]
        == 0
    )
    return root


def _cell_params(**kw) -> dict:
    return {
        "cell": CELL,
        "hyperparameters": HP,
        "device": "cpu",
        "deterministic": True,
        "model": MODEL,
        "numerics": PLAIN_NUMERICS,
        "steps": 20,
        "eval_every": 10,
        "tensor_every": 5,
        "compile_recording": "never",
        "sampling": "reshuffle",
        "augment_shift": 1,
        "label_noise": 0.0,
        "burn_in_steps": 0,
        "phase_space": {"modes": 0, "sketch_dim": 0, "sketch_seed": 0},
        **kw,
    }


def _export_params() -> dict:
    return {
        "cell": CELL,
        "hyperparameters": HP,
        "dataset": "digits",
        "family": "spherical",
        "model": MODEL,
        "sampling": "reshuffle",
        "augment_shift": 1,
        "label_noise": 0.0,
    }


def _cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in args])
    return rc, err.getvalue()


def _weights(root: Path, name: str, state: dict) -> Path:
    torch.save(state, root / name)
    return root / name


def _run_cell(env: Path, out: Path, start: Path | None = None, data_file: Path | None = None, **kw):
    return (
        "limiting-run",
        "--data",
        data_file or env / "digits.npz",
        "--checkpoint",
        start or env / "burn.pt",
        "--params",
        json.dumps(_cell_params(**kw)),
        "--out",
        out,
        "--diverged-record",
        out.with_suffix(".json"),
    )


def _nan_start(env: Path) -> Path:
    state = read_checkpoint(env / "burn.pt")
    state["model"] = {k: v.clone() for k, v in state["model"].items()}
    state["model"]["fc.weight"].fill_(float("nan"))
    save_checkpoint(state, env / "nan_start.pt")
    return env / "nan_start.pt"


def _trajectory_variant(env: Path, name: str, change) -> Path:
    ds = xr.load_dataset(env / "traj.nc")
    ds = change(ds)
    ds.to_netcdf(env / name)
    return env / name


def _analyze(path: Path, out: Path):
    params = {
        "fit_window": [0.1, 1.0],
        "fit_points": 8,
        "bootstrap_samples": 20,
        "stationary_window": [0.5, 1.0],
        "stationary_batches": 2,
        "seed": 0,
    }
    return ("analyze-cell", "--trajectory", path, "--params", json.dumps(params), "--out", out)


def _with_lr(lr: float) -> dict:
    return {**HP, "lr": lr}


def _burn_in(env: Path, name: str, hp: dict) -> Path:
    """A burn-in state (no steps) at other hyperparameters."""
    out = env / f"{name}.pt"
    rc, err = _cli(
        "burn-in",
        "--data",
        env / "digits.npz",
        "--checkpoint",
        env / "theta0.pt",
        "--params",
        json.dumps(_cell_params(hyperparameters=hp)),
        "--out",
        out,
        "--diverged-record",
        env / "d.json",
    )
    assert rc == 0, err
    return out


COMMAND_CASES = [
    (
        "prepared data file missing",
        lambda e, o: _run_cell(e, o, data_file=e / "nothere.npz"),
        "limiting-dynamics limiting-run: error: prepared data file {root}/nothere.npz does not exist; run the "
        "prepare_data rule first",
    ),
    (
        "prepared data file garbage",
        lambda e, o: (
            Path(e / "garbage.npz").write_bytes(b"not an npz file"),
            _run_cell(e, o, data_file=e / "garbage.npz"),
        )[1],
        "limiting-dynamics limiting-run: error: prepared data file {root}/garbage.npz is not a prepared data set (not "
        "an .npz archive); rerun the prepare_data rule",
    ),
    (
        "prepared data file cut short",
        lambda e, o: (
            Path(e / "short.npz").write_bytes((e / "digits.npz").read_bytes()[:3000]),
            _run_cell(e, o, data_file=e / "short.npz"),
        )[1],
        "limiting-dynamics limiting-run: error: prepared data file {root}/short.npz is damaged or truncated (...",
    ),
    (
        "start checkpoint missing",
        lambda e, o: _run_cell(e, o, start=e / "nostart.pt"),
        "limiting-dynamics limiting-run: error: checkpoint {root}/nostart.pt does not exist",
    ),
    (
        "weights file of another width",
        lambda e, o: _run_cell(
            e, o, start=_weights(e, "wide.pt", build_model({**MODEL, "width": 16}, 10, 1).state_dict())
        ),
        "limiting-dynamics limiting-run: error: weights in {root}/wide.pt do not fit the configured model "
        "(shape mismatch ['stem.0.weight: file (16, 1, 3, 3) vs model (8, 1, 3, 3)', "
        "'stem.1.weight: file (16,) vs model (8,)'])",
    ),
    (
        "weights of another architecture",
        lambda e, o: _run_cell(
            e, o, start=_weights(e, "r18.pt", build_model({"arch": "resnet18"}, 10, 1).state_dict())
        ),
        "limiting-dynamics limiting-run: error: weights in {root}/r18.pt do not fit the configured model (missing "
        "['stem.0.weight', 'stem.1.weight', 'stem.1.bias']; unexpected ['conv1.weight', 'bn1.weight', 'bn1.bias']; "
        "shape mismatch ['fc.weight: file (10, 512) vs model (10, 8)'])",
    ),
    (
        "weights for another number of classes",
        lambda e, o: _run_cell(e, o, start=_weights(e, "c1000.pt", build_model(MODEL, 1000, 1).state_dict())),
        "limiting-dynamics limiting-run: error: weights in {root}/c1000.pt end in a classifier for 1000 classes, "
        "but the data set has 10: they belong to another data set",
    ),
    (
        "weights file that is text",
        lambda e, o: (Path(e / "text.pt").write_text("hello"), _run_cell(e, o, start=e / "text.pt"))[1],
        "limiting-dynamics limiting-run: error: checkpoint {root}/text.pt is not a PyTorch checkpoint (neither this "
        "package's format nor a torch.save file)",
    ),
    (
        "truncated checkpoint",
        lambda e, o: (
            Path(e / "cut.pt").write_bytes((e / "burn.pt").read_bytes()[:5000]),
            _run_cell(e, o, start=e / "cut.pt"),
        )[1],
        "limiting-dynamics limiting-run: error: checkpoint {root}/cut.pt is truncated or damaged (its SHA-256 does not "
        "match the header; 4926 bytes after the header)",
    ),
    (
        "plain weights where a burn-in state is needed",
        lambda e, o: _run_cell(e, o, start=e / "theta0.pt"),
        "limiting-dynamics limiting-run: error: burn-in state of cell " + CELL + " is not a burn-in checkpoint (no "
        "'momentum_buffer')",
    ),
    (
        "burn-in state of another cell",
        lambda e, o: _run_cell(e, o, hyperparameters=_with_lr(0.04)),
        "limiting-dynamics limiting-run: error: burn-in state of cell " + CELL + " was written with hyperparameters "
        "{'lr': 0.05, 'batch_size': 32, 'momentum': 0.9, 'weight_decay': 0.005, 'seed': 0} and batches "
        "{'sampling': 'reshuffle', 'augment_shift': 1, 'label_noise': 0.0}; this run has {'lr': 0.04, "
        "'batch_size': 32, 'momentum': 0.9, 'weight_decay': 0.005, 'seed': 0} and "
        "{'sampling': 'reshuffle', 'augment_shift': 1, 'label_noise': 0.0}",
    ),
    (
        "cuda asked for without a GPU",
        lambda e, o: _run_cell(e, o, device="cuda"),
        "limiting-dynamics limiting-run: error: compute.device is 'cuda' but no CUDA GPU is visible to this job; ...",
    ),
    (
        "non-finite loss at the first step",
        lambda e, o: _run_cell(e, o, start=_nan_start(e)),
        "limiting-dynamics limiting-run: error: cell " + CELL + " diverged at step 1: train_loss=nan, "
        "sq_dist_from_start=nan, sq_velocity=nan, sq_param_norm=nan",
    ),
    (
        "divergence mid-run",
        lambda e, o: _run_cell(
            e, o, start=_burn_in(e, "lr1000", _with_lr(1000.0)), hyperparameters=_with_lr(1000.0), steps=50
        ),
        "limiting-dynamics limiting-run: error: cell " + CELL + " diverged at step 10: train_loss=...",
    ),
    (
        "a trajectory given as the Hessian file",
        lambda e, o: (
            _run_cell(e, o, phase_space={"modes": 2, "sketch_dim": 0, "sketch_seed": 0}) + ("--hessian", e / "traj.nc")
        ),
        "limiting-dynamics limiting-run: error: {root}/traj.nc: not a complete hessian result "
        "(missing hessian_eigenvalues, "
        "hessian_eigenvectors, slq_nodes, slq_weights, bn_mode, hessian_trace_hutchinson); rerun its rule "
        "(hessian)",
    ),
    (
        "trajectory of another format version",
        lambda e, o: _analyze(_trajectory_variant(e, "v2.nc", lambda d: d.assign_attrs(format_version=2)), o),
        "limiting-dynamics analyze-cell: error: {root}/v2.nc: format version 2 is not the supported version 5; "
        "re-export it",
    ),
    (
        "trajectory with a gap in its steps",
        lambda e, o: _analyze(_trajectory_variant(e, "gap.nc", lambda d: d.drop_sel(step=[7])), o),
        "limiting-dynamics analyze-cell: error: {root}/gap.nc: steps must run 1, 2, ..., N without gaps",
    ),
    (
        "trajectory with NaN",
        lambda e, o: _analyze(_trajectory_variant(e, "nan.nc", _poison), o),
        "limiting-dynamics analyze-cell: error: {root}/nan.nc: variable sq_step has non-finite values",
    ),
    (
        "trajectory that is not NetCDF",
        lambda e, o: (Path(e / "text.nc").write_text("hello"), _analyze(e / "text.nc", o))[1],
        "limiting-dynamics analyze-cell: error: {root}/text.nc: cannot be read as NetCDF (...",
    ),
]


def _poison(ds):
    ds["sq_step"].values[5] = np.nan
    return ds


def _assert_nothing_written(out: Path) -> None:
    left = sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(".json")) if out.parent.exists() else []
    assert left == [], f"files left behind: {left}"


def _unprivileged():
    """Run a child without the power to ignore file permissions, which root has:
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH leave the capability bounding set
    before the exec (prctl PR_CAPBSET_DROP), so the child obeys modes like anyone."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop():
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return drop


def _limited_file_size(limit: int):
    def setup():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return setup


def _stage(args, preexec) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "limiting_dynamics.cli", *map(str, args)],
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        cwd="/",
    )


@pytest.fixture
def shared(env, tmp_path):
    """A copy of the inputs whose modes the tests may change."""
    import shutil

    for name in ("record.npz", "digits.npz", "burn.pt", "theta0.pt"):
        shutil.copy(env / name, tmp_path / name)
    yield tmp_path
    for p in tmp_path.rglob("*"):
        p.chmod(0o755)


def test_target_of_a_cell_not_in_the_config_is_one_line(tmp_path):
    """The README's kind of target, for a cell the config does not list: a dry run
    stops with one line naming the cell and the configured ones (no KeyError)."""
    unknown = "lr0.05_bs64_mom0.9_wd0.005_seed0"
    proc = Workflow(tmp_path, copy.deepcopy(TINY)).run("-n", f"results/trajectories/{unknown}.nc", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out and "KeyError" not in out and "Exception" not in out
    lines = [line for line in out.splitlines() if unknown in line and "Command:" not in line]
    assert lines == [
        f"Unknown cell '{unknown}': it is not a cell of the config; configured cells: "
        "lr0.05_bs32_mom0.9_wd0.005_seed0, lr0.02_bs32_mom0.9_wd0.005_seed0, lr0.001_bs32_mom0.99_wd0.0005_seed0"
    ]


@pytest.mark.parametrize("name,make,message", COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
def test_bad_input_to_a_stage_is_one_line_and_leaves_no_output(env, tmp_path, name, make, message):
    out = tmp_path / "out" / "result.npz"
    rc, err = _cli(*make(env, out))
    expected = message.replace("{root}", str(env))
    line = err.strip()
    assert rc == EXIT_ERROR and "\n" not in line and "Traceback" not in err, err
    if expected.endswith("..."):  # the rest is a library's wording or a platform-dependent number
        assert line.startswith(expected[:-3]), line
    else:
        assert line == expected
    _assert_nothing_written(out)
    if "diverged" in expected:  # recorded as such, beside the missing output
        note = json.loads(out.with_suffix(".json").read_text())
        assert note["cell"] == CELL and "diverged at step" in note["error"]


def test_result_directory_without_write_permission(shared):
    ro = shared / "ro"
    ro.mkdir(mode=0o555)
    ro.chmod(0o555)
    proc = _stage(
        [
            "export-trajectory",
            "--raw",
            shared / "record.npz",
            "--params",
            json.dumps(_export_params()),
            "--out",
            ro / "traj.nc",
        ],
        _unprivileged(),
    )
    assert proc.returncode == EXIT_ERROR and "Traceback" not in proc.stderr, proc.stderr
    assert (
        proc.stderr.strip()
        == f"limiting-dynamics export-trajectory: error: cannot write {ro}/traj.nc: Permission denied"
    )
    assert list(ro.iterdir()) == []


def test_unreadable_data_file(shared):
    (shared / "digits.npz").chmod(0o000)
    out = shared / "out" / "record.npz"
    proc = _stage(_run_cell(shared, out), _unprivileged())
    assert proc.returncode == EXIT_ERROR and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == (
        f"limiting-dynamics limiting-run: error: prepared data file {shared}/digits.npz is unreadable "
        "(Permission denied)"
    )
    _assert_nothing_written(out)


@pytest.mark.parametrize("stage", ["export-trajectory", "burn-in"])
def test_disk_full_mid_write_leaves_nothing(env, tmp_path, stage):
    """A file size limit (RLIMIT_FSIZE) stands in for a full disk: the write fails part way."""
    if stage == "export-trajectory":
        out = tmp_path / "traj.nc"
        args = [
            "export-trajectory",
            "--raw",
            env / "record.npz",
            "--params",
            json.dumps(_export_params()),
            "--out",
            out,
        ]
    else:
        out = tmp_path / "burn.pt"
        args = [
            "burn-in",
            "--data",
            env / "digits.npz",
            "--checkpoint",
            env / "theta0.pt",
            "--params",
            json.dumps(_cell_params(burn_in_steps=2)),
            "--out",
            out,
            "--diverged-record",
            tmp_path / "d.json",
        ]
    proc = _stage(args, _limited_file_size(8192))
    assert proc.returncode == EXIT_ERROR and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"limiting-dynamics {stage}: error: writing {out} failed ("), line
    assert line.endswith("; check free disk space, quotas and file size limits; nothing was written")
    assert list(tmp_path.iterdir()) == []
