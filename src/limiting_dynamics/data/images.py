"""Image operations shared by preparing, batching and streaming: resizing to
uint8, decoding a file, and the random pixel shift of the augmentation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square images ``(N, C, H, W)`` resized to ``size`` (bilinear, antialiased), unchanged if already."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def resize_uint8(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize ``(N, H, W)`` float images in [0, 1] to ``(N, channels, size, size)`` uint8."""
    x = resize(torch.from_numpy(images.astype(np.float32))[:, None], size)
    x = x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.expand(-1, channels, -1, -1).contiguous().numpy()


def convert_uint8(x: np.ndarray, size: int, channels: int, chunk: int = 4096) -> np.ndarray:
    """``(N, 3, H, W)`` uint8 RGB -> ``(N, channels, size, size)`` uint8 (antialiased
    bilinear resize; grey = ITU-R 601 luma), in chunks to bound memory."""
    if x.shape[2] == size and channels == 3:
        return np.ascontiguousarray(x)
    out = np.empty((x.shape[0], channels, size, size), dtype=np.uint8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for s in range(0, x.shape[0], chunk):
        t = torch.from_numpy(x[s : s + chunk]).float()
        if channels == 1:
            t = (t * luma).sum(1, keepdim=True)
        out[s : s + chunk] = resize(t, size).clamp(0, 255).round().to(torch.uint8).numpy()
    return out


def decode_image(path: Path, channels: int, transform: Callable) -> np.ndarray:
    """Decode one image file as RGB (``channels`` 3) or grey, apply ``transform``
    (PIL image -> PIL image) and return ``(C, H, W)`` uint8; a file PIL cannot
    read is a :class:`DataError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(transform(im.convert("RGB" if channels == 3 else "L")), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"image {path} cannot be decoded ({exc})") from exc
    return np.ascontiguousarray(arr.transpose(2, 0, 1)) if channels == 3 else arr[None].copy()


def eval_resize(size: int) -> int:
    """Shorter side before the evaluation centre crop: the 256/224 convention."""
    return int(round(size * 256 / 224))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
    """Translate every image by its own random offset in ``[-max_shift, max_shift]^2``.

    Pixels shifted in are ``fill`` (per channel); offsets come from
    ``generator`` (CPU), so a seeded run is reproducible. ``max_shift = 0``
    returns ``x`` unchanged.
    """
    if max_shift == 0:
        return x
    n, c, h, w = x.shape
    s = max_shift
    padded = fill.expand(n, c, h + 2 * s, w + 2 * s).clone()
    padded[:, :, s : s + h, s : s + w] = x
    off = torch.randint(0, 2 * s + 1, (2, n), generator=generator).to(x.device)
    rows = off[0][:, None] + torch.arange(h, device=x.device)[None, :]
    cols = off[1][:, None] + torch.arange(w, device=x.device)[None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
