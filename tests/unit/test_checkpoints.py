"""Checkpoint files: round trips, damage detected by name, plain torch files, no pickled code,
and the resume store of long jobs."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from limiting_dynamics.checkpoints import (
    CheckpointError,
    ResumeStore,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    stop_on_signals,
)
from limiting_dynamics.models import build_model


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    cfg = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}
    m = build_model(cfg, 10, 1)
    path = tmp_path / "ck.pt"
    save_checkpoint({"model": m.state_dict()}, path)
    m2 = build_model(cfg, 10, 1)
    load_weights(m2, load_checkpoint(path)["model"], str(path))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    wider = build_model({**cfg, "width": 8}, 10, 1)
    with pytest.raises(CheckpointError, match="do not fit the configured model.*shape mismatch"):
        load_weights(wider, load_checkpoint(path)["model"], str(path))
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="trunc.pt is truncated or damaged"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save(m.state_dict(), tmp_path / "plain.pt")  # a plain torch.save file, cut short: no checksum to
    (tmp_path / "cut.pt").write_bytes((tmp_path / "plain.pt").read_bytes()[:100])  # check, but it cannot load
    with pytest.raises(CheckpointError, match="cut.pt cannot be loaded safely"):
        load_checkpoint(tmp_path / "cut.pt")


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


def test_stop_on_signals_sets_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert stop() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
