"""Small local data sets in their real on-disk formats, generated for the tests:
CIFAR-10's python batches and an ImageNet-style image folder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """The CIFAR-10 python layout (``data_batch_1..5``, ``test_batch``,
    ``batches.meta``) with ``per_batch`` random images per training batch, each
    class present; pickled with protocol 2 like the real files."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    def batch(n: int, label: str) -> dict:
        labels = [int(k % 10) for k in range(n)]
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        images[:, 0] = (np.asarray(labels) * 25).astype(np.uint8)[:, None, None]  # a learnable red channel
        return {
            b"batch_label": label.encode(),
            b"labels": labels,
            b"data": images.reshape(n, 3072),
            b"filenames": [f"img_{k}.png".encode() for k in range(n)],
        }

    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch(per_batch, f"training batch {i} of 5"), fh, protocol=2)
    with open(root / "test_batch", "wb") as fh:
        pickle.dump(batch(n_test, "testing batch 1 of 1"), fh, protocol=2)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump(
            {
                b"label_names": [
                    b"airplane",
                    b"automobile",
                    b"bird",
                    b"cat",
                    b"deer",
                    b"dog",
                    b"frog",
                    b"horse",
                    b"ship",
                    b"truck",
                ],
                b"num_cases_per_batch": per_batch,
            },
            fh,
            protocol=2,
        )
    return root


def write_image_folder(root: Path, classes=("n01", "n02", "n03"), n_train: int = 5, n_val: int = 2) -> Path:
    """An ImageNet-style tree (train/ and val/, one directory of images per
    class) of small JPEG and PNG files of different sizes; class k is tinted
    so that it can be learned."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for k, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = int(rng.integers(20, 60)), int(rng.integers(20, 60))
                img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                img[..., k % 3] = 255
                Image.fromarray(img).save(d / f"{name}_{i}.{'JPEG' if i % 2 else 'png'}")
    return root


def cifar10_config(path, **kw) -> dict:
    """A ``data`` config section for CIFAR-10 files at ``path`` (32x32, in memory)."""
    return {
        "name": "cifar10",
        "path": str(path),
        "image_size": 32,
        "channels": 3,
        "test_fraction": 0.2,
        "split_seed": 0,
        "loader": "memory",
        **kw,
    }


def imagenet_stream_config(root, **kw) -> dict:
    """A ``data`` config section streaming the image folder at ``root`` (16x16 crops)."""
    return {
        "name": "imagenet",
        "path": str(root),
        "image_size": 16,
        "channels": 3,
        "test_fraction": 0.2,
        "split_seed": 0,
        "loader": "stream",
        "stream_subset": 40,
        **kw,
    }
