"""The weight of the budget penalty, set by dual ascent so the hard network lands under budget.

The outer objective is L_val + w · c(s) / B, where c(s) is a cost differentiable in the gate
probabilities (the expected latency from `latency_model`) and B the budget. w is treated as the
Lagrange multiplier of the constraint c_hard <= B · (1 - margin) and moved by dual ascent after
every outer step:

    w <- clip(w + step_size · (c_hard / (B · (1 - margin)) - 1), 0, max_weight)

c_hard is the cost of the *hard* network the gates describe now (the one `shrink` would cut),
not the expectation, so the controller steers what will actually be deployed. While the hard
network is over the aim the weight grows and pushes scores down; once it is under, the weight
decays and accuracy wins units back. Because the hard cost moves in steps (one unit at a time),
plain dual ascent ends up alternating around the aim, over and under. So the search ends with a
settling phase (`update(..., settle=True)`, e.g. the last 10-25% of outer steps): the weight no
longer decays, only rises while over, and the hard network comes to rest at or just under the
aim. The caller checks the final hard cost (and keeps settling while it is over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from prune.gates import Gates
from runner.errors import EdgesegError


@dataclass(frozen=True)
class BudgetWeightConfig:
    budget: float  # B, in the cost's unit (ms for latency)
    step_size: float = 0.5
    margin: float = 0.02
    initial_weight: float = 0.0
    max_weight: float = 100.0

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise EdgesegError(f"The budget must be > 0, got {self.budget}.", "Pass a positive budget.")
        if not 0 <= self.margin < 1:
            raise EdgesegError(f"The budget margin must be in [0, 1), got {self.margin}.", "Pass e.g. 0.02.")
        if self.step_size <= 0 or self.max_weight < self.initial_weight or self.initial_weight < 0:
            raise EdgesegError(
                "Budget weight settings need step_size > 0 and 0 <= initial_weight <= max_weight.",
                "Fix the budget weight settings.",
            )


class BudgetWeight:
    """Holds the current penalty weight w; `update` after each outer step, `penalty_fn` to plug in."""

    def __init__(self, config: BudgetWeightConfig) -> None:
        self.config = config
        self.weight = config.initial_weight

    @property
    def aim(self) -> float:
        """The cost the hard network is steered to: B · (1 - margin)."""
        return self.config.budget * (1.0 - self.config.margin)

    def penalty_fn(self, expected_cost: Callable[[Gates], torch.Tensor]) -> Callable[[Gates], torch.Tensor]:
        """w · c(s) / B, read at call time (so updates of w take effect on the next step)."""
        return lambda gates: self.weight * expected_cost(gates) / self.config.budget

    def update(self, hard_cost: float, settle: bool = False) -> float:
        """One dual-ascent step on the hard network's cost; returns the new weight. With
        `settle`, the weight only rises (the final phase of a search)."""
        violation = hard_cost / self.aim - 1.0
        if settle:
            violation = max(violation, 0.0)
        self.weight = min(max(self.weight + self.config.step_size * violation, 0.0), self.config.max_weight)
        return self.weight

    def state_dict(self) -> dict[str, float]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.weight = float(state["weight"])
