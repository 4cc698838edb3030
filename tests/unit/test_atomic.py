"""Atomic writes: complete or absent."""

import json
import os
import stat

import numpy as np
import pytest

from limiting_dynamics.atomic import atomic_path, write_json, write_netcdf


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_successful_write_replaces_atomically(tmp_path):
    target = tmp_path / "sub" / "out.json"
    target.parent.mkdir()
    target.write_text("old")
    obj = {"a": 1, "b": [1.5, "x"], "c": np.float32(0.25), "d": np.arange(3)}
    write_json(obj, target)
    assert json.loads(target.read_text()) == {"a": 1, "b": [1.5, "x"], "c": 0.25, "d": [0, 1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    """Run the test under a umask and give it back afterwards (the umask is per process)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _plain(path):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"data")


def _netcdf(path):
    import xarray as xr

    write_netcdf(xr.Dataset({"x": ("step", np.arange(3.0))}), path)


def _checkpoint(path):
    import torch

    from limiting_dynamics.checkpoints import save_checkpoint

    save_checkpoint({"w": torch.zeros(2)}, path)


WRITERS = {"out.json": lambda p: write_json({"a": 1}, p), "out.nc": _netcdf, "out.bin": _plain, "state.pt": _checkpoint}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_files_get_the_permissions_the_umask_gives(tmp_path, umask, name):
    target = tmp_path / name
    WRITERS[name](target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask == (0o644 if umask == 0o022 else 0o600)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_replacing_a_private_file_gives_the_umask_permissions(tmp_path, umask):
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o600)
    write_json({"a": 1}, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_temporary_names_do_not_collide(tmp_path):
    names = set()
    for _ in range(50):
        with atomic_path(tmp_path / "out.txt") as tmp:
            names.add(tmp.name)
            assert tmp.exists() and tmp.parent == tmp_path and tmp.name.startswith(".out.txt.")
            tmp.write_text("x")
    assert len(names) == 50 and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
