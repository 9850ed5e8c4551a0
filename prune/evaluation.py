"""How a run scores a network: mIoU on a data set."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prune.metrics import ConfusionMatrix


def evaluate_miou(model: nn.Module, dataset: Dataset, num_classes: int, batch_size: int) -> float:
    """mIoU over `dataset` (the model's training mode is restored after)."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    with torch.no_grad():
        for images, labels in DataLoader(dataset, batch_size=batch_size):
            matrix.update(model(images), labels)
    model.train(was_training)
    return matrix.scores().miou
