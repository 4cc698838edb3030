"""Formatting and lint are part of the tests: ``ruff format`` and ``ruff check``
with the settings in pyproject.toml (line length 120)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    if exe is None:
        pytest.fail('ruff is not installed: pip install -e ".[test]"')
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_format():
    r = _ruff("format", "--check", "--diff", ".")
    assert r.returncode == 0, "files need `ruff format .`:\n" + r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_check():
    r = _ruff("check", "--output-format", "concise", ".")
    assert r.returncode == 0, "`ruff check .` found:\n" + r.stdout[-4000:] + r.stderr[-2000:]
