"""A Snakemake run stopped by SIGTERM and then SIGKILL resumes bit-identically."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import time

import numpy as np
import pytest
import xarray as xr
from conftest import TINY, Workflow

DEFAULT = "lr0.05_bs32_mom0.9_wd0.005_seed0"


def _run_cell_pid(cell: str, root) -> int | None:
    """The Python process of ``limiting-dynamics limiting-run`` for ``cell`` (not its shell)
    working in ``root``: other tests running at the same time (pytest-xdist) run the
    same cell in their own directories, and must not be signalled."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if b"limiting-run" in args and any(cell.encode() in a for a in args) and os.path.samefile(cwd, root):
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
    wf.root, wf.env = tmp_path / "cut", {}
    for done in (target, f"results/runs/{DEFAULT}/record.npz"):
        wf.path(done).unlink()
    resume = wf.path(f"results/runs/{DEFAULT}/resume.pt")
    record = wf.path(f"results/runs/{DEFAULT}/record.npz")
    log = wf.path(f"results/logs/limiting_run/{DEFAULT}.log")

    proc = wf.start(target)
    _wait_for(resume.exists, proc, "the first checkpoint")
    os.kill(_run_cell_pid(DEFAULT, wf.root), signal.SIGTERM)
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
    os.kill(_run_cell_pid(DEFAULT, wf.root), signal.SIGKILL)
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
