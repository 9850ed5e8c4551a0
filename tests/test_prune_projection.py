"""The projected hard network: the best-scoring units that fit a budget narrowing to the target."""

from __future__ import annotations

import pytest
import torch

from latency_model.budget import LatencyBudget
from prune.describe import build_priced_groups, describe_network, prunable_groups
from prune.flops_cost import FlopsCost
from prune.gates import Gates
from prune.groups import PruneGroup
from prune.models import create_model
from prune.projection import RAMP_UNTIL, BudgetProjection, ramped_budget_ms
from prune.selection import predicted_ms


@pytest.fixture(scope="module")
def priced():
    model = create_model("segformer-b0", num_classes=4)
    group_set = build_priced_groups(model, 64, 8)
    budget = LatencyBudget(describe_network(model, group_set, 64), FlopsCost())
    return model, prunable_groups(group_set, budget.description), budget


def test_the_projection_budget_narrows_from_the_unpruned_latency_to_the_target():
    values = [ramped_budget_ms(10.0, 4.0, t / 20) for t in range(21)]
    assert values[0] == 10.0 and values[-1] == 4.0
    assert ramped_budget_ms(10.0, 4.0, RAMP_UNTIL) == 4.0
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[1] - values[2] > values[8] - values[9]  # cubic: fast at first, gently at the end


def test_gates_with_the_projection_keep_the_best_scoring_units_that_fit(priced):
    model, groups, budget = priced
    target = 0.5 * budget.full_latency_ms()
    projection = BudgetProjection(groups, budget, target)
    gates = Gates(groups, select=projection)
    assert predicted_ms(budget, groups, gates.kept_units()) == pytest.approx(budget.full_latency_ms())

    projection.narrow(1.0)
    with torch.no_grad():
        for score in gates.scores:  # later units score higher
            score.copy_(torch.linspace(-1.0, 1.0, len(score)))
    kept = gates.kept_units()
    assert 0.95 * target <= predicted_ms(budget, groups, kept) <= target
    for group in groups:  # within a group, nothing dropped scores above something kept
        dropped = set(range(group.num_units)) - set(kept[group.name])
        assert kept[group.name] and (not dropped or max(dropped) < min(kept[group.name]))
    assert [m.sum().item() for m in gates.hard_masks()] == [len(kept[g.name]) for g in groups]
    for group in groups:  # FLOPs grow with every unit: nothing left out would still fit (the fill)
        for unit in set(range(group.num_units)) - set(kept[group.name]):
            assert predicted_ms(budget, groups, {**kept, group.name: kept[group.name] + [unit]}) > target

    with torch.no_grad():  # an in-place update of the scores is seen (the decision is cached)
        for score in gates.scores:
            score.copy_(torch.linspace(1.0, -1.0, len(score)))
    flipped = gates.kept_units()
    assert flipped != kept and all(0 in flipped[g.name] for g in groups)


def test_channel_count_is_the_number_of_channels_of_the_units(priced):
    _, groups, _ = priced
    ragged = PruneGroup(name="ragged", kind="channels", root="x", width=20, unit=8, members=())  # last unit: 4 channels
    for group in [*groups, ragged]:
        for units in ([], [0], list(range(group.num_units)), list(range(0, group.num_units, 2)), [group.num_units - 1]):
            assert group.channel_count(units) == len(group.channels_of(units))
