"""The bi-level search's parts and one step of it, as `prune.train` runs it.

A step moves the weights on an inner-split batch; every `outer_every`-th step also moves the gate
scores on a held-out batch (`BilevelOptimizer`), with the penalty w * E[latency] / budget, and
then w by dual ascent (`BudgetWeight`) from the expected latency (`budget_signal="expected"`)
or the hard network's (`"hard"`), only rising over the last quarter of the steps. The hard
network is the projection of the scores onto the budget (`prune.projection`), the budget
narrowing to the target over the first half, or the units with positive scores
(`hard_mask="threshold"`). `finish` turns the scores into the plan that `shrink` cuts.

Kept apart from the run's loops so that bench/bilevel_step_cost.py times this very step.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from latency_model.budget import LatencyBudget
from prune.bilevel import BilevelConfig, BilevelOptimizer
from prune.budget_weight import BudgetWeight, BudgetWeightConfig
from prune.gates import GateConfig, Gates
from prune.groups import Plan, PruneGroup
from prune.projection import BudgetProjection
from prune.selection import fill_to_budget, fit_to_budget, predicted_ms
from prune.settings import PruneSettings
from prune.steps import seg_loss

log = logging.getLogger(__name__)

SETTLE_FROM = 0.75  # fraction of the search after which the budget weight only rises


class BilevelSearch:
    """Gates on `model`, the bi-level optimiser, the budget weight and the projection of one search."""

    def __init__(self, settings: PruneSettings, model: nn.Module, groups: Sequence[PruneGroup], budget: LatencyBudget,
                 target_ms: float) -> None:
        self.settings, self.groups, self.budget, self.target_ms = settings, list(groups), budget, target_ms
        self.projection = (BudgetProjection(self.groups, budget, target_ms) if settings.hard_mask == "projection"
                           else None)
        self.gates = Gates(self.groups, GateConfig.from_settings(settings), select=self.projection)
        self.gates.attach(model)
        self.optimizer = BilevelOptimizer(model, self.gates, seg_loss, BilevelConfig.from_settings(settings))
        self.weight = BudgetWeight(BudgetWeightConfig(budget=target_ms))
        self.penalty = self.weight.penalty_fn(self.expected_ms)
        self.total_steps = settings.epochs * settings.search_steps

    @property
    def parts(self) -> dict[str, Any]:
        """What a checkpoint stores besides the model."""
        return {"optimizer": self.optimizer, "gates": self.gates, "budget_weight": self.weight}

    def expected_ms(self, gates: Gates) -> torch.Tensor:
        """The expected latency under the gates' keep probabilities (differentiable)."""
        return self.budget.expected_ms_from_probs(gates.probabilities())

    def hard_ms(self, index: int) -> float:
        """The predicted latency of the hard network at step `index` (the projection's budget
        narrowed to that step)."""
        self._narrow(index)
        return predicted_ms(self.budget, self.groups, self.gates.kept_units())

    def step(self, index: int, batch: Any, outer_batches: Iterator[Any]) -> tuple[float, float | None]:
        """Step `index` of the search: (training loss, the hard network's predicted ms after an
        outer step; None after a weights-only step, whose hard network is unchanged)."""
        s = self.settings
        self._narrow(index)
        if index % s.outer_every:
            return self.optimizer.step(batch).train_loss, None
        loss = self.optimizer.step(batch, next(outer_batches), self.penalty).train_loss
        ms = predicted_ms(self.budget, self.groups, self.gates.kept_units())
        if s.budget_signal == "hard":
            signal = ms
        else:
            with torch.no_grad():
                signal = float(self.expected_ms(self.gates))
        self.weight.update(signal, settle=index >= SETTLE_FROM * self.total_steps)
        return loss, ms

    def finish(self) -> tuple[Plan, float, int, int]:
        """Detach the gates; (plan, the search's own network's predicted ms, units dropped to fit
        the budget, units added back to fill it), ranking by gate score."""
        self._narrow(self.total_steps)
        self.gates.detach()
        scores = self.scores()
        searched_ms = predicted_ms(self.budget, self.groups, self.gates.kept_units())
        plan, dropped = fit_to_budget(self.groups, scores, self.gates.kept_units(), self.budget, self.target_ms)
        if dropped:
            log.warning("the searched network was over budget: dropped %d more units by gate score", dropped)
        fitted_ms = predicted_ms(self.budget, self.groups, plan)
        plan, added = fill_to_budget(self.groups, scores, plan, self.budget, self.target_ms)
        if added:
            log.info("the searched network left %.0f%% of the budget unused: added back %d units by gate score",
                     100 * (1 - fitted_ms / self.target_ms), added)
        return plan, searched_ms, dropped, added

    def scores(self) -> dict[str, torch.Tensor]:
        """Every group's gate scores, detached (they rank its units)."""
        return {name: score.detach().clone() for name, score in zip(self.gates.names, self.gates.scores)}

    def _narrow(self, index: int) -> None:
        if self.projection is not None:
            self.projection.narrow(index / self.total_steps)
