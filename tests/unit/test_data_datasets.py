"""Preparing data sets: the digits split and resize, and CIFAR-10 and ImageNet from
their real on-disk formats (generated here, tiny) with clear errors for bad files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from generated_data import cifar10_config, write_cifar10, write_image_folder

from limiting_dynamics.data import catalog
from limiting_dynamics.data import datasets as data
from limiting_dynamics.errors import DataError

DIGITS = {"name": "digits", "image_size": 16, "channels": 3, "test_fraction": 0.2, "split_seed": 0}


@pytest.mark.parametrize("test_fraction", [0.1, 0.2, 0.25, 0.5])
def test_the_written_out_digits_class_counts_are_scikit_learns(test_fraction):
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    assert tuple(counts.tolist()) == catalog.DIGITS_CLASS_COUNTS
    assert catalog.n_train_digits(test_fraction) == sum(c - round(test_fraction * c) for c in counts)


def test_digits_are_resized_split_stratified_and_round_trip(tmp_path):
    p = data.prepare(DIGITS)
    assert p.x_train.dtype == np.uint8 and p.x_train.shape[1:] == (3, 16, 16)
    assert len(p.y_train) + len(p.y_test) == 1797
    assert len(p.y_train) == catalog.expected_train_size(DIGITS)
    # stratified: every class in both parts, in proportion
    frac = np.bincount(p.y_test) / np.bincount(np.concatenate([p.y_train, p.y_test]))
    assert np.all(np.abs(frac - 0.2) < 0.02)
    # the three channels are the same grey image
    assert np.array_equal(p.x_train[:, 0], p.x_train[:, 2])
    path = tmp_path / "digits.npz"
    data.save_prepared(p, path)
    t = data.load_prepared(path, "cpu")
    assert t.x_train.shape == (len(p.y_train), 3, 16, 16) and t.x_train.dtype == torch.float32
    assert abs(float(t.x_train[:].mean())) < 1e-4
    assert float(t.x_train[:].std()) == pytest.approx(1.0, abs=0.05)
    assert t.num_classes == 10 and t.in_channels == 3
    # held as uint8, normalised on access: bit-identical to normalising everything up front
    assert t.x_train.raw.dtype == torch.uint8 and len(t.x_train) == len(p.y_train)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in p.channel_stats())
    full = torch.from_numpy(p.x_train).float().div_(255.0).sub_(mean).div_(std)
    idx = torch.tensor([5, 0, 17, 5])
    assert torch.equal(t.x_train[idx], full[idx]) and torch.equal(t.x_train[3:9], full[3:9])
    assert torch.equal(t.x_train[7], full[7]) and t.x_train[7].shape == (3, 16, 16)


def test_split_depends_on_seed_only():
    a = data.prepare({**DIGITS, "image_size": 8, "channels": 1})
    b = data.prepare({**DIGITS, "image_size": 8, "channels": 1})
    c = data.prepare({**DIGITS, "image_size": 8, "channels": 1, "split_seed": 1})
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_native_8px_digits_keep_their_pixels():
    p = data.prepare({**DIGITS, "image_size": 8, "channels": 1})
    from sklearn.datasets import load_digits

    raw = load_digits().images
    assert set(np.unique(p.x_train)) <= set(np.round(np.arange(17) / 16 * 255).astype(np.uint8))
    assert p.x_train.shape[1:] == (1, 8, 8) and raw.shape[1:] == (8, 8)


def test_cifar10_from_the_python_batches(tmp_path):
    root = write_cifar10(tmp_path / "cifar-10-batches-py")
    prepared = data.prepare(cifar10_config(root))
    assert prepared.x_train.shape == (100, 3, 32, 32) and prepared.x_test.shape == (20, 3, 32, 32)
    assert prepared.x_train.dtype == np.uint8 and prepared.num_classes == 10
    with open(root / "data_batch_2", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    np.testing.assert_array_equal(prepared.x_train[20:40], raw[b"data"].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(prepared.y_train[20:40], raw[b"labels"])
    small = data.prepare(cifar10_config(root, image_size=8, channels=1))
    assert small.x_train.shape == (100, 1, 8, 8)
    # grey = luma of the RGB image, then an antialiased resize: check the mean brightness is kept
    luma = (raw[b"data"].reshape(-1, 3, 32, 32).astype(float) * np.array([0.299, 0.587, 0.114])[:, None, None]).sum(1)
    assert abs(small.x_train[20:40].mean() - luma.mean()) < 1.0


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: None, "data.path is required for CIFAR-10"),
        (lambda r: (r / "data_batch_3").unlink(), "data_batch_3 does not exist; download 'CIFAR-10 python version'"),
        (
            lambda r: (r / "test_batch").write_bytes((r / "test_batch").read_bytes()[:500]),
            "is not in the CIFAR-10 python format",
        ),
        (
            lambda r: (r / "data_batch_1").write_bytes(pickle.dumps(__import__("os").getcwd)),
            "refusing to unpickle posix.getcwd",
        ),
    ],
)
def test_cifar10_problems_are_clear(tmp_path, damage, message):
    root = write_cifar10(tmp_path / "c")
    damage(root)
    cfg = cifar10_config(root) if "required" not in message else {**cifar10_config(root), "path": None}
    with pytest.raises(DataError, match=message):
        data.prepare(cfg)


def test_imagenet_image_folder_is_packed_with_the_eval_geometry(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "imagenet")
    # a 60x30 image, red | green | blue with the green band exactly its centre square
    stripes = np.zeros((30, 60, 3), dtype=np.uint8)
    stripes[:, :15, 0] = stripes[:, 15:45, 1] = stripes[:, 45:, 2] = 255
    Image.fromarray(stripes).save(root / "train" / "n02" / "n02_zz.png")
    prepared = data.prepare(
        {
            "name": "imagenet",
            "loader": "memory",
            "path": str(root),
            "image_size": 16,
            "channels": 3,
            "test_fraction": 0.2,
            "split_seed": 0,
        }
    )
    assert prepared.x_train.shape == (16, 3, 16, 16) and prepared.x_test.shape == (6, 3, 16, 16)
    assert prepared.num_classes == 3 and list(np.bincount(prepared.y_train)) == [5, 6, 5]
    green = prepared.x_train[10]  # n02's files sorted: n02_0..n02_4, n02_zz
    inner = green[:, :, 1:-1]  # the outermost columns blend with the neighbouring bands in the resize
    assert inner[1].mean() > 250 and inner[0].mean() < 10 and inner[2].mean() < 10
    subset = data.prepare(
        {
            "name": "imagenet",
            "loader": "memory",
            "path": str(root),
            "image_size": 8,
            "channels": 1,
            "test_fraction": 0.2,
            "split_seed": 0,
            "max_train_per_class": 2,
        }
    )
    assert subset.x_train.shape == (6, 1, 8, 8) and list(np.bincount(subset.y_train)) == [2, 2, 2]


def test_imagenet_problems_are_clear(tmp_path):
    root = write_image_folder(tmp_path / "imagenet")
    (root / "val" / "n03").rename(root / "val" / "n04")
    with pytest.raises(DataError, match=r"has other classes than train/ \(missing \['n03'\], extra \['n04'\]\)"):
        data.prepare({"name": "imagenet", "loader": "memory", "path": str(root), "image_size": 8, "channels": 3})
    (root / "val" / "n04").rename(root / "val" / "n03")
    (root / "train" / "n01" / "n01_1.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"n01_1.JPEG cannot be decoded"):
        data.prepare({"name": "imagenet", "loader": "memory", "path": str(root), "image_size": 8, "channels": 3})
