"""The FLOPs baseline the predictor's trees correct: per layer type, ms = a + b x FLOPs.

The trees learn log(measured ms / baseline ms) and a prediction is the baseline times their
correction. Trees are piecewise constant: learning log ms directly, every width between two
sampled ones falls into one leaf and gets one latency. The search then prices a unit of such a
layer at nothing. Measured in main-job run 20's setting (bench/results/predictor_accuracy,
"baseline"): the decoder fuse at 216, 184 and 152 input channels was predicted 1.078, 1.072 and
1.069 ms and measured 1.682, 1.391 and 0.893 ms, so networks whose predicted layer sums were 6%
apart measured 18% apart and no aim could land. Over a baseline, a leaf holds a rate, and the
prediction moves with the layer's work between samples.

`FlopsBaseline.fit` is per type, weighted by 1/ms (relative errors, so small layers count as
much as large ones), with a >= 0 and b >= 0 (its log is the trees' margin); a type not measured
is priced by the fit over every type. `FlopsBaseline.fit_least_squares` is the plain per-type
line `latency_model evaluate` and `validate` put beside the predictor as "FLOPs".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from latency_model.features import flops
from latency_model.layers import LayerConfig

EVERY_TYPE = "*"
MIN_PREDICTED_MS = 1e-6  # a least-squares line can go negative on tiny layers; keep it positive

Fit = Callable[[np.ndarray, np.ndarray], tuple[float, float]]  # (FLOPs, ms) -> (a, b)


@dataclass(frozen=True)
class FlopsBaseline:
    """`coefficients[kind] = (a ms, b ms per FLOP)`; `EVERY_TYPE` is the fit over every type."""

    coefficients: Mapping[str, tuple[float, float]]

    @classmethod
    def fit(cls, configs: Sequence[LayerConfig], measured_ms: np.ndarray) -> FlopsBaseline:
        """The predictor's baseline: relative errors, a, b >= 0."""
        return cls._fitted(configs, measured_ms, _fit_relative)

    @classmethod
    def fit_least_squares(cls, configs: Sequence[LayerConfig], measured_ms: np.ndarray) -> FlopsBaseline:
        """The FLOPs line evaluations compare with: per-type least squares, unconstrained."""
        return cls._fitted(configs, measured_ms, lambda work, ms: fit_line(work, ms)[::-1])

    @classmethod
    def _fitted(cls, configs: Sequence[LayerConfig], measured_ms: np.ndarray, fit: Fit) -> FlopsBaseline:
        work, kinds = _work(configs), np.array([c.kind for c in configs])
        ms = np.asarray(measured_ms, dtype=np.float64)
        fits = {str(kind): fit(work[kinds == kind], ms[kinds == kind]) for kind in set(kinds)}
        fits[EVERY_TYPE] = fit(work, ms)
        return cls(fits)

    def ms(self, configs: Sequence[LayerConfig]) -> np.ndarray:
        """The baseline latency of each config (at least `MIN_PREDICTED_MS`)."""
        work = _work(configs)
        out = np.empty(len(configs))
        for i, config in enumerate(configs):
            a, b = self.coefficients.get(config.kind, self.coefficients[EVERY_TYPE])
            out[i] = a + b * work[i]
        return np.maximum(out, MIN_PREDICTED_MS)

    def to_dict(self) -> dict[str, list[float]]:
        return {kind: [a, b] for kind, (a, b) in sorted(self.coefficients.items())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> FlopsBaseline:
        """Raises ValueError unless `data` maps layer types (and `EVERY_TYPE`) to [a, b]."""
        try:
            coefficients = {str(kind): (float(a), float(b)) for kind, (a, b) in data.items()}
        except (AttributeError, TypeError, ValueError) as err:
            raise ValueError(f"not a FLOPs baseline: {err}") from err
        if EVERY_TYPE not in coefficients:
            raise ValueError(f"not a FLOPs baseline: no fit over every type ({EVERY_TYPE!r})")
        return cls(coefficients)


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line (slope, intercept); through the origin when x has a single distinct value."""
    if np.unique(x).size < 2:
        return float(np.sum(x * y) / max(np.sum(x * x), 1e-300)), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def _work(configs: Sequence[LayerConfig]) -> np.ndarray:
    return np.array([float(flops(c)) for c in configs])


def _fit_relative(work: np.ndarray, ms: np.ndarray) -> tuple[float, float]:
    """Least squares of relative errors with a, b >= 0.

    A type measured at one amount of work only is priced in proportion to the work (a constant
    would price the unpruned decoder fuse like the smallest one it saw: 0.003 ms for 18 ms in a
    50-config collection); a type without work, or whose time falls as work grows, by a constant."""
    weights = 1.0 / ms
    mean = float(np.sum(weights * ms) / np.sum(weights))
    through_origin = 0.0, float(np.sum(weights**2 * ms * work) / max(np.sum((weights * work) ** 2), 1e-300))
    if np.ptp(work) == 0:
        return through_origin if work[0] > 0 else (mean, 0.0)
    design = np.stack([np.ones_like(work), work], axis=1) * weights[:, None]
    (a, b), *_ = np.linalg.lstsq(design, ms * weights, rcond=None)
    if b < 0:
        return mean, 0.0
    if a < 0:
        return through_origin
    return float(a), float(b)
