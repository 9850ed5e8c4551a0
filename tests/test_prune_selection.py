"""Choosing kept units under a budget: the refill of a searched network that fell under it."""

from __future__ import annotations

import pytest
import torch

from prune_tiny_nets import TinySegNet

from latency_model.budget import LatencyBudget
from prune.describe import build_priced_groups, describe_network, prunable_groups
from prune.flops_cost import FlopsCost
from prune.models import create_model
from prune.groups import build_groups
from prune.selection import fill_to_budget, l1_importance, predicted_ms, uniform_plan


def test_fill_to_budget_adds_the_most_important_dropped_units_while_the_plan_fits():
    model = create_model("segformer-b0", num_classes=4)
    group_set = build_priced_groups(model, 64, 8)
    budget = LatencyBudget(describe_network(model, group_set, 64), FlopsCost())
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
    ordered = 0
    for group in groups:  # within a group units cost the same: the important ones came back first
        back = set(plan[group.name]) - set(under[group.name])
        still_out = set(range(group.num_units)) - set(plan[group.name])
        if back and still_out:
            assert min(back) > max(still_out), group.name
            ordered += 1
    assert ordered > 0  # some group had units both added back and left out: the order was tested
    assert fill_to_budget(groups, importance, plan, budget, target) == (plan, 0)


def test_magnitude_scores_a_group_by_every_member_not_its_root_alone():
    """TinySegNet's stem width is tied by the residual addition to block_b.0 (a second producer)
    and read by block_a.0, down and the decoder (consumers). With every weight equal, a unit whose
    block_b.0 rows are larger ranks first, one whose rows there are zero ranks last, and one whose
    decoder input columns are larger ranks above the rest: scoring by the root (stem.0) alone would
    rank them all equal."""
    model = TinySegNet()
    group = build_groups(model, torch.randn(1, 3, 16, 16), unit=4)["stem.0"]
    assert {"block_b.0", "decoder"} <= {m.module for m in group.members} and group.root == "stem.0"
    modules = dict(model.named_modules())
    with torch.no_grad():
        for member in group.members:
            modules[member.module].weight.fill_(1.0)
        rows = {m.module: m for m in group.members}
        block_b, decoder = rows["block_b.0"], rows["decoder"]
        for unit, factor in ((1, 10.0), (2, 0.0)):
            channels = [c for c, u in zip(block_b.channels, block_b.units) if u == unit]
            modules["block_b.0"].weight[channels] *= factor
        columns = [c for c, u in zip(decoder.channels, decoder.units) if u == 3]
        modules["decoder"].weight[:, columns] *= 3.0
    importance = l1_importance(model, [group])["stem.0"]
    assert importance.argsort().tolist() == [2, 0, 3, 1]
    assert importance.mean().item() == pytest.approx(1.0)


def test_magnitude_importance_is_torch_prunings_group_l1_per_unit():
    """The same numbers as torch_pruning's GroupMagnitudeImportance(p=1, group_reduction="mean"),
    averaged over each unit's channels and divided by the group's mean, on every TinySegNet group."""
    import torch_pruning as tp

    model = TinySegNet()
    group_set = build_groups(model, torch.randn(1, 3, 16, 16), unit=4)
    ours = l1_importance(model, group_set.groups)
    scorer = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None, group_reduction="mean")
    modules = dict(model.named_modules())
    for group in group_set.groups:
        leader = modules[group.root]
        traced = group_set.graph.get_pruning_group(leader, group_set.graph.get_pruner_of_module(leader).prune_out_channels,
                                                   list(range(group.width)))
        per_channel = scorer(traced)
        theirs = torch.stack([per_channel[group.channels_of([u])].mean() for u in range(group.num_units)])
        assert torch.allclose(ours[group.name], theirs / theirs.mean(), atol=1e-5), group.name
