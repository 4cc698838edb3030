"""The data stage: prepare a data set into a compact file."""

from __future__ import annotations

from ..data import datasets
from .common import log, params


def cmd_prepare_data(a) -> None:
    prepared = datasets.prepare(params(a), workers=a.threads)
    datasets.save_prepared(prepared, a.out)
    log(
        f"{prepared.name}: {len(prepared.y_train)} train / {len(prepared.y_test)} test images "
        f"of shape {prepared.image_shape}, {prepared.num_classes} classes -> {a.out}"
    )
