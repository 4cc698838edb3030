"""Checkpoints that detect damage, and long jobs that resume bit for bit."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import time

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import TINY, Workflow

from limiting_dynamics.checkpoints import (
    Checkpointer,
    CheckpointError,
    ResumeStore,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    stop_on_signals,
)
from limiting_dynamics.errors import Interrupted
from limiting_dynamics.models import build_model
from limiting_dynamics.training import Hyperparameters, burn_in, limiting_run, pretrain

MODEL = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}
CPU = torch.device("cpu")
QUIET = {"log": lambda s: None}
DEFAULT = "lr0.05_bs32_mom0.9_wd0.005_seed0"


# ---------------------------------------------------------------- checkpoint files


def test_checkpoint_round_trip_and_damage_is_detected_by_name(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.arange(1000.0)}, "step": 7}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(1000.0))
    raw = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.pt is truncated or damaged"):
        load_checkpoint(tmp_path / "trunc.pt")
    flipped = bytearray(raw)
    flipped[-100] ^= 0x01
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"flip\.pt is truncated or damaged.*SHA-256"):
        load_checkpoint(tmp_path / "flip.pt")
    (tmp_path / "head.pt").write_bytes(raw[:20])
    with pytest.raises(CheckpointError, match="incomplete header"):
        load_checkpoint(tmp_path / "head.pt")


def test_plain_torch_files_still_load_and_pickled_code_does_not(tmp_path):
    torch.save({"fc.weight": torch.ones(2, 2)}, tmp_path / "plain.pt")  # e.g. torchvision weights saved locally
    assert torch.equal(load_checkpoint(tmp_path / "plain.pt")["model"]["fc.weight"], torch.ones(2, 2))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "evil.pt")


def test_resume_store_rotates_falls_back_and_refuses_other_settings(tmp_path):
    logs = []
    store = ResumeStore(tmp_path / "resume.pt", {"lr": 0.1, "steps": 10}, log=logs.append)
    assert store.load() is None
    store.save({"step": 1})
    store.save({"step": 2})
    assert store.load()["step"] == 2 and store.prev.exists() and not store.new.exists()
    # the newest is damaged: the previous one is used, and the damage is reported with the file name
    store.path.write_bytes(store.path.read_bytes()[:-10])
    assert store.load()["step"] == 1
    assert any("resume.pt is truncated or damaged" in m for m in logs)
    # every file damaged: an error that names them, never a silent restart from scratch
    store.prev.write_bytes(b"LDCKPT 2 00\n")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*delete .*resume\.pt"):
        store.load()
    # a crash between writing the new file and rotating it in leaves .new: it is the newest
    store.clear()
    store.save({"step": 3})
    save_checkpoint({"step": 4, "settings": '{"lr": 0.1, "steps": 10}'}, store.new)
    assert store.load()["step"] == 4
    other = ResumeStore(tmp_path / "resume.pt", {"lr": 0.2, "steps": 10}, log=logs.append)
    with pytest.raises(CheckpointError, match=r"other settings \(differing: lr\)"):
        other.load()
    store.clear()
    assert store.files() == []


# ---------------------------------------------------------------- interrupted loops


class StopAt:
    """A stop flag that reports SIGTERM once the loop has called it ``n`` times."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self):
        self.calls += 1
        return signal.SIGTERM if self.calls >= self.n else None


def _limiting(digits, checkpointer=None):
    """50 recorded steps with phase space (3 directions, an 8-number sketch)."""
    torch.manual_seed(0)
    model = build_model(MODEL, 10, 1)
    n = sum(p.numel() for p in model.parameters())
    directions = torch.linalg.qr(torch.randn(n, 3, generator=torch.Generator().manual_seed(5)))[0].T.contiguous()
    return limiting_run(
        model,
        digits,
        Hyperparameters(0.05, 32, 0.9, 5e-3, 1),
        steps=50,
        burn_in=7,
        eval_every=20,
        sampling="reshuffle",
        augment_shift=1,
        device=CPU,
        directions=directions,
        sketch_dim=8,
        tensor_every=3,
        cell="c",
        checkpointer=checkpointer,
        **QUIET,
    )


def _assert_same_record(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def test_limiting_run_stopped_twice_and_resumed_is_bit_identical(digits, tmp_path):
    whole = _limiting(digits)
    store = ResumeStore(tmp_path / "resume.pt", {"cell": "c"}, **QUIET)
    # stopped by a signal at step 13 (no scheduled checkpoint before), then at step 31 (after one at 20)
    with pytest.raises(Interrupted, match="stopped by SIGTERM after 13 steps"):
        _limiting(digits, Checkpointer(store, every=20, stop=StopAt(13), **QUIET))
    assert read_checkpoint(store.path)["recorder"]["count"] == 13
    with pytest.raises(Interrupted, match="after 31 steps"):
        _limiting(digits, Checkpointer(store, every=20, stop=StopAt(18), **QUIET))
    resumed = _limiting(digits, Checkpointer(store, every=20, **QUIET))
    _assert_same_record(whole, resumed)


def test_limiting_run_resumes_from_the_previous_checkpoint_when_the_last_is_damaged(digits, tmp_path):
    whole = _limiting(digits)
    store = ResumeStore(tmp_path / "resume.pt", {"cell": "c"}, **QUIET)
    with pytest.raises(Interrupted):
        _limiting(digits, Checkpointer(store, every=10, stop=StopAt(35), **QUIET))
    store.path.write_bytes(store.path.read_bytes()[:1000])  # the step-35 checkpoint, truncated
    assert read_checkpoint(store.prev)["recorder"]["count"] == 30
    _assert_same_record(whole, _limiting(digits, Checkpointer(store, every=10, **QUIET)))


def test_burn_in_stopped_and_resumed_is_bit_identical(digits, tmp_path):
    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 2)

    def run(checkpointer=None):
        torch.manual_seed(0)
        return burn_in(
            build_model(MODEL, 10, 1),
            digits,
            hp,
            steps=40,
            sampling="replacement",
            device=CPU,
            augment_shift=1,
            checkpointer=checkpointer,
            **QUIET,
        )

    whole = run()
    store = ResumeStore(tmp_path / "burn.pt", {"cell": "c"}, **QUIET)
    with pytest.raises(Interrupted, match="after 17 burn-in steps"):
        run(Checkpointer(store, every=0, stop=StopAt(17), **QUIET))
    resumed = run(Checkpointer(store, every=0, **QUIET))
    assert resumed["burn_in_loss"] == whole["burn_in_loss"]
    for k, v in whole["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert torch.equal(whole["momentum_buffer"], resumed["momentum_buffer"])


def test_pretraining_stopped_and_resumed_is_bit_identical(digits, tmp_path):
    cfg = {
        "epochs": 3,
        "lr": 0.1,
        "batch_size": 128,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "sampling": "reshuffle",
        "augment_shift": 1,
        "seed": 4,
    }

    def run(checkpointer=None):
        torch.manual_seed(4)
        model = build_model(MODEL, 10, 1)
        return model, pretrain(model, digits, cfg, CPU, checkpointer=checkpointer, **QUIET)

    whole_model, whole = run()
    store = ResumeStore(tmp_path / "conv.pt", {"converge": 1}, **QUIET)
    with pytest.raises(Interrupted, match="after 1 epochs"):
        run(Checkpointer(store, every=0, stop=StopAt(1), **QUIET))
    model, history = run(Checkpointer(store, every=1, **QUIET))
    assert history == whole
    for k, v in whole_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_stop_on_signals_sets_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert stop() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------- a real Snakemake run, killed


def _run_cell_pid(cell: str) -> int | None:
    """The Python process of ``limiting-dynamics run-cell`` for ``cell`` (not its shell)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"run-cell" in args and any(cell.encode() in a for a in args):
            return int(entry)
    return None


def _wait_for(condition, proc, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended before {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.integration
def test_snakemake_run_stopped_by_sigterm_then_sigkill_resumes_bit_identically(tmp_path):
    """SIGTERM (what SLURM sends) at the first checkpoint, SIGKILL after the next
    one, each time rerunning the same command: the trajectory equals that of an
    uninterrupted run in every variable and attribute but the time stamp."""
    cfg = copy.deepcopy(TINY)
    cfg["limiting"].update(steps=1500, eval_every=500)
    cfg["compute"]["checkpoint_steps"] = 100
    target = f"results/trajectories/{DEFAULT}.nc"
    (tmp_path / "ref").mkdir()
    ref = Workflow(tmp_path / "ref", cfg)
    ref.run(target)
    # the interrupted copy shares everything upstream of the limiting run (same files, same metadata)
    shutil.copytree(tmp_path / "ref", tmp_path / "cut", symlinks=True)
    wf = Workflow.__new__(Workflow)
    wf.root = tmp_path / "cut"
    for done in (target, f"results/runs/{DEFAULT}/record.npz"):
        wf.path(done).unlink()
    resume = wf.path(f"results/runs/{DEFAULT}/resume.pt")
    record = wf.path(f"results/runs/{DEFAULT}/record.npz")
    log = wf.path(f"results/logs/limiting_run/{DEFAULT}.log")

    proc = wf.start(target)
    _wait_for(resume.exists, proc, "the first checkpoint")
    os.kill(_run_cell_pid(DEFAULT), signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "exit status 75" in out, out
    assert "interrupted: stopped by SIGTERM after" in log.read_text()
    assert resume.exists() and not record.exists() and not wf.path(target).exists()

    first = resume.stat().st_mtime_ns

    def newer_checkpoint() -> bool:  # resume.pt is briefly absent while a new one is rotated in
        try:
            return resume.stat().st_mtime_ns != first
        except FileNotFoundError:
            return False

    proc = wf.start(target)
    _wait_for(newer_checkpoint, proc, "a checkpoint after resuming")
    os.kill(_run_cell_pid(DEFAULT), signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0 and not record.exists() and not wf.path(target).exists()

    last = wf.run(target)
    assert "resuming after step" in log.read_text()
    assert "rule hessian" not in last.stdout + last.stderr  # only the limiting run and its export ran again
    assert not resume.exists() and not resume.with_name("resume.prev.pt").exists()
    a, b = xr.load_dataset(ref.path(target)), xr.load_dataset(wf.path(target))
    assert set(a.variables) == set(b.variables) and a.sizes == b.sizes
    for name in a.variables:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        assert a[name].attrs == b[name].attrs, name
    assert {k: v for k, v in a.attrs.items() if k != "history"} == {k: v for k, v in b.attrs.items() if k != "history"}


def test_hessian_stopped_in_each_part_and_resumed_gives_the_same_numbers(digits, tmp_path):
    """Stopped during the Lanczos run (nothing to keep yet), during the second
    SLQ probe, and among the Hutchinson probes: the resumed result equals an
    uninterrupted one in every number, the count of products included."""
    from limiting_dynamics import hessian

    torch.manual_seed(0)
    model = build_model(MODEL, 10, 1)
    batches = hessian.fixed_batches(digits.x_train, digits.y_train, 64, 32, seed=0)
    cfg = {
        "bn_mode": "train",
        "precision": "float32",
        "top_k": 3,
        "tol": 1e-2,
        "max_iter": 20,
        "slq_vectors": 3,
        "slq_iterations": 6,
        "hutchinson_samples": 5,
        "reuse_graph": False,
        "seed": 0,
    }

    calls, marks = [], {}

    def counting():
        calls.append(1)

    def log(msg):
        for part in ("(the Lanczos run)", "(SLQ probe 1)"):
            if part in msg:
                marks[part] = len(calls)

    def run(stop, name="h.pt", log=lambda s: None):
        store = ResumeStore(tmp_path / name, {"cell": "c"}, **QUIET)
        return hessian.analyze(
            model, batches, cfg, CPU, log=lambda s: None, checkpointer=Checkpointer(store, every=0, stop=stop, log=log)
        ), store

    whole, _ = run(counting, "ref.pt", log)
    with pytest.raises(Interrupted, match="during the Hessian .* nothing to resume from"):
        run(StopAt(marks["(the Lanczos run)"] - 2))
    with pytest.raises(Interrupted, match="during the Hessian .* keeps the parts finished before"):
        run(StopAt(marks["(SLQ probe 1)"] + 3))
    assert read_checkpoint(tmp_path / "h.pt")["parts_done"] == "SLQ probe 1"
    # resumed: SLQ probes 2 and 3 (6 products and a checkpoint each), then Hutchinson probe 1 and its check
    with pytest.raises(Interrupted, match="after 1 Hutchinson probes"):
        run(StopAt(2 * 7 + 2))
    resumed, store = run(None)
    assert resumed.attrs == whole.attrs
    for name in whole.variables:
        np.testing.assert_array_equal(resumed[name].values, whole[name].values, err_msg=name)
