"""The hyperparameters of one cell, shared by training, the theory, the
linear-regression check and the comparison (torch-free)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Hyperparameters:
    """One cell of the experiment: constant SGD hyperparameters and a seed (the theory ignores the seed)."""

    lr: float
    batch_size: int
    momentum: float
    weight_decay: float
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> Hyperparameters:
        """From a result file's attributes (``lr``, ``batch_size``, ``momentum``, ``weight_decay``, ``seed``)."""
        return cls(
            float(attrs["lr"]),
            int(attrs["batch_size"]),
            float(attrs["momentum"]),
            float(attrs["weight_decay"]),
            int(attrs.get("seed", 0)),
        )

    @property
    def relaxation_steps(self) -> float:
        """``(1 - beta) / (lr wd)``: steps for weight decay to relax scale-invariant weights."""
        if self.weight_decay == 0:
            return math.inf
        return (1.0 - self.momentum) / (self.lr * self.weight_decay)


NAMES = tuple(f.name for f in fields(Hyperparameters))  # lr, batch_size, momentum, weight_decay, seed
