"""The training step every phase shares: the loss, the optimiser, one plain SGD step.

The search's baselines, the fine-tuning and bench/bilevel_step_cost.py's reference step are the
same function, so the step-cost ratio compares the bi-level step with what plain training runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prune.bilevel import average_over_processes


def seg_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the logits upsampled to the label size (255 ignored)."""
    images, labels = batch
    logits = F.interpolate(model(images), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=255)


def sgd(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9; the decay is the run's (`PruneSettings.decay`), one value for every method."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)


def plain_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> float:
    """Forward, backward (gradients averaged over data-parallel processes), SGD step; the loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = seg_loss(model, batch)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    for param, grad in zip(params, average_over_processes([p.grad for p in params])):
        param.grad = grad
    optimizer.step()
    return float(loss.detach())
