"""`limiting-dynamics --version`: the package, torch and its CUDA build, without loading torch."""

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _console_script() -> str:
    exe = Path(sys.executable).with_name("limiting-dynamics")
    found = str(exe) if exe.exists() else shutil.which("limiting-dynamics")
    if found is None:
        pytest.skip("the limiting-dynamics console script is not installed (pip install -e .)")
    return found


def test_version_prints_package_torch_and_cuda_build():
    import torch

    proc = subprocess.run([_console_script(), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"limiting-dynamics {importlib.metadata.version('limiting-dynamics')} ")
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    assert f"torch {torch.__version__}, {build}" in line
    assert "\n" not in line and proc.stderr == ""


def test_version_does_not_import_torch_or_the_stages():
    code = (
        "import sys\nfrom limiting_dynamics import cli\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "print(sorted(m for m in sys.modules if m in ('torch', 'torchvision') "
        "or m.startswith('limiting_dynamics.stages')), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("limiting-dynamics ") and proc.stderr.strip() == "[]"
