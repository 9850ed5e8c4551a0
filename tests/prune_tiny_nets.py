"""A tiny conv/decoder network with one of each graph pattern the pruner must couple."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinySegNet(nn.Module):
    """stem -> residual block (add) -> downsample -> two branches (concat) -> decoder that
    fuses the upsampled branches with the skip (concat) -> classifier."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block_a = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.block_b = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.down = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.branch_left = nn.Conv2d(24, 16, 1)
        self.branch_right = nn.Conv2d(24, 8, 1)
        self.decoder = nn.Conv2d(16 + 8 + 16, 16, 1)
        self.classifier = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        skip = F.relu(skip + self.block_b(self.block_a(skip)))
        low = F.relu(self.down(skip))
        branches = torch.cat([self.branch_left(low), self.branch_right(low)], 1)
        branches = F.interpolate(branches, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(F.relu(self.decoder(torch.cat([branches, skip], 1))))


def seg_loss(model: nn.Module, batch) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(model(images), labels)
