"""The hyperparameters of one cell, shared by training, the theory, the
linear-regression check and the comparison (torch-free)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Hyperparameters:
    """One cell of the experiment: constant SGD hyperparameters and a seed."""

    lr: float
    batch_size: int
    momentum: float
    weight_decay: float
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def relaxation_steps(self) -> float:
        """``(1 - beta) / (lr wd)``: steps for weight decay to relax scale-invariant weights."""
        if self.weight_decay == 0:
            return math.inf
        return (1.0 - self.momentum) / (self.lr * self.weight_decay)
