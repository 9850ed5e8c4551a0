"""The FLOPs table: a predictor-shaped cost the budget fills its tables from."""

from __future__ import annotations

import pytest
import torch

from latency_model.budget import LatencyBudget
from latency_model.features import flops
from prune.describe import describe_model
from prune.flops_cost import FlopsCost
from runner.errors import EdgesegError


def test_flops_budget_is_the_sum_of_layer_flops_and_differentiable():
    description = describe_model("segformer-b0", 32, unit=16, num_classes=4)
    budget = LatencyBudget(description, FlopsCost(ms_per_gflop=2.0))
    assert budget.full_latency_ms() == pytest.approx(2e-9 * sum(flops(c) for c in description.full()))
    assert budget.min_latency_ms() < budget.full_latency_ms()
    groups = description.groups
    probs = {g.name: torch.full((len(g.grid),), 0.5, dtype=torch.float64, requires_grad=True) for g in groups}
    expected = budget.expected_ms_from_probs(probs)
    assert budget.min_latency_ms() < float(expected.detach()) < budget.full_latency_ms()
    expected.backward()
    assert all(float(p.grad.sum()) > 0 for p in probs.values())  # keeping more costs more


def test_flops_cost_rejects_a_non_positive_scale():
    with pytest.raises(EdgesegError, match="ms_per_gflop"):
        FlopsCost(0.0)


def test_a_latency_scale_multiplies_every_latency_the_budget_sees():
    from prune.run_budget import load_cost
    from prune.settings import PruneSettings

    description = describe_model("segformer-b0", 32, unit=16, num_classes=4)
    scaled = LatencyBudget(description, load_cost(PruneSettings(budget_ms=1.0, latency_scale=1.5)))
    plain = LatencyBudget(description, load_cost(PruneSettings(budget_ms=1.0)))
    assert scaled.full_latency_ms() == pytest.approx(1.5 * plain.full_latency_ms())
    assert scaled.min_latency_ms() == pytest.approx(1.5 * plain.min_latency_ms())
    with pytest.raises(EdgesegError, match="latency-scale"):
        PruneSettings(budget_ms=1.0, latency_scale=0.0)
