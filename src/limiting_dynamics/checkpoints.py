"""Checkpoints: written atomically with a SHA-256 of their contents, read with
``weights_only=True`` (no pickled code runs on load).

File layout (format 2): one header line ``LDCKPT <format> <sha256 hex>`` and
then the bytes of ``torch.save``. A truncated or damaged file fails the
checksum and is reported with its name. Files without the header (plain
``torch.save`` files such as torchvision weights saved locally, and this
package's format 1) are read as they are.

:class:`ResumeStore` keeps the checkpoints of one long job (convergence, a
burn-in, a limiting run) as a rotating pair, newest and previous, tied to the
job's settings: a damaged newest file falls back to the previous one, and a
checkpoint written under other settings is an error, never a silent mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import CheckpointError, Interrupted
from .provenance import plain_dicts

FORMAT_VERSION = 2
MAGIC = b"LDCKPT"


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Write ``obj`` (tensors, numbers, strings, lists, dicts) atomically with its checksum."""
    buf = io.BytesIO()
    torch.save(plain_dicts({**obj, "format_version": FORMAT_VERSION}), buf)
    payload = buf.getbuffer()
    header = MAGIC + f" {FORMAT_VERSION} {hashlib.sha256(payload).hexdigest()}\n".encode()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())


def _header_sha256(head: bytes) -> str | None:
    """The SHA-256 in a complete ``LDCKPT <format> <sha256>`` header line, else ``None``."""
    parts = head.split()
    if head.startswith(MAGIC) and head.endswith(b"\n") and len(parts) == 3:
        return parts[2].decode("ascii", "replace")
    return None


def _payload(path: Path) -> io.BytesIO:
    try:
        with open(path, "rb") as fh:
            head = fh.readline(128)
            if not head.startswith(MAGIC):
                if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip format, or its legacy pickle
                    raise CheckpointError(
                        f"checkpoint {path} is not a PyTorch checkpoint (neither this package's "
                        f"format nor a torch.save file)"
                    )
                fh.seek(0)
            payload = fh.read()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from exc
    if not head.startswith(MAGIC):
        return io.BytesIO(payload)
    expected = _header_sha256(head)
    if expected is None:
        raise CheckpointError(f"checkpoint {path} is truncated or damaged (incomplete header)")
    if hashlib.sha256(payload).hexdigest() != expected:
        raise CheckpointError(
            f"checkpoint {path} is truncated or damaged (its SHA-256 does not match the "
            f"header; {len(payload)} bytes after the header)"
        )
    return io.BytesIO(payload)


def read_checkpoint(path: str | Path) -> dict:
    """The dict in a checkpoint file, loaded without executing pickled code,
    after checking its SHA-256 (files this package wrote)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    source = _payload(path)
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def snapshots_at(path: str | Path, purpose: str) -> list[tuple[int, dict]]:
    """``(step, state_dict)`` for each step a limiting run's snapshot file
    (``limiting-run --out-snapshots``) lists under ``purpose``
    (``"noise_steps"`` or ``"drift_steps"``), in increasing step order."""
    snap = read_checkpoint(path)
    if purpose not in snap:
        raise CheckpointError(f"snapshot file {path} lists no {purpose}: rerun its limiting run")
    kept = dict(zip(snap["steps"], snap["models"]))
    missing = [k for k in snap[purpose] if k not in kept]
    if missing:
        raise CheckpointError(f"snapshot file {path} lists {purpose} {missing} without their weights")
    return [(int(k), kept[k]) for k in sorted(snap[purpose])]


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint with weights: this package's (a dict with ``model``) or a
    bare ``state_dict`` (e.g. torchvision weights saved locally), returned as
    ``{"model": state_dict, ...}``."""
    obj = read_checkpoint(path)
    if "model" not in obj:
        obj = {"model": obj}
    return obj


def load_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load weights strictly; a mismatch names the first differing tensors."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad = [k for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}" for k in bad]
    last = list(own)[-1].rsplit(".", 1)[0]  # the final layer (the classifier of these models)
    weight = f"{last}.weight"
    if shapes and not missing and not unexpected and weight in own and set(bad) <= {weight, f"{last}.bias"}:
        raise CheckpointError(
            f"weights in {source} end in a classifier for {state_dict[weight].shape[0]} classes, "
            f"but the data set has {own[weight].shape[0]}: they belong to another data set"
        )
    if missing or unexpected or shapes:
        detail = "; ".join(
            filter(
                None,
                [
                    f"missing {missing[:3]}" if missing else "",
                    f"unexpected {unexpected[:3]}" if unexpected else "",
                    f"shape mismatch {shapes[:2]}" if shapes else "",
                ],
            )
        )
        raise CheckpointError(f"weights in {source} do not fit the configured model ({detail})")
    model.load_state_dict(state_dict, strict=True)


WHOLE_UP_TO, EDGE = 1 << 29, 1 << 26


def file_identity(path: str | Path) -> str:
    """SHA-256 of a file's contents (files up to 512 MB), or, for larger ones
    (packed image stores), of its size and its first and last 64 MB. A
    checkpoint of this package is identified by the SHA-256 in its header,
    which loading it has checked (no second pass over the file)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        sha = _header_sha256(fh.readline(128))
        if sha is not None:
            return f"ldckpt:{sha}"
        fh.seek(0)
        if size <= WHOLE_UP_TO:
            while block := fh.read(1 << 20):
                h.update(block)
            return h.hexdigest()
        h.update(str(size).encode())
        h.update(fh.read(EDGE))
        fh.seek(size - EDGE)
        h.update(fh.read(EDGE))
    return f"size+edges:{h.hexdigest()}"


class ResumeStore:
    """The checkpoints of one long job: ``path`` (newest) and ``<stem>.prev<suffix>``.

    ``settings`` (JSON-able) describe what the job computes: hyperparameters,
    steps, the hashes of its input files, the device and thread count. Every
    checkpoint carries them; :meth:`load` refuses one written under other
    settings (naming the keys that differ). A new checkpoint is written beside
    the newest (``<stem>.new<suffix>``, atomically) and then rotated in, so at
    any moment at least one complete checkpoint exists once one was written.
    """

    def __init__(self, path: str | Path, settings: dict, log: Callable[[str], None] = print):
        self.path = Path(path)
        self.new = self.path.with_name(f"{self.path.stem}.new{self.path.suffix}")
        self.prev = self.path.with_name(f"{self.path.stem}.prev{self.path.suffix}")
        self.settings = json.loads(json.dumps(settings, sort_keys=True))
        self.log = log

    def files(self) -> list[Path]:
        """Existing checkpoint files, newest first."""
        return [p for p in (self.new, self.path, self.prev) if p.exists()]

    def save(self, state: dict) -> None:
        save_checkpoint({**state, "settings": json.dumps(self.settings, sort_keys=True)}, self.new)
        if self.path.exists():
            os.replace(self.path, self.prev)
        os.replace(self.new, self.path)

    def load(self) -> dict | None:
        """The newest checkpoint that loads and passes its checksum, or ``None``
        when there is none. Damaged files are reported and skipped; if every
        existing file is damaged, or the newest good one belongs to other
        settings, :class:`CheckpointError` says which file and what to do."""
        problems = []
        for path in self.files():
            try:
                state = read_checkpoint(path)
            except CheckpointError as exc:
                problems.append(str(exc))
                self.log(f"warning: {exc}; trying the previous checkpoint")
                continue
            self._check_settings(state, path)
            return state
        if problems:
            raise CheckpointError(
                "no usable checkpoint to resume from ("
                + "; ".join(problems)
                + "); delete "
                + ", ".join(str(p) for p in self.files())
                + " to start this job over"
            )
        return None

    def _check_settings(self, state: dict, path: Path) -> None:
        try:
            theirs = json.loads(state.get("settings", "null"))
        except (TypeError, ValueError):
            theirs = None
        if not isinstance(theirs, dict):
            raise CheckpointError(
                f"checkpoint {path} records no settings, so it cannot be matched to this job; delete it to start over"
            )
        if theirs != self.settings:
            keys = sorted(k for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
            raise CheckpointError(
                f"checkpoint {path} was written under other settings (differing: {', '.join(keys)}); resuming "
                f"would mix two runs. Restore those settings, or delete {path} and {self.prev.name} to start over"
            )

    def clear(self) -> None:
        for path in (self.new, self.path, self.prev):
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)) -> Iterator[Callable[[], int | None]]:
    """Within the block, SIGTERM (what SLURM sends before a time limit or
    pre-emption) and SIGINT only set a flag; the yielded function returns the
    signal number once one arrived (else ``None``). Long loops poll it every
    step and stop at the next step boundary with a checkpoint (:class:`Checkpointer`).
    The previous handlers are restored on exit."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)

    old = {s: signal.signal(s, handler) for s in signums}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Checkpointer:
    """When a long loop writes its checkpoint (to a :class:`.checkpoints.ResumeStore`):
    every ``every`` units (steps or epochs; 0 = not on a schedule) and as soon as
    ``stop()`` reports a signal, after which it raises :class:`Interrupted`.
    Without a store a signal still stops the loop (with nothing to resume from)."""

    def __init__(
        self,
        store: ResumeStore | None = None,
        every: int = 0,
        stop: Callable[[], int | None] | None = None,
        log: Callable[[str], None] = print,
    ):
        self.store, self.every, self.stop, self.log = store, max(0, int(every)), stop, log

    def resume(self) -> dict | None:
        """The newest usable checkpoint, or ``None`` (start from the beginning)."""
        return self.store.load() if self.store is not None else None

    def _signal(self) -> int | None:
        return self.stop() if self.stop is not None else None

    def __call__(self, done: int, what: str, state: Callable[[], dict]) -> None:
        """After ``done`` units of the loop (``what`` names them for the log):
        a checkpoint if the schedule or a signal asks for one."""
        signum = self._signal()
        if signum is not None or (self.every and done % self.every == 0):
            self._save(done, what, state, signum)

    def save(self, done: int, what: str, state: Callable[[], dict]) -> None:
        """A checkpoint now (e.g. a finished part of a job), then stop if a signal arrived."""
        self._save(done, what, state, self._signal())

    def _save(self, done: int, what: str, state: Callable[[], dict], signum: int | None) -> None:
        if self.store is not None:
            self.store.save(state())
            self.log(f"checkpoint after {done} {what} -> {self.store.path}")
        if signum is not None:
            where = (
                f"checkpoint {self.store.path} written; rerun the same command to continue"
                if self.store is not None
                else "no checkpoint was asked for"
            )
            raise Interrupted(f"stopped by {signal.Signals(signum).name} after {done} {what}; {where}")

    def interrupt_if_signalled(self, where: str) -> None:
        """Stop at once, without a new checkpoint, if a signal arrived (for parts
        too long to finish within a scheduler's grace period; the newest
        checkpoint holds what was finished before)."""
        signum = self._signal()
        if signum is not None:
            kept = (
                f"checkpoint {self.store.path} keeps the parts finished before; rerun the same command to continue"
                if self.store is not None and self.store.files()
                else "nothing to resume from"
            )
            raise Interrupted(f"stopped by {signal.Signals(signum).name} {where}; {kept}")

    def finish(self) -> None:
        """The job completed: its checkpoints are no longer needed."""
        if self.store is not None:
            self.store.clear()
