"""The ResNet family used by the experiments.

``arch: resnet18`` (or any torchvision ResNet name) is torchvision's own model,
the paper's. ``arch: resnet`` is a smaller member of the same family built from
the same residual block as torchvision's (:class:`BasicBlock`): a configurable
number of stages and blocks per stage, base width, and either the CIFAR-style
3x3 stem (for small images) or the ImageNet 7x7/stride-2 stem with max-pool.
``blocks: [1, 1, 1], width: 16, stem: cifar`` is the classic ResNet-8.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ModelError

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn")


class BasicBlock(nn.Module):
    """The residual block of torchvision's ResNet-18/34 (``torchvision.models.resnet.BasicBlock``),
    with the same submodules registered in the same order, so the same seed gives the
    same weights and the same outputs (a test compares the two). Defined here so that a
    job building the small ResNet does not import torchvision, whose package import pulls
    in ``torch._dynamo`` (about a second per job)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += shortcut
        return self.relu(out)


class SmallResNet(nn.Module):
    """A ResNet of BasicBlocks with configurable depth, width and stem."""

    def __init__(self, *, blocks: tuple[int, ...], width: int, num_classes: int, in_channels: int, stem: str):
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            raise ModelError(f"unknown stem {stem!r}; use 'cifar' or 'imagenet'")
        stages = []
        inplanes = width
        for i, n_blocks in enumerate(blocks):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n_blocks):
                s = stride if j == 0 else 1
                downsample = None
                if s != 1 or inplanes != planes:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes, 1, stride=s, bias=False), nn.BatchNorm2d(planes)
                    )
                layers.append(BasicBlock(inplanes, planes, stride=s, downsample=downsample))
                inplanes = planes
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def build_model(cfg: dict, num_classes: int, in_channels: int) -> nn.Module:
    """Build the model described by the ``model`` config section, untrained."""
    arch = cfg["arch"]
    if arch in TORCHVISION_ARCHS:
        import torchvision.models as tv_models  # only for torchvision's models (module doc of BasicBlock)

        model = getattr(tv_models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:  # a first convolution for grey images, initialised as torchvision does
            parent, name = (model, "conv1") if arch.startswith("resnet") else (model.features, "0")
            old = getattr(parent, name)
            new = nn.Conv2d(
                in_channels,
                old.out_channels,
                old.kernel_size,
                stride=old.stride,
                padding=old.padding,
                bias=old.bias is not None,
            )
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
            setattr(parent, name, new)
        return model
    if arch == "resnet":
        return SmallResNet(
            blocks=tuple(cfg["blocks"]),
            width=int(cfg["width"]),
            num_classes=num_classes,
            in_channels=in_channels,
            stem=cfg["stem"],
        )
    raise ModelError(f"unknown model arch {arch!r}; use 'resnet' or one of {list(TORCHVISION_ARCHS)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def scale_invariant_tensors(model: nn.Module) -> list[str]:
    """Names of the weights whose scale the loss ignores: convolution/linear
    weights whose module is followed directly by a BatchNorm (in registration
    order, which is the forward order in torchvision's ResNets). With BatchNorm
    in train mode the loss does not change when such a tensor is rescaled, so
    its gradient is orthogonal to it."""
    mods = list(model.named_modules())
    out = []
    for (name, m), (_, nxt) in zip(mods, mods[1:]):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(nxt, nn.modules.batchnorm._BatchNorm):
            out.append(f"{name}.weight" if name else "weight")
    return out
