"""What the stages share: logging, torch threads, the settings of a stage
(``--params``), theta_0 with its data, checkpoints of long stages, and the
record left by a diverging run."""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path

from ..atomic import write_json


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


PARAMS_READ_ENV = "LIMITING_DYNAMICS_PARAMS_READ"  # a directory: every stage records the settings it read there


def _leaves(params: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every setting in ``params`` (a list is one setting)."""
    out = []
    for key, value in dict.items(params):
        path = f"{prefix}{key}"
        out += _leaves(value, f"{path}.") if isinstance(value, dict) else [path]
    return out


class Params(dict):
    """A stage's settings. A key that is missing stops the stage with one line
    naming it: the code keeps no defaults of its own for what the config sets,
    so ``--params`` written by hand must be complete (Snakemake writes them from
    the validated config).

    With ``LIMITING_DYNAMICS_PARAMS_READ`` set, the stage records which
    settings it read (by key, by ``in``, or by iterating a section: every
    setting under it) and writes them with those it was given when it exits, so
    a test can check that every rule is given exactly what its command reads
    (tests/integration/test_workflow.py). Serialising the settings for a hash
    or a checkpoint goes through ``dict.items`` and is not a read."""

    _path = ""  # this section's dotted path in the stage's settings
    _reads: set | None = None  # shared by every section while recording

    def _record(self, reads: set, path: str = "") -> None:
        self._reads, self._path = reads, path
        for key, value in dict.items(self):
            if isinstance(value, Params):
                value._record(reads, f"{path}{key}.")

    def _read_all(self) -> None:
        if self._reads is not None:
            self._reads.update(_leaves(self, self._path))

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if self._reads is not None and not isinstance(value, Params):
            self._reads.add(f"{self._path}{key}")
        return value

    def __contains__(self, key) -> bool:
        if self._reads is not None:
            self._reads.add(f"{self._path}{key}")
        return super().__contains__(key)

    def __iter__(self):
        self._read_all()
        return super().__iter__()

    def keys(self):
        self._read_all()
        return super().keys()

    def items(self):
        self._read_all()
        return super().items()

    def values(self):
        self._read_all()
        return super().values()

    def __missing__(self, key):
        from ..errors import ConfigError

        raise ConfigError(
            f"--params has no {key!r} (keys: {', '.join(sorted(dict.keys(self))) or 'none'}); run the stage "
            "through Snakemake, or give every setting its rule passes"
        )


def params(a) -> Params:
    """The stage's settings: one JSON object (``--params``), nested objects included."""
    p = json.loads(a.params, object_pairs_hook=Params)
    where = os.environ.get(PARAMS_READ_ENV)
    if where and isinstance(p, Params):
        reads: set[str] = set()
        p._record(reads)
        rule = str(getattr(a, "command", "unknown")).replace("-", "_")

        def write() -> None:
            record = {"rule": rule, "given": sorted(_leaves(p)), "read": sorted(reads)}
            Path(where).mkdir(parents=True, exist_ok=True)
            (Path(where) / f"{rule}-{os.getpid()}.json").write_text(json.dumps(record))

        atexit.register(write)
    return p


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def loader_workers(a) -> int:
    """DataLoader processes for a streamed data set: the job's threads but one."""
    return max(0, int(getattr(a, "threads", 1)) - 1)


def device_for(p: dict):
    """The stage's device (``compute.device``): on CUDA with the determinism of
    ``compute.deterministic`` and, on a machine with several GPUs, one of its own
    (:func:`limiting_dynamics.devices.setup_device`)."""
    from .. import devices

    return devices.setup_device(p["device"], p["deterministic"], log=log)


def theta0(a, p: dict, with_checkpoint: bool = False):
    """Device, prepared data (``--data``) and the model with the theta_0 weights
    (``--checkpoint``); with ``with_checkpoint`` also the checkpoint dict."""
    from .. import checkpoints, models
    from ..data import datasets as data

    device = device_for(p)
    d = data.load_prepared(a.data, device, workers=loader_workers(a))
    ckpt = checkpoints.load_checkpoint(a.checkpoint)
    model = models.build_model(p["model"], d.num_classes, d.in_channels)
    checkpoints.load_weights(model, ckpt["model"], a.checkpoint)
    return (device, d, model, ckpt) if with_checkpoint else (device, d, model)


def checkpointer_for(a, stage: str, p: dict, device, inputs: dict, stop):
    """The :class:`.checkpoints.Checkpointer` of a long stage: checkpoints in
    ``--resume`` every ``--checkpoint-every`` steps/epochs and on a signal, tied
    to the stage's settings, the contents of its input files, the device, the
    thread count and the torch version (what a bit-identical continuation needs)."""
    import torch

    from .. import checkpoints

    if not a.resume:
        return checkpoints.Checkpointer(None, 0, stop, log)
    settings = {
        "stage": stage,
        "params": p,
        "device": torch.device(device).type,  # not which GPU of the machine: a retry may get another
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "inputs": {k: checkpoints.file_identity(v) for k, v in inputs.items() if v},
    }
    return checkpoints.Checkpointer(checkpoints.ResumeStore(a.resume, settings, log), a.checkpoint_every, stop, log)


def recording_divergence(a, p: dict, hp, run):
    """Run ``run()``; on divergence leave ``--diverged-record`` (a JSON note) and re-raise."""
    from .. import training

    diverged = Path(a.diverged_record)
    diverged.unlink(missing_ok=True)
    try:
        return run()
    except training.DivergenceError as exc:
        write_json({"cell": p["cell"], "error": str(exc), "hyperparameters": hp.as_dict()}, diverged)
        raise
