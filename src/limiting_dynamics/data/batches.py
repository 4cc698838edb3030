"""Where the minibatches of a run come from.

Every training loop asks a *batch source* for ``next() -> (x, y)`` (normalised
float images and labels on the training device) and checkpoints it with
``state_dict()`` / ``load_state_dict()``, so a run split at any step continues
with the same batches. Two sources share that interface:

* :class:`MemoryBatches`: a data set held in memory (digits, CIFAR-10, a packed
  ImageNet store), indices from :class:`BatchSampler` and an optional random
  translation (``augment_shift``);
* :class:`.streaming.StreamBatches`: ImageNet decoded from its files on
  DataLoader workers with the standard random-resized-crop and flip.

Both can add label noise (``label_noise = p``): every time an example is
drawn, with probability ``p`` its label is replaced by a class drawn uniformly
from all classes (the true one included), afresh at every draw. No network can
fit it, so the training loss stays above the entropy of the resulting soft
target and the gradient noise never vanishes; the expected loss is the
cross-entropy with label smoothing ``p`` (what the Hessian stage uses).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, DataError
from .drawing import SAMPLINGS, BatchDrawing
from .images import random_shift


def _check_scheme(n: int, batch_size: int, scheme: str) -> None:
    if batch_size > n:
        raise DataError(f"batch size {batch_size} exceeds the {n} training examples")
    if scheme not in SAMPLINGS:
        raise ConfigError(f"unknown sampling scheme {scheme!r}; use 'reshuffle' or 'replacement'")


class BatchSampler:
    """Minibatch indices from an explicit generator.

    ``reshuffle``: a fresh permutation every epoch, cut into ``floor(N/S)``
    batches (what a shuffling DataLoader with ``drop_last`` does).
    ``replacement``: every example of every batch drawn independently and
    uniformly with replacement, so successive minibatch gradients are i.i.d.
    with covariance ``C/S``.
    """

    def __init__(self, n: int, batch_size: int, scheme: str, seed: int, device: torch.device):
        _check_scheme(n, batch_size, scheme)
        self.n, self.batch_size, self.scheme, self.device = n, batch_size, scheme, device
        self.generator = torch.Generator().manual_seed(int(seed))
        self.per_epoch = n // batch_size
        self._perm: torch.Tensor | None = None
        self._pos = 0

    def next(self) -> torch.Tensor:
        if self.scheme == "replacement":
            idx = torch.randint(self.n, (self.batch_size,), generator=self.generator)
        else:
            if self._perm is None or self._pos >= self.per_epoch:
                self._perm = torch.randperm(self.n, generator=self.generator)
                self._pos = 0
            s = self._pos * self.batch_size
            idx = self._perm[s : s + self.batch_size]
            self._pos += 1
        return idx.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "permutation": self._perm,
            "position": self._pos,
            "scheme": self.scheme,
            "batch_size": self.batch_size,
            "n": self.n,
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["scheme"], int(state["batch_size"]), int(state["n"])) != (self.scheme, self.batch_size, self.n):
            raise CheckpointError(
                f"sampler state is for {state['scheme']} batches of {state['batch_size']} "
                f"from {state['n']} examples, not {self.scheme} {self.batch_size} of {self.n}"
            )
        self.generator.set_state(state["generator"])
        self._perm = state["permutation"]
        self._pos = int(state["position"])


class CounterSampler:
    """Minibatch indices as a pure function of ``(seed, step)``: nothing to
    checkpoint but the step, and batches can be handed out ahead of time (to
    DataLoader workers) without changing what a resumed run sees.

    ``reshuffle``: epoch ``e`` uses the permutation seeded by ``(seed, e)``,
    cut into ``floor(N/S)`` batches; ``replacement``: batch ``k`` is ``S``
    uniform draws seeded by ``(seed, k)``.
    """

    def __init__(self, n: int, batch_size: int, scheme: str, seed: int):
        _check_scheme(n, batch_size, scheme)
        self.n, self.batch_size, self.scheme, self.seed = n, batch_size, scheme, int(seed)
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def indices(self, step: int) -> np.ndarray:
        """Indices of the batch of 0-based ``step``."""
        if self.scheme == "replacement":
            return np.random.default_rng([self.seed, 1, step]).integers(0, self.n, self.batch_size)
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.n)
        return self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]

    def describe(self) -> dict:
        return {"scheme": self.scheme, "batch_size": self.batch_size, "n": self.n, "seed": self.seed}


def noisy_labels(y: torch.Tensor, p: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``y`` with each label replaced, with probability ``p``, by a class drawn
    uniformly from all ``num_classes`` (draws from the CPU ``generator``)."""
    flip = torch.rand(y.shape, generator=generator) < p
    new = torch.randint(num_classes, y.shape, generator=generator)
    return torch.where(flip.to(y.device), new.to(y.device), y)


class MemoryBatches:
    """Batches of an in-memory :class:`.data.TensorData` drawn as ``drawing``
    says: :class:`BatchSampler` indices, then :func:`.images.random_shift` by up
    to ``augment_shift`` pixels (a generator seeded ``seed + 1``) and
    :func:`noisy_labels` with probability ``label_noise`` (a generator seeded
    ``seed + 2``; none drawn when 0)."""

    def __init__(self, data, batch_size: int, drawing: BatchDrawing, seed: int):
        self.data, self.shift, self.label_noise = data, drawing.augment_shift, drawing.label_noise
        self.sampler = BatchSampler(data.n_train, batch_size, drawing.sampling, seed, data.x_train.device)
        self.aug_gen = torch.Generator().manual_seed(int(seed) + 1)
        self.label_gen = torch.Generator().manual_seed(int(seed) + 2)
        self.per_epoch = self.sampler.per_epoch

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.next()
        y = self.data.y_train[idx]
        if self.label_noise > 0:
            y = noisy_labels(y, self.label_noise, self.data.num_classes, self.label_gen)
        return random_shift(self.data.x_train[idx], self.shift, self.aug_gen, self.data.background), y

    def state_dict(self) -> dict:
        return {
            "sampler": self.sampler.state_dict(),
            "augment_rng": self.aug_gen.get_state(),
            "label_rng": self.label_gen.get_state(),
        }

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        for key in ("sampler", "augment_rng", "label_rng"):
            if key not in state:
                raise CheckpointError(
                    f"{source} has no {key!r}: it was not written by an in-memory run of this version"
                )
        self.sampler.load_state_dict(state["sampler"])
        self.aug_gen.set_state(state["augment_rng"])
        self.label_gen.set_state(state["label_rng"])
