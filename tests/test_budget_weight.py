"""The budget weight: dual ascent on the hard network's cost lands it at or just under budget."""

from __future__ import annotations

import pytest
import torch

from prune.budget_weight import BudgetWeight, BudgetWeightConfig
from prune.gates import Gates
from prune.groups import PruneGroup
from runner.errors import EdgesegError


def test_weight_rises_over_budget_and_decays_to_zero_under_it():
    control = BudgetWeight(BudgetWeightConfig(budget=10.0, step_size=0.5, margin=0.0))
    assert control.update(15.0) == pytest.approx(0.25)
    assert control.update(15.0) == pytest.approx(0.5)
    assert control.update(5.0) == pytest.approx(0.25)
    assert control.update(5.0) == 0.0
    assert control.update(5.0) == 0.0


def test_penalty_reads_the_current_weight():
    control = BudgetWeight(BudgetWeightConfig(budget=4.0, initial_weight=2.0))
    penalty = control.penalty_fn(lambda gates: torch.tensor(8.0))
    assert float(penalty(None)) == pytest.approx(4.0)
    control.update(100.0)
    assert float(penalty(None)) > 4.0


def test_settling_only_raises_the_weight():
    control = BudgetWeight(BudgetWeightConfig(budget=10.0, step_size=0.5, margin=0.0, initial_weight=1.0))
    assert control.update(5.0, settle=True) == 1.0
    assert control.update(15.0, settle=True) == pytest.approx(1.25)


def test_closed_loop_lands_at_or_just_under_the_budget():
    """Ten units that each pay for themselves a little; a budget of 5.5 units must end at 5."""
    group = PruneGroup(name="g", kind="channels", root="g", width=10, unit=1, members=())
    gates = Gates([group])
    value = torch.linspace(0.02, 0.2, 10)  # how much the "accuracy" wants each unit
    control = BudgetWeight(BudgetWeightConfig(budget=5.5, step_size=0.05, margin=0.02))
    penalty = control.penalty_fn(lambda g: g.probabilities()["g"].sum())
    optimizer = torch.optim.Adam(gates.parameters(), lr=0.05)
    history = []
    for step in range(600):
        loss = -(value * torch.log(gates.probabilities()["g"])).sum() + penalty(gates)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(sum(gates.kept_channels().values()))
        control.update(history[-1], settle=step >= 450)
    assert max(history[300:450]) > 5.5  # plain dual ascent alternates around the aim ...
    assert history[-100:] == [5] * 100  # ... settling brings it to rest just under the budget
    assert gates.kept_units()["g"] == [5, 6, 7, 8, 9]  # the units worth most survive


def test_bad_settings_are_errors():
    with pytest.raises(EdgesegError, match="budget must be > 0"):
        BudgetWeightConfig(budget=0.0)
    with pytest.raises(EdgesegError, match="margin"):
        BudgetWeightConfig(budget=1.0, margin=1.0)
