"""Choosing kept units under a budget: the refill of a searched network that fell under it."""

from __future__ import annotations

import torch

from latency_model.budget import LatencyBudget
from prune.describe import build_priced_groups, describe, prunable_groups
from prune.flops_cost import FlopsCost
from prune.models import create_model
from prune.selection import fill_to_budget, predicted_ms, uniform_plan


def test_fill_to_budget_adds_the_most_important_dropped_units_while_the_plan_fits():
    model = create_model("segformer-b0", num_classes=4)
    group_set = build_priced_groups(model, 64, 8)
    budget = LatencyBudget(describe(model, group_set, 64), FlopsCost())
    groups = prunable_groups(group_set, budget.description)
    target = 0.6 * budget.full_latency_ms()
    under = uniform_plan(groups, budget, 0.4 * budget.full_latency_ms())
    # Later units matter more: the refill must take them first.
    importance = {g.name: torch.arange(g.num_units, dtype=torch.float32) for g in groups}

    plan, added = fill_to_budget(groups, importance, under, budget, target)

    assert added > 0 and predicted_ms(budget, groups, under) < predicted_ms(budget, groups, plan) <= target
    assert all(set(under[g.name]) <= set(plan[g.name]) for g in groups)  # nothing kept is dropped
    for group in groups:  # FLOPs grow with every unit: no unit left out would still fit
        for unit in set(range(group.num_units)) - set(plan[group.name]):
            assert predicted_ms(budget, groups, {**plan, group.name: plan[group.name] + [unit]}) > target
    for group in groups:  # within a group units cost the same: the important ones came back first
        back = set(plan[group.name]) - set(under[group.name])
        still_out = set(range(group.num_units)) - set(plan[group.name])
        assert not back or not still_out or min(back) > max(still_out)
    assert fill_to_budget(groups, importance, plan, budget, target) == (plan, 0)
