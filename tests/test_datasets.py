"""Local data sets in their real on-disk formats (generated here, tiny), and
torchvision architectures by name."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import TINY, Workflow

from limiting_dynamics.data import datasets as data
from limiting_dynamics.errors import DataError, ModelError
from limiting_dynamics.models import TORCHVISION_ARCHS, build_model


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


def _cfg(path, **kw) -> dict:
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


def test_cifar10_from_the_python_batches(tmp_path):
    root = write_cifar10(tmp_path / "cifar-10-batches-py")
    prepared = data.prepare(_cfg(root))
    assert prepared.x_train.shape == (100, 3, 32, 32) and prepared.x_test.shape == (20, 3, 32, 32)
    assert prepared.x_train.dtype == np.uint8 and prepared.num_classes == 10
    with open(root / "data_batch_2", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    np.testing.assert_array_equal(prepared.x_train[20:40], raw[b"data"].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(prepared.y_train[20:40], raw[b"labels"])
    small = data.prepare(_cfg(root, image_size=8, channels=1))
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
    cfg = _cfg(root) if "required" not in message else {**_cfg(root), "path": None}
    with pytest.raises(DataError, match=message):
        data.prepare(cfg)


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


def test_imagenet_image_folder_is_packed_with_the_eval_geometry(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "imagenet")
    # a 60x30 image, red | green | blue with the green band exactly its centre square
    stripes = np.zeros((30, 60, 3), dtype=np.uint8)
    stripes[:, :15, 0] = stripes[:, 15:45, 1] = stripes[:, 45:, 2] = 255
    Image.fromarray(stripes).save(root / "train" / "n02" / "n02_zz.png")
    prepared = data.prepare(
        {"name": "imagenet", "path": str(root), "image_size": 16, "channels": 3, "test_fraction": 0.2, "split_seed": 0}
    )
    assert prepared.x_train.shape == (16, 3, 16, 16) and prepared.x_test.shape == (6, 3, 16, 16)
    assert prepared.num_classes == 3 and list(np.bincount(prepared.y_train)) == [5, 6, 5]
    green = prepared.x_train[10]  # n02's files sorted: n02_0..n02_4, n02_zz
    inner = green[:, :, 1:-1]  # the outermost columns blend with the neighbouring bands in the resize
    assert inner[1].mean() > 250 and inner[0].mean() < 10 and inner[2].mean() < 10
    subset = data.prepare(
        {
            "name": "imagenet",
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
        data.prepare({"name": "imagenet", "path": str(root), "image_size": 8, "channels": 3})
    (root / "val" / "n04").rename(root / "val" / "n03")
    (root / "train" / "n01" / "n01_1.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"n01_1.JPEG cannot be decoded"):
        data.prepare({"name": "imagenet", "path": str(root), "image_size": 8, "channels": 3})


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_torchvision_architectures_by_name(arch):
    model = build_model({"arch": arch}, 10, 1)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ModelError, match="vgg16_bn"):
        build_model({"arch": "alexnet"}, 10, 3)


@pytest.mark.integration
def test_workflow_runs_on_cifar10_files(tmp_path):
    root = write_cifar10(tmp_path / "cifar-10-batches-py")
    cfg = copy.deepcopy(TINY)
    cfg["data"] = _cfg(root, image_size=8)
    cfg["converge"]["batch_size"] = 32  # 100 training images here
    cfg["linear_regression"]["enabled"] = False
    (tmp_path / "wf").mkdir()
    wf = Workflow(tmp_path / "wf", cfg)
    target = "results/analysis/theory/lr0.05_bs32_mom0.9_wd0.005_seed0.nc"  # everything one cell needs
    wf.run(target)
    traj = xr.load_dataset(wf.path("results/trajectories/lr0.05_bs32_mom0.9_wd0.005_seed0.nc"))
    assert traj.attrs["dataset"] == "cifar10" and traj.sizes["step"] == TINY["limiting"]["steps"]
    assert np.isfinite(traj.sq_dist_from_start.values).all()
    assert xr.load_dataset(wf.path(target)).attrs["cell"] == "lr0.05_bs32_mom0.9_wd0.005_seed0"


# The ImageFolder format's Snakemake run is tests/test_streaming.py's (the paper's
# streamed setting; its prepare step packs the evaluation images with the same
# packer as loader: memory, whose training path is the one digits and CIFAR-10 use).


def test_torchvision_weight_files_load_and_a_missing_one_says_where_to_get_it(tmp_path, tiny_config):
    import torchvision

    from limiting_dynamics.checkpoints import CheckpointError, load_checkpoint, load_weights
    from limiting_dynamics.config import TORCHVISION_WEIGHTS, semantic_errors

    assert TORCHVISION_WEIGHTS == {
        a: torchvision.models.get_model_weights(a).IMAGENET1K_V1.url for a in TORCHVISION_ARCHS
    }
    # a bare state_dict saved with torch.save: the format of torchvision's weight files
    torch.manual_seed(0)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    model = build_model({"arch": "resnet18"}, 1000, 3)
    load_weights(model, load_checkpoint(path)["model"], str(path))
    assert torch.equal(model.fc.weight, torch.load(path)["fc.weight"])
    with pytest.raises(CheckpointError, match="classifier for 1000 classes, but the data set has 10"):
        load_weights(build_model({"arch": "resnet18"}, 10, 3), load_checkpoint(path)["model"], str(path))
    with pytest.raises(CheckpointError, match="do not fit the configured model"):
        load_weights(build_model({"arch": "resnet34"}, 1000, 3), load_checkpoint(path)["model"], str(path))
    tiny_config["model"]["arch"] = "resnet18"
    tiny_config["converge"]["checkpoint"] = str(tmp_path / "missing.pth")
    assert any("https://download.pytorch.org/models/resnet18-f37072fd.pth" in e for e in semantic_errors(tiny_config))
