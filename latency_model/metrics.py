"""Accuracy metrics of latency predictions, as nn-Meter reports them.

`within_5`/`within_10`: share of predictions whose relative error |pred - meas| / meas is at
most 5%/10% (nn-Meter's "+-10% accuracy"); RMSE in ms; RMSPE as a fraction (root of the mean
squared relative error); Spearman's rank correlation (how well the ranking of configs, which is
what the pruner acts on, is kept). All shares and RMSPE are fractions, not percent.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Metrics:
    n: int
    within_5: float
    within_10: float
    rmse_ms: float
    rmspe: float
    spearman: float

    def to_dict(self) -> dict[str, Any]:
        # JSON has no NaN: an undefined metric (too few points) is written as null.
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in dataclasses.asdict(self).items()}


def compute_metrics(predicted: np.ndarray, measured: np.ndarray) -> Metrics:
    """Metrics of `predicted` against `measured` (both in ms, same order, measured > 0)."""
    pred = np.asarray(predicted, dtype=np.float64)
    meas = np.asarray(measured, dtype=np.float64)
    if pred.shape != meas.shape or pred.ndim != 1:
        raise ValueError(f"predicted {pred.shape} and measured {meas.shape} must be equal 1-d")
    if pred.size == 0:
        nan = float("nan")
        return Metrics(0, nan, nan, nan, nan, nan)
    rel = np.abs(pred - meas) / meas
    spearman = float("nan")
    if pred.size >= 2 and np.ptp(pred) > 0 and np.ptp(meas) > 0:
        spearman = float(stats.spearmanr(pred, meas).statistic)
    return Metrics(
        n=int(pred.size),
        within_5=float(np.mean(rel <= 0.05)),
        within_10=float(np.mean(rel <= 0.10)),
        rmse_ms=float(np.sqrt(np.mean((pred - meas) ** 2))),
        rmspe=float(np.sqrt(np.mean(rel ** 2))),
        spearman=spearman,
    )


def pct(fraction: float) -> str:
    """A fraction as a percentage with one decimal, for tables."""
    return f"{100 * fraction:.1f}%"
