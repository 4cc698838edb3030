"""Where a stage computes: one GPU per concurrent job, and deterministic GPU kernels.

:func:`setup_device` is what a stage calls with its ``compute.device`` and
``compute.deterministic`` settings. On the CPU it is
:func:`.training.resolve_device` and nothing more. On CUDA it first makes the
GPU's arithmetic repeatable (:func:`apply_determinism`), then, where more than
one GPU is visible, claims one of them for the life of the process
(:func:`claim_gpu_slot`): concurrent jobs of one workstation each get their own
GPU instead of all landing on GPU 0. A job that the scheduler has pinned to one
GPU (SLURM sets ``CUDA_VISIBLE_DEVICES`` to the job's GPU) sees one device, and
nothing is claimed.

A slot is an exclusive, non-blocking ``fcntl.flock`` on a lock file per GPU in
a directory of the machine (``$LIMITING_DYNAMICS_GPU_LOCK_DIR``, else
``limiting-dynamics-gpu-slots`` in the temporary directory); the kernel drops
the lock when the process ends, however it ends, so no slot outlives its job.
When every GPU is taken the job waits, saying so in its log, and fails with a
message after ``$LIMITING_DYNAMICS_GPU_WAIT`` seconds (default one hour).

Torch-light: the slot claim uses the standard library only; torch is imported
inside the functions that need it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import LimitingDynamicsError

LOCK_DIR_ENV = "LIMITING_DYNAMICS_GPU_LOCK_DIR"
WAIT_ENV = "LIMITING_DYNAMICS_GPU_WAIT"
DEFAULT_WAIT_S = 3600.0
WAIT_REPORT_S = 600.0  # while waiting for a GPU, a log line at the start and then every this many seconds
CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS's deterministic workspace setting (":16:8" is the other, slower one)
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")

_held: dict = {}  # the slot this process holds: {"dir", "index", "fd"}; the open descriptor keeps the lock


class GpuSlotsBusy(LimitingDynamicsError, RuntimeError):
    """Every visible GPU stayed claimed by another job for longer than the wait allowed."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_lock_dir() -> Path:
    """``$LIMITING_DYNAMICS_GPU_LOCK_DIR``, else ``limiting-dynamics-gpu-slots`` in
    the temporary directory: local to the machine, like its GPUs."""
    env = os.environ.get(LOCK_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "limiting-dynamics-gpu-slots"


def slot_names(count: int, visible: str | None = None) -> list[str]:
    """One lock name per visible GPU: its entry of ``CUDA_VISIBLE_DEVICES``
    (``visible``; a physical index or a UUID) where that lists them, else its
    index, so that jobs that see different subsets of the GPUs still lock the
    same GPU under the same name."""
    entries = [e.strip() for e in (visible or "").split(",") if e.strip()]
    keys = entries[:count] if len(entries) >= count else [str(i) for i in range(count)]
    return ["gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", k) for k in keys]


def _open_lock(path: Path) -> int:
    """A descriptor of the lock file, created if missing. Opened read-only:
    ``flock`` needs no write access, so jobs of other users can share the files."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            os.fchmod(fd, 0o666)  # past the umask: every user's jobs may open it
        except OSError:
            pass
        return fd


def _try_lock(path: Path) -> int | None:
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _prepare_dir(lock_dir: Path) -> None:
    if lock_dir.is_dir():
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)  # shared by every user's jobs, like /tmp
    except OSError:
        pass


def claim_gpu_slot(
    count: int,
    lock_dir: str | Path | None = None,
    *,
    names: Sequence[str] | None = None,
    timeout: float | None = None,
    poll: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> int:
    """Claim one of ``count`` GPUs for the life of this process and return its index.

    Each GPU is an exclusive non-blocking ``flock`` on ``<lock_dir>/<name>.lock``
    (``names`` from :func:`slot_names`); the first free one is taken. While all
    are taken, the claim retries every ``poll`` seconds and logs that it waits;
    after ``timeout`` seconds (``$LIMITING_DYNAMICS_GPU_WAIT``, default one hour)
    it raises :class:`GpuSlotsBusy`. A second claim in the same process returns
    the slot it already holds. ``count`` is what ``torch.cuda.device_count()``
    says (passed in, so the claim can be tested without GPUs)."""
    if count < 1:
        raise ValueError(f"no GPU to claim among {count}")
    log = log or _log
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    if _held and _held["dir"] == lock_dir:
        return _held["index"]
    if names is None:
        names = slot_names(count, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if len(names) != count:
        raise ValueError(f"{len(names)} lock names for {count} GPUs")
    if timeout is None:
        timeout = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
    _prepare_dir(lock_dir)
    start = time.monotonic()
    reported = None
    while True:
        for index, name in enumerate(names):
            fd = _try_lock(lock_dir / f"{name}.lock")
            if fd is not None:
                release_gpu_slot()
                _held.update(dir=lock_dir, index=index, fd=fd)
                if reported is not None:
                    log(f"GPU {index} became free after {time.monotonic() - start:.0f} s")
                return index
        waited = time.monotonic() - start
        if waited >= timeout:
            raise GpuSlotsBusy(
                f"all {count} visible GPUs stayed claimed by other jobs for {waited:.0f} s (locks in {lock_dir}); "
                "run at most one GPU job per GPU (snakemake --resources gpu=N with compute.device: cuda, "
                f"N the number of GPUs), or wait longer: {WAIT_ENV}=<seconds>"
            )
        if reported is None or waited - reported >= WAIT_REPORT_S:
            reported = waited
            log(
                f"waiting for a free GPU: all {count} visible GPUs are claimed by other jobs (locks in {lock_dir}); "
                f"giving up after {timeout:.0f} s"
            )
        time.sleep(max(0.0, min(poll, timeout - waited)))


def release_gpu_slot() -> None:
    """Give back the slot this process holds (the end of the process does the same)."""
    if _held:
        os.close(_held["fd"])
        _held.clear()


def apply_determinism(enabled: bool, device) -> bool:
    """With ``enabled`` and a CUDA ``device``: ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
    (kept if already one of cuBLAS's two deterministic settings; it must be set
    before the first cuBLAS call), ``torch.use_deterministic_algorithms(True)``,
    and cuDNN deterministic without autotuning (``benchmark`` off). An operation
    with no deterministic CUDA kernel runs anyway, with a warning in the job's log
    that names it (``warn_only``: a run is never stopped for it, but its last bits
    may then differ between reruns). On the CPU nothing changes. Returns whether
    the settings were applied."""
    if not enabled or str(device).split(":")[0] != "cuda":
        return False
    import torch

    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in CUBLAS_DETERMINISTIC:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return True


def setup_device(
    name: str,
    deterministic: bool = True,
    *,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
):
    """The ``torch.device`` a stage computes on (``compute.device``: ``auto``,
    ``cpu`` or ``cuda``; :func:`.training.resolve_device`). On CUDA: the
    determinism settings of ``compute.deterministic`` (:func:`apply_determinism`)
    and, with more than one GPU visible, a GPU of its own, ``cuda:<i>``
    (:func:`claim_gpu_slot`; also made torch's current device)."""
    import torch

    from .training import resolve_device

    log = log or _log
    device = resolve_device(name)
    if device.type != "cuda":
        return device
    apply_determinism(deterministic, device)
    count = torch.cuda.device_count()
    if device.index is None and count > 1:
        index = claim_gpu_slot(count, lock_dir, timeout=timeout, log=log)
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        log(f"computing on GPU {index} of {count} visible (claimed for this job)")
    return device
