"""Converged-model checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import CheckpointError

FORMAT_VERSION = 1



def save_checkpoint(obj: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save({**obj, "format_version": FORMAT_VERSION}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint without executing pickled code.

    Accepts this package's checkpoints (a dict with ``model``) and a bare
    ``state_dict`` (e.g. torchvision weights saved locally).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of weights")
    if "model" not in obj:
        obj = {"model": obj}
    return obj


def load_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load weights strictly; a mismatch names the first differing tensors."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape mismatch {shapes[:2]}" if shapes else ""]))
        raise CheckpointError(f"weights in {source} do not fit the configured model ({detail})")
    model.load_state_dict(state_dict, strict=True)
