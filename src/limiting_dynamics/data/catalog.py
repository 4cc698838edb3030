"""What the config needs to know about the data sets without loading one
(torch-free): the local data sets and how to obtain them, and the training-set
size of the digits split."""

from __future__ import annotations

import numpy as np

CIFAR10_HINT = (
    "download 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html on a machine with internet, unpack it and set "
    "data.path to the cifar-10-batches-py directory"
)


IMAGENET_HINT = (
    "give the local ImageNet (ILSVRC-2012) directory with train/ and val/, each holding one "
    "sub-directory of images per class (ImageFolder layout; the official val images must first be "
    "sorted into class directories), obtained from https://image-net.org on a machine with internet"
)
LOCAL_DATASETS = {"cifar10": CIFAR10_HINT, "imagenet": IMAGENET_HINT}  # name -> how to get what data.path points to


def n_train_digits(test_fraction: float) -> int:
    """Training-set size of the digits split (1,797 images, stratified rounding)."""
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    return int(sum(c - round(test_fraction * c) for c in counts))


def expected_train_size(cfg: dict) -> int | None:
    """Training-set size implied by the data config, when known without preparing."""
    if cfg["name"] == "digits":
        return n_train_digits(float(cfg["test_fraction"]))
    return None
