"""Models: the ResNet family and torchvision architectures by name, torchvision
weight files, and which weights are scale-invariant (before BatchNorm)."""

from __future__ import annotations

import pytest
import torch

from limiting_dynamics.checkpoints import CheckpointError, load_checkpoint, load_weights
from limiting_dynamics.errors import ModelError
from limiting_dynamics.models import TORCHVISION_ARCHS, build_model, count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resnet8_and_torchvision_resnet18():
    r8 = build_model({"arch": "resnet", "blocks": [1, 1, 1], "width": 16, "stem": "cifar"}, 10, 1)
    assert 75_000 < count_parameters(r8) < 80_000
    assert r8(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    r18 = build_model({"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet"}, 10, 1)
    assert count_parameters(r18) == pytest.approx(11.17e6, rel=0.01)
    assert r18(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_torchvision_architectures_by_name(arch):
    model = build_model({"arch": arch}, 10, 1)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ModelError, match="vgg16_bn"):
        build_model({"arch": "alexnet"}, 10, 3)


def test_torchvision_weight_files_load_and_a_missing_one_says_where_to_get_it(tmp_path, tiny_config):
    import torchvision

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


def test_scale_invariant_weights_are_the_ones_before_batchnorm():
    from limiting_dynamics.models import build_model, scale_invariant_tensors

    names = scale_invariant_tensors(
        build_model({"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet"}, 10, 3)
    )
    assert len(names) == 20 and "conv1.weight" in names and "layer2.0.downsample.0.weight" in names
    assert "fc.weight" not in names and "bn1.weight" not in names


def test_the_small_resnet_block_is_torchvisions_and_needs_no_torchvision():
    """The small ResNet's residual block gives the same weights (same seed) and the same
    outputs as torchvision's BasicBlock; building it does not import torchvision."""
    import subprocess
    import sys

    from torchvision.models import resnet as tv_resnet

    from limiting_dynamics import models

    cfg = {"arch": "resnet", "blocks": [1, 1], "width": 4, "stem": "cifar"}
    torch.manual_seed(0)
    ours = build_model(cfg, 10, 1)
    original = models.BasicBlock
    try:
        models.BasicBlock = tv_resnet.BasicBlock
        torch.manual_seed(0)
        theirs = build_model(cfg, 10, 1)
    finally:
        models.BasicBlock = original
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(8, 1, 8, 8)
    assert torch.equal(ours.train()(x), theirs.train()(x))
    code = (
        "import sys; from limiting_dynamics.models import build_model; "
        "build_model({'arch': 'resnet', 'blocks': [1], 'width': 4, 'stem': 'cifar'}, 10, 1); "
        "print('torchvision' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
