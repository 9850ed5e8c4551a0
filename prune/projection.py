"""The projected hard network of a bi-level search: the highest-scoring units that fit a budget.

BiP (Zhang et al., NeurIPS 2022) keeps the top-k scores at a fixed sparsity; here the budget is a
latency, so the kept set is the greedy fit of `selection.fit_to_budget`: every unit, then the
lowest-scoring dropped (a group keeps at least one) until the predicted latency fits, then
`fill_to_budget`: the best-scoring dropped units that still fit come back (a learned predictor
is not monotone in the widths, so the fit alone can land well under: 0.90 of the budget with
the main job's predictor). The searched network is then at its budget at every step, whatever
the scores' level; the scores only rank the units (the latency penalty in the outer objective
makes that ranking pay for latency). Against the sign threshold (`bench/budget_controller.py`):
the threshold network fell to 4-50% of its budget with the hard signal, and the units the final
fill added back had been trained cut out.

Training starts from the unpruned network, so the projection budget narrows from the unpruned
latency to the target over the first `RAMP_UNTIL` of the search along a cubic (gradual pruning,
Zhu & Gupta, 2017: fast at first, gently at the end), while the scores learn which units matter.
"""

from __future__ import annotations

from typing import Sequence

import torch

from latency_model.budget import LatencyBudget
from prune.groups import Plan, PruneGroup
from prune.selection import fill_to_budget, fit_to_budget, full_plan

RAMP_UNTIL = 0.5  # fraction of the search after which the projection budget is the target


def ramped_budget_ms(full_ms: float, target_ms: float, progress: float) -> float:
    """The projection budget after `progress` (0..1) of the search."""
    remaining = 1.0 - min(1.0, max(0.0, progress) / RAMP_UNTIL)
    return target_ms + (full_ms - target_ms) * remaining**3


class BudgetProjection:
    """A `Gates` select function. `narrow(progress)` moves its budget along the ramp; the
    decision is cached per budget and score version (it is asked once per forward pass, the
    scores move once per outer step)."""

    def __init__(self, groups: Sequence[PruneGroup], budget: LatencyBudget, target_ms: float) -> None:
        self.groups, self.budget, self.target_ms = tuple(groups), budget, target_ms
        self.full_ms = budget.full_latency_ms()
        self.budget_ms = self.full_ms
        self._cached: tuple[tuple, Plan] | None = None

    def narrow(self, progress: float) -> None:
        self.budget_ms = ramped_budget_ms(self.full_ms, self.target_ms, progress)

    def __call__(self, scores: dict[str, torch.Tensor]) -> Plan:
        # a detached tensor shares its parameter's version counter, which every in-place update bumps
        key = (self.budget_ms, tuple((s.data_ptr(), s._version) for s in scores.values()))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, project(self.groups, scores, self.budget, self.budget_ms))
        return self._cached[1]


def project(groups: Sequence[PruneGroup], scores: dict[str, torch.Tensor], budget: LatencyBudget,
            budget_ms: float) -> Plan:
    """The highest-scoring units that fit `budget_ms`: every unit, the lowest-scoring dropped until
    the plan fits, then the best-scoring dropped ones that still fit back."""
    plan, _ = fit_to_budget(groups, scores, full_plan(groups), budget, budget_ms)
    return fill_to_budget(groups, scores, plan, budget, budget_ms)[0]
