"""Choosing kept units under a latency budget: the baselines and the final fit of a search.

A plan is `{group name: kept unit indices}` (what `shrink` replays). Three ways to make one:

- `uniform_plan`: every group keeps the same fraction of its units (its first ones), the largest
  fraction whose predicted latency fits the budget (uniform width scaling);
- `magnitude_plan`: units ranked by the group L1 norm of their weights in every member layer
  (`l1_importance`, normalised per group, so layers of different sizes compare), the lowest
  dropped until the budget fits;
- `fit_to_budget`: the same greedy drop applied to any plan and any per-unit importance (the
  bi-level search ends with it, ranking by gate scores, when its hard network is still over);
- `fill_to_budget`: the converse, for a plan under the budget: the most important dropped units
  come back while the plan still fits (the search's hard network can fall well under the budget
  when many scores cross zero in one step, and unused budget is accuracy given away).

Every group keeps at least one unit: its most important one.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from latency_model.budget import LatencyBudget
from prune.groups import Plan, PruneGroup

log = logging.getLogger(__name__)


def kept_counts(groups: Sequence[PruneGroup], plan: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Kept count per group as the description counts it: heads for heads groups, else channels."""
    return {g.name: _kept_count(g, plan.get(g.name, range(g.num_units))) for g in groups}


def _kept_count(group: PruneGroup, units: Iterable[int]) -> int:
    units = list(units)
    return len(units) if group.kind == "heads" else group.channel_count(units)


def full_plan(groups: Sequence[PruneGroup]) -> Plan:
    return {g.name: list(range(g.num_units)) for g in groups}


def predicted_ms(budget: LatencyBudget, groups: Sequence[PruneGroup], plan: Mapping[str, Sequence[int]]) -> float:
    return budget.latency_ms(kept_counts(groups, plan))


def uniform_plan(groups: Sequence[PruneGroup], budget: LatencyBudget, budget_ms: float, steps: int = 200) -> Plan:
    """The first ceil(r * units) units of every group, for the largest r (of `steps`) that fits."""
    plan = {g.name: [0] for g in groups}
    for i in range(steps, -1, -1):
        candidate = {g.name: list(range(max(1, -(-g.num_units * i // steps)))) for g in groups}
        if predicted_ms(budget, groups, candidate) <= budget_ms:
            plan = candidate
            log.info("uniform width scaling: keep %.3f of every group", i / steps)
            break
    return plan


def fit_to_budget(groups: Sequence[PruneGroup], importance: Mapping[str, torch.Tensor], plan: Mapping[str, Sequence[int]],
                  budget: LatencyBudget, budget_ms: float) -> tuple[Plan, int]:
    """Drop the least important kept units (never a group's last) until the plan fits the
    budget; returns the plan and how many units were dropped. Bisects on the number dropped:
    dropping more never costs more."""
    kept = {g.name: sorted(int(u) for u in plan.get(g.name, range(g.num_units))) for g in groups}
    scores = _as_lists(groups, importance)
    candidates = []
    for group in groups:
        ranked = sorted(kept[group.name], key=scores[group.name].__getitem__)
        candidates += [(scores[group.name][u], group.name, u) for u in ranked[:-1]]
    candidates.sort()

    def without(count: int) -> Plan:
        dropped: dict[str, set[int]] = {}
        for _, name, unit in candidates[:count]:
            dropped.setdefault(name, set()).add(unit)
        return {name: sorted(set(units).difference(dropped.get(name, ()))) for name, units in kept.items()}

    low, high = 0, len(candidates)
    while low < high:
        middle = (low + high) // 2
        if predicted_ms(budget, groups, without(middle)) <= budget_ms:
            high = middle
        else:
            low = middle + 1
    return without(low), low


def fill_to_budget(groups: Sequence[PruneGroup], importance: Mapping[str, torch.Tensor], plan: Mapping[str, Sequence[int]],
                   budget: LatencyBudget, budget_ms: float) -> tuple[Plan, int]:
    """Add dropped units back, most important first, each only if the plan still fits the
    budget (latency steps with alignment, so a unit that does not fit can be followed by one
    that does); returns the plan and how many units were added."""
    kept = {g.name: set(int(u) for u in plan.get(g.name, range(g.num_units))) for g in groups}
    scores = _as_lists(groups, importance)
    dropped = sorted(((scores[g.name][u], g.name, u) for g in groups for u in range(g.num_units)
                      if u not in kept[g.name]), reverse=True)
    by_name = {g.name: g for g in groups}
    tally = budget.tally(kept_counts(groups, kept))  # one group at a time: this runs once per search step
    added = 0
    for _, name, unit in dropped:
        kept[name].add(unit)
        count = _kept_count(by_name[name], kept[name])
        if tally.ms_with(name, count) <= budget_ms:
            tally.set(name, count)
            added += 1
        else:
            kept[name].discard(unit)
    return {name: sorted(units) for name, units in kept.items()}, added


def _as_lists(groups: Sequence[PruneGroup], importance: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per-unit importance as floats: indexing a tensor unit by unit costs microseconds a time."""
    return {g.name: importance[g.name].detach().float().tolist() for g in groups}


def l1_importance(model: nn.Module, groups: Sequence[PruneGroup]) -> dict[str, torch.Tensor]:
    """Group L1 importance per unit, divided by the group's mean (so groups of different sizes
    compare): every member of the group contributes the L1 norm of the weights that cutting the
    unit removes from it, a producer its output rows (convolution and linear rows, norm and
    depthwise per-channel weights), a consumer its input columns, averaged over the group's
    (member, channel) entries of the unit. This is Torch-Pruning's GroupMagnitudeImportance with
    p=1, group_reduction="mean" and normalizer="mean" (DepGraph, CVPR 2023), the unit's channels
    averaged; a tied group (the decoder's projections) or a width tied across residual additions
    is scored by all its layers, not by its root alone. Norms without affine weights add nothing."""
    modules = dict(model.named_modules())
    out = {}
    for group in groups:
        total = torch.zeros(group.num_units, dtype=torch.float64)
        entries = torch.zeros(group.num_units, dtype=torch.float64)
        for member in group.members:
            weight = getattr(modules[member.module], "weight", None)
            if not isinstance(weight, torch.Tensor):
                continue
            magnitude = weight.detach().abs().double()
            if not member.producer:  # a consumer's input channels are its weight's second dimension
                magnitude = magnitude.transpose(0, 1)
            per_channel = magnitude.reshape(magnitude.shape[0], -1).sum(1)
            units = torch.tensor(member.units, dtype=torch.long)
            total.index_add_(0, units, per_channel[torch.tensor(member.channels, dtype=torch.long)])
            entries.index_add_(0, units, torch.ones(len(units), dtype=torch.float64))
        per_unit = total / entries.clamp_min(1)
        out[group.name] = (per_unit / per_unit.mean().clamp_min(1e-12)).float()
    return out


def magnitude_plan(model: nn.Module, groups: Sequence[PruneGroup], budget: LatencyBudget, budget_ms: float) -> Plan:
    """L1-magnitude channel pruning at the budget (Li et al., ICLR 2017, ranked across layers), with
    the group importance DepGraph uses for coupled layers (`l1_importance`)."""
    plan, dropped = fit_to_budget(groups, l1_importance(model, groups), full_plan(groups), budget, budget_ms)
    log.info("magnitude pruning: dropped %d units", dropped)
    return plan
