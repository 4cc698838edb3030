"""What the config needs to know about the data sets without loading one
(torch-free): the local data sets and how to obtain them, and the training-set
size of the digits split."""

from __future__ import annotations

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


# Images per class (0-9) of scikit-learn's digits, 1,797 in all. Written out because the
# config check runs at every Snakemake start (and, on a cluster, in every job), where
# importing scikit-learn (and scipy.stats with it) would cost about 0.9 s each time;
# tests/unit/test_data_datasets.py checks these against scikit-learn's own copy.
DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def n_train_digits(test_fraction: float) -> int:
    """Training-set size of the digits split (1,797 images, stratified rounding)."""
    return int(sum(c - round(test_fraction * c) for c in DIGITS_CLASS_COUNTS))


def expected_train_size(cfg: dict) -> int | None:
    """Training-set size implied by the data config, when known without preparing."""
    if cfg["name"] == "digits":
        return n_train_digits(float(cfg["test_fraction"]))
    return None
