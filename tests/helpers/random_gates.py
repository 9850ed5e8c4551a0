"""A model's output under random gates, and the plan those gates keep: the masked side of every
masked == shrunk test."""

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
