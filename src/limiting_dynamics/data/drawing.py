"""How a run draws its minibatches, as one value (torch-free).

Three settings decide what a minibatch is, and every stage that draws batches
as the runs do (training, burn-in, the limiting run, the
gradient-noise and Hessian stages) needs all three together:

* ``sampling``: ``reshuffle`` (a permutation per epoch) or ``replacement``
  (every example drawn independently; i.i.d. minibatch gradients);
* ``augment_shift``: random translation by up to this many pixels (0: none);
* ``label_noise``: the probability that a drawn label is replaced by a
  uniformly random class (0: none).

They come from the config (``converge`` and ``limiting`` sections; the schema
holds their defaults) through :meth:`BatchDrawing.from_settings`, and travel as
one :class:`BatchDrawing`, so no function renames or re-defaults them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

SAMPLINGS = ("reshuffle", "replacement")  # the schemes ``sampling`` may name


@dataclass(frozen=True)
class BatchDrawing:
    sampling: str
    augment_shift: int
    label_noise: float

    @classmethod
    def from_settings(cls, settings: Mapping) -> BatchDrawing:
        """From a config section or a stage's settings holding the three keys."""
        return cls(str(settings["sampling"]), int(settings["augment_shift"]), float(settings["label_noise"]))

    def as_dict(self) -> dict:
        return asdict(self)
