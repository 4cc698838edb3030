"""ImageNet streamed from its files: the paper's training setting.

Training batches are decoded on DataLoader worker processes with the standard
ImageNet training augmentation: a random crop covering 8-100% of the image
area with aspect ratio in [3/4, 4/3], resized to ``image_size`` (224 in the
paper), and a horizontal flip with probability 1/2. Evaluation uses the
standard transform (shorter side resized to ``image_size * 256 / 224``, centre
crop ``image_size``); the evaluation images (a fixed seeded subset of the
training set, and the validation set) are packed at prepare time and held in
memory (see :func:`.data.prepare_imagenet`).

Every random choice is a pure function of ``(seed, step, position in the
batch)``: which images a batch holds (:class:`.batches.CounterSampler`) and how
each is cropped and flipped. A batch therefore does not depend on the number of
workers or on how far ahead they have read, and a resumed run needs only the
step count to continue bit-identically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, DataError
from .batches import CounterSampler
from .drawing import BatchDrawing
from .images import decode_image

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator, scale=SCALE, ratio=RATIO
) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of a random crop with area fraction in
    ``scale`` and aspect ratio (width/height, log-uniform) in ``ratio``; ten
    tries, then the largest centred crop whose ratio is within bounds (the
    algorithm of torchvision's ``RandomResizedCrop``, with an explicit generator)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def load_train_image(path: Path, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """One training image: decoded, randomly cropped and resized to ``size``
    (bilinear, antialiased), flipped with probability 1/2; ``(C, size, size)`` uint8."""
    from PIL import Image

    def crop_flip(im):
        box = random_resized_crop_box(*im.size, rng)
        im = im.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im

    return decode_image(path, channels, crop_flip)


class _TrainImages(torch.utils.data.Dataset):
    """Items are keys ``(step, position, index)``; the key seeds the augmentation."""

    def __init__(
        self,
        root: Path,
        files: list[str],
        labels: np.ndarray,
        size: int,
        channels: int,
        seed: int,
        label_noise: float,
        num_classes: int,
    ):
        self.root, self.files, self.labels = root, files, labels
        self.size, self.channels, self.seed = size, channels, seed
        self.label_noise, self.num_classes = float(label_noise), int(num_classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key):
        step, pos, index = key
        rng = np.random.default_rng([self.seed, 2, step, pos])
        x = load_train_image(self.root / self.files[index], self.size, self.channels, rng)
        label = int(self.labels[index])
        if self.label_noise > 0:  # its own stream, so the crops do not depend on it
            noise = np.random.default_rng([self.seed, 3, step, pos])
            if noise.random() < self.label_noise:
                label = int(noise.integers(self.num_classes))
        return torch.from_numpy(x), label


class _StepKeys:
    """The batch sampler handed to the DataLoader: keys of every batch from ``first`` on."""

    def __init__(self, sampler: CounterSampler, first: int):
        self.sampler, self.first = sampler, first

    def __iter__(self):
        step = self.first
        while True:
            yield [(step, pos, int(i)) for pos, i in enumerate(self.sampler.indices(step))]
            step += 1


def _worker_init(_):
    import signal

    torch.set_num_threads(1)  # a worker decodes with PIL; torch threads would only compete
    # A scheduler's SIGTERM (pre-emption, requeue) reaches the whole process group: the
    # workers leave it to the training process, which checkpoints and then shuts them down
    # (a worker killed first would fail the next batch before the checkpoint is written).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StreamBatches:
    """Training batches streamed from the image files (see the module docstring).

    ``workers`` DataLoader processes read ahead (``0``: decode in this
    process); batches arrive in pinned memory and are copied to the device
    without blocking when it is a GPU, then normalised there.
    """

    def __init__(self, data: StreamData, batch_size: int, drawing: BatchDrawing, seed: int):
        self.data = data
        self.sampler = CounterSampler(len(data.files), batch_size, drawing.sampling, seed)
        self.per_epoch = self.sampler.per_epoch
        self.images = _TrainImages(
            data.root,
            data.files,
            data.labels,
            data.image_size,
            data.in_channels,
            int(seed),
            drawing.label_noise,
            data.num_classes,
        )
        self.step = 0
        self._it = None

    def _iterator(self):
        device = self.data.device
        w = self.data.workers
        loader = torch.utils.data.DataLoader(
            self.images,
            batch_sampler=_StepKeys(self.sampler, self.step),
            num_workers=w,
            pin_memory=device.type == "cuda",
            worker_init_fn=_worker_init if w else None,
            prefetch_factor=4 if w else None,
        )
        return iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = self._iterator()
        x, y = next(self._it)
        self.step += 1
        device = self.data.device
        x = x.to(device, non_blocking=True).float().div_(255.0).sub_(self.data.mean).div_(self.data.std)
        return x, y.to(device, non_blocking=True)

    def close(self) -> None:
        self._it = None  # shuts the workers down

    def state_dict(self) -> dict:
        return {"stream": {**self.sampler.describe(), "label_noise": self.images.label_noise, "step": self.step}}

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        s = state.get("stream")
        if s is None:
            raise CheckpointError(f"{source} has no 'stream' state: it was not written by a streaming run")
        here = {**self.sampler.describe(), "label_noise": self.images.label_noise}
        if {k: s.get(k) for k in here} != here:
            raise CheckpointError(
                f"{source} streamed {s['scheme']} batches of {s['batch_size']} from {s['n']} "
                f"images with seed {s['seed']}; this run: {here}"
            )
        self.step = int(s["step"])
        self._it = None


class StreamData:
    """A streamed data set: :attr:`memory` (a :class:`.data.TensorData` holding
    the evaluation images: a fixed subset of the training set and the test
    set) plus the training files under :attr:`root`. Attributes of
    :attr:`memory` are available directly (``x_train`` is the subset), except
    :attr:`n_train`, the size of the streamed training set. ``mean``/``std``:
    the per-channel statistics (on the [0, 1] scale, shaped ``(1, C, 1, 1)``)
    that :attr:`memory` was normalised with; ``workers``: DataLoader processes
    for training batches. Training crops have the evaluation images' size."""

    def __init__(
        self,
        memory,
        root: Path,
        files: list[str],
        labels: np.ndarray,
        mean: torch.Tensor,
        std: torch.Tensor,
        workers: int = 0,
    ):
        self.memory, self.root, self.files, self.labels = memory, Path(root), list(files), labels
        self.workers = int(workers)
        self.mean, self.std = mean.to(self.device), std.to(self.device)

    @property
    def image_size(self) -> int:
        return int(self.memory.x_train.shape[-1])

    def __getattr__(self, name):
        if name.startswith("_") or name == "memory":
            raise AttributeError(name)
        return getattr(self.memory, name)

    @property
    def n_train(self) -> int:
        return len(self.files)

    @property
    def device(self) -> torch.device:
        return self.memory.x_train.device

    def train_batches(self, batch_size: int, drawing: BatchDrawing, seed: int) -> StreamBatches:
        if drawing.augment_shift:
            raise DataError(
                "augment_shift must be 0 with data.loader: stream (the streamed images are "
                "randomly cropped and flipped instead)"
            )
        return StreamBatches(self, batch_size, drawing, seed)
