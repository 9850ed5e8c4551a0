"""A model's output under random gates, and the plan those gates keep: the masked side of every
masked == shrunk test; and the BatchNorm statistics that make such a test mean something."""

from __future__ import annotations

import torch
from torch import nn

from latency_model.description import ModelDescription
from prune.describe import prunable_groups
from prune.gates import Gates
from prune.groups import GroupSet


def masked_output_and_plan(model: nn.Module, groups: GroupSet, description: ModelDescription,
                           image: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[int]]]:
    """Attach gates with random scores, run `image`, detach; the output and the kept units."""
    gates = Gates(prunable_groups(groups, description))
    with torch.no_grad():
        for scores in gates.scores:
            scores.copy_(torch.randn_like(scores))
    gates.attach(model)
    with torch.no_grad():
        masked = model(image)
    plan = gates.kept_units()
    gates.detach()
    return masked, plan


def randomise_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so eval-mode norms are not identities."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    return model
