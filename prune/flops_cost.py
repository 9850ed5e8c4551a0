"""A FLOPs table behind the predictor interface: a budget for when no device predictor exists.

`LatencyBudget(description, FlopsCost())` prices every layer by its analytic FLOPs
(`latency_model.features.flops`) times a fixed `ms_per_gflop`, so the optimizer, the baselines
and the whole pipeline run without a device. Its "milliseconds" are nominal (a FLOPs proxy, not
a measurement): budgets given against it are budgets in those units. A trained
`latency_model.predictor.Predictor` plugs into the same place unchanged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from latency_model.features import flops
from latency_model.layers import LayerConfig
from runner.errors import EdgesegError


class FlopsCost:
    """`predict_ms(configs)`: GFLOPs x `ms_per_gflop` per config (nominal ms)."""

    def __init__(self, ms_per_gflop: float = 1.0) -> None:
        if not ms_per_gflop > 0:
            raise EdgesegError(f"ms_per_gflop must be > 0, got {ms_per_gflop}.", "Pass a positive scale.")
        self.ms_per_gflop = float(ms_per_gflop)

    def predict_ms(self, configs: Sequence[LayerConfig]) -> np.ndarray:
        return np.array([flops(c) * 1e-9 * self.ms_per_gflop for c in configs], dtype=np.float64)
