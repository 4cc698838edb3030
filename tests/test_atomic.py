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
    write_json({"a": 1}, target)
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
