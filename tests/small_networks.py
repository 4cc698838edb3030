"""A network small enough for exact Hessians: conv -> BatchNorm -> activation -> linear."""

import torch
from torch import nn


class Small(nn.Module):
    """conv -> BatchNorm -> activation -> linear on 1x4x4 inputs, 4 classes."""

    def __init__(self, activation=torch.relu):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 4)
        self.activation = activation

    def forward(self, x):
        return self.fc(self.activation(self.bn(self.conv(x))).flatten(1))
