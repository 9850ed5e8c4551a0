"""Model-level validation: whole pruned variants measured end to end against the predicted sum.

A variant is its layer configs (what the predictor sees) and its exported model file (what the
device runs). Each is compiled with the device's tuning database and timed with the runner's
protocol; its prediction is the sum of the predicted layer latencies plus a constant overhead
(the graph executor's per-call cost and the kernels between layers no layer config holds). The
overhead is fitted leave-one-out, each variant's from the others' residuals, so no variant's own
measurement enters its prediction; the overhead fitted on all of them is reported alongside.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from latency_model.evaluate import MIN_PREDICTED_MS
from latency_model.layers import LayerConfig
from latency_model.metrics import Metrics, compute_metrics
from latency_model.predictor import Predictor
from runner.device import Device
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One pruned model: a name, its layer configs and its ONNX or .pt2 file."""

    name: str
    configs: tuple[LayerConfig, ...]
    model_path: Path


@dataclass(frozen=True)
class ValidationReport:
    names: tuple[str, ...]
    measured_ms: tuple[float, ...]
    layer_sum_ms: tuple[float, ...]
    predicted_ms: tuple[float, ...]  # layer sum + leave-one-out overhead
    overhead_ms: float  # fitted on all variants
    database_hits: tuple[float, ...]  # share of each variant's kernels found tuned before tuning
    metrics: Metrics
    layer_sum_metrics: Metrics  # the bare sum, no overhead
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [{"name": n, "measured_ms": m, "layer_sum_ms": s, "predicted_ms": p,
                              "database_hit_rate": h}
                             for n, m, s, p, h in zip(self.names, self.measured_ms,
                                                      self.layer_sum_ms, self.predicted_ms,
                                                      self.database_hits)],
                "overhead_ms": self.overhead_ms, "overhead_fit": "mean residual; "
                "each variant's prediction uses the mean over the other variants",
                "metrics": self.metrics.to_dict(),
                "layer_sum_metrics": self.layer_sum_metrics.to_dict(), "plot": self.plot}


def leave_one_out_overhead(measured: np.ndarray, layer_sum: np.ndarray) -> np.ndarray:
    """Each variant's overhead: the mean residual of the others (0 for a single variant)."""
    residual = np.asarray(measured) - np.asarray(layer_sum)
    n = residual.size
    if n < 2:
        return np.zeros(n)
    return (residual.sum() - residual) / (n - 1)


def validate_variants(predictor: Predictor, variants: Sequence[Variant], device: Device,
                      preset: Any, database_dir: Path, trials: int, protocol: TimingProtocol,
                      out_dir: Path | None = None, progress: bool = True) -> ValidationReport:
    """Compile and bench every variant; compare with the predicted sum of its layers."""
    from compile.api import compile_model
    from runner.bench import bench_artifact

    if not variants:
        raise EdgesegError("No variants to validate.", "Pass at least one pruned variant.")
    predictor.check_compatible(device.key, preset.name)
    measured, layer_sum, hits = [], [], []
    for variant in tqdm(variants, desc="validate", unit="model", disable=not progress):
        with tempfile.TemporaryDirectory(prefix="edgeseg-validate-") as scratch:
            result = compile_model(Path(variant.model_path), Path(scratch) / "artifact", preset,
                                   database_dir=database_dir, trials=trials, device=device)
            bench = bench_artifact(result.artifact, device, protocol)
        measured.append(bench.timing.median_ms)
        tasks = result.tuning.tasks
        hits.append(sum(t.had_record for t in tasks) / len(tasks) if tasks else 1.0)
        layer_sum.append(float(predictor.predict_ms(list(variant.configs)).sum()))
        log.info("%s: measured %.3f ms, layer sum %.3f ms; %.0f%% of its kernels were in the "
                 "database", variant.name, measured[-1], layer_sum[-1], 100 * hits[-1])
    meas, sums = np.array(measured), np.array(layer_sum)
    # an overhead fit can go negative on tiny models; keep predictions positive (log plots)
    predicted = np.maximum(sums + leave_one_out_overhead(meas, sums), MIN_PREDICTED_MS)
    report = ValidationReport(
        names=tuple(v.name for v in variants), measured_ms=tuple(measured),
        layer_sum_ms=tuple(layer_sum), predicted_ms=tuple(float(p) for p in predicted),
        overhead_ms=float(np.mean(meas - sums)), database_hits=tuple(hits),
        metrics=compute_metrics(predicted, meas),
        layer_sum_metrics=compute_metrics(sums, meas))
    if out_dir is None:
        return report
    return _write(report, Path(out_dir))


def _write(report: ValidationReport, out: Path) -> ValidationReport:
    from dataclasses import replace

    from latency_model.evaluate import scatter_plot

    out.mkdir(parents=True, exist_ok=True)
    plot = out / "validation.png"
    measured = np.array(report.measured_ms)
    scatter_plot(plot, measured, {"layer sum + overhead": np.array(report.predicted_ms),
                                  "layer sum": np.array(report.layer_sum_ms)},
                 np.array(["model"] * measured.size))
    report = replace(report, plot=str(plot))
    (out / "validation.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
