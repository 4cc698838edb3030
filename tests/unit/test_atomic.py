"""Atomic writes: complete or absent."""

import json

import numpy as np
import pytest

from limiting_dynamics.atomic import atomic_path, write_json


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
