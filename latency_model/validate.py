"""Model-level validation: whole pruned variants measured end to end against the predicted sum.

A variant is its layer configs (what the predictor sees) and its exported model file (what the
device runs). Each is compiled with the device's tuning database and timed with the runner's
protocol; its prediction is the sum of the predicted layer latencies plus a constant overhead
(the graph executor's per-call cost and the kernels between layers no layer config holds). The
overhead is fitted leave-one-out, each variant's from the others' residuals, so no variant's own
measurement enters its prediction; the overhead fitted on all of them is reported alongside, also
as a share of the median variant (how much of a network its layers do not account for).

Beside it, the line a FLOPs-guided pruner assumes: ms = a x the variant's FLOPs + b, fitted
leave-one-out on the other variants' measurements in the same way. A layer predictor is worth its
collection only where it beats that line.

With an output folder, each variant's measurement is appended (fsynced) to
`measurements.jsonl` there as soon as it is taken, and a rerun reuses the measurements whose
variant, device, target, trials and protocol are the same: a crash loses at most the variant
being measured. A measurement there of the same variant name under other settings is an error,
not silently mixed in. Predictions are not stored: a rerun with another predictor of the same
device reuses every measurement.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from latency_model.drift_reference import device_drift_reference
from latency_model.baseline import MIN_PREDICTED_MS, fit_line
from latency_model.features import flops
from latency_model.jsonl import JsonLinesLog, LineKind
from latency_model.layers import LayerConfig
from latency_model.metrics import Metrics, compute_metrics, pct
from latency_model.predictor import Predictor
from latency_model.records import utc_now
from runner.device import Device
from runner.drift import DriftReference
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

log = logging.getLogger(__name__)

MEASUREMENTS, REPORT, PLOT = "measurements.jsonl", "validation.json", "validation.png"


@dataclass(frozen=True)
class Variant:
    """One pruned model: a name, its layer configs, its ONNX or .pt2 file and (for the report)
    the kept count of each group it was built from."""

    name: str
    configs: tuple[LayerConfig, ...]
    model_path: Path
    kept: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantMeasurement:
    """One variant compiled and timed on a device: a line of `measurements.jsonl`."""

    name: str
    layers: tuple[str, ...]  # the config keys of its layers, in order
    kept: Mapping[str, int]
    device_key: str
    target_preset: str
    trials: int  # per kernel the database lacked
    protocol: TimingProtocol
    median_ms: float
    run_ms: tuple[float, ...]
    database_hit_rate: float  # share of its kernels found tuned before compiling
    utc_time: str = field(default_factory=utc_now)

    @property
    def setting(self) -> tuple[Any, ...]:
        """What must match for the measurement to be reused: layers, device, target, trials,
        protocol."""
        return self.layers, self.device_key, self.target_preset, self.trials, self.protocol

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layers": list(self.layers), "kept": dict(self.kept),
                "device_key": self.device_key, "target_preset": self.target_preset,
                "trials": self.trials, "protocol": self.protocol.to_dict(),
                "median_ms": self.median_ms, "run_ms": list(self.run_ms),
                "database_hit_rate": self.database_hit_rate, "utc_time": self.utc_time}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VariantMeasurement":
        if not isinstance(data, Mapping):
            raise ValueError("a line must be a JSON object")
        return cls(name=str(data["name"]), layers=tuple(data["layers"]), kept=dict(data["kept"]),
                   device_key=data["device_key"], target_preset=data["target_preset"],
                   trials=int(data["trials"]), protocol=TimingProtocol(**data["protocol"]),
                   median_ms=float(data["median_ms"]),
                   run_ms=tuple(float(v) for v in data["run_ms"]),
                   database_hit_rate=float(data["database_hit_rate"]), utc_time=data["utc_time"])


LINE = LineKind(VariantMeasurement.from_dict, "a variant measurement",
                "`latency_model validate`")


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
    flops_predicted_ms: tuple[float, ...]  # the FLOPs line, leave-one-out
    flops_metrics: Metrics
    plot: str | None = None
    kept: tuple[Mapping[str, int], ...] = ()
    resumed: int = 0  # measurements reused from an earlier run
    setting: Mapping[str, Any] = field(default_factory=dict)  # device, target, trials, protocol

    def to_dict(self) -> dict[str, Any]:
        kept = self.kept or ({},) * len(self.names)
        return {"variants": [{"name": n, "measured_ms": m, "layer_sum_ms": s, "predicted_ms": p,
                              "database_hit_rate": h, "kept": dict(k)}
                             for n, m, s, p, h, k in zip(self.names, self.measured_ms,
                                                         self.layer_sum_ms, self.predicted_ms,
                                                         self.database_hits, kept)],
                "overhead_ms": self.overhead_ms, "overhead_fit": "mean residual; "
                "each variant's prediction uses the mean over the other variants",
                "overhead_share_of_median_variant": self.overhead_share,
                "metrics": self.metrics.to_dict(),
                "layer_sum_metrics": self.layer_sum_metrics.to_dict(),
                "flops_line": {"fit": "ms = a x FLOPs + b over the other variants (leave-one-out)",
                               "predicted_ms": list(self.flops_predicted_ms),
                               "metrics": self.flops_metrics.to_dict()},
                "plot": self.plot,
                "resumed": self.resumed, **self.setting}

    @property
    def overhead_share(self) -> float:
        """The fitted overhead over the median measured variant."""
        return self.overhead_ms / float(np.median(self.measured_ms))

    def table(self) -> str:
        """Per-variant rows, then the metrics with and without the overhead and the FLOPs line's
        (for the CLI)."""
        head = (f"{'variant':<10}{'measured ms':>13}{'layer sum ms':>14}{'predicted ms':>14}"
                f"{'db hits':>9}")
        rows = [head, "-" * len(head)]
        for name, m, s, p, h in zip(self.names, self.measured_ms, self.layer_sum_ms,
                                    self.predicted_ms, self.database_hits):
            rows.append(f"{name:<10}{m:>13.3f}{s:>14.3f}{p:>14.3f}{pct(h):>9}")
        for label, metrics in (("sum + overhead", self.metrics), ("layer sum", self.layer_sum_metrics),
                               ("FLOPs line", self.flops_metrics)):
            rows.append(f"{label}: +-5% {pct(metrics.within_5)}, +-10% "
                        f"{pct(metrics.within_10)}, RMSE {metrics.rmse_ms:.3f} ms, RMSPE "
                        f"{pct(metrics.rmspe)}, Spearman {metrics.spearman:.3f}")
        rows.append(f"overhead {self.overhead_ms:.3f} ms, {pct(self.overhead_share)} of the median variant "
                    f"(mean residual; each variant's prediction uses the others'); {self.resumed} of {len(self.names)} "
                    "measurements reused from an earlier run")
        return "\n".join(rows)


def leave_one_out_flops_line(measured: np.ndarray, variant_flops: np.ndarray) -> np.ndarray:
    """Each variant's ms from the line through the other variants' (FLOPs, ms)."""
    x, y = np.asarray(variant_flops, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    others = [np.arange(x.size) != i for i in range(x.size)]
    lines = [fit_line(x[keep], y[keep]) if keep.any() else (0.0, 0.0) for keep in others]
    return np.array([slope * x[i] + intercept for i, (slope, intercept) in enumerate(lines)])


def leave_one_out_overhead(measured: np.ndarray, layer_sum: np.ndarray) -> np.ndarray:
    """Each variant's overhead: the mean residual of the others (0 for a single variant)."""
    residual = np.asarray(measured) - np.asarray(layer_sum)
    n = residual.size
    if n < 2:
        return np.zeros(n)
    return (residual.sum() - residual) / (n - 1)


def measure_variant(variant: Variant, device: Device, preset: Any, database_dir: Path,
                    trials: int, protocol: TimingProtocol, threads: int | None = None,
                    reference: DriftReference | None = None) -> VariantMeasurement:
    """Compile (tuning `trials` trials per kernel the database lacks) and bench one variant
    (`threads`: as `collect.measure_layers`), in turns with the device's drift reference when the
    protocol has one, as the layers the predictor learnt from were timed."""
    from compile.api import compile_model
    from runner.bench import bench_batch

    with tempfile.TemporaryDirectory(prefix="edgeseg-validate-") as scratch:
        result = compile_model(Path(variant.model_path), Path(scratch) / "artifact", preset,
                               database_dir=database_dir, trials=0, trials_per_task=trials,
                               device=device, kernel_library=False)
        (bench,) = bench_batch([result.artifact], device, protocol, reference, threads)
    tasks = result.tuning.tasks
    return VariantMeasurement(
        name=variant.name, layers=tuple(c.key for c in variant.configs), kept=dict(variant.kept),
        device_key=device.key, target_preset=preset.name, trials=trials, protocol=protocol,
        median_ms=bench.timing.median_ms, run_ms=tuple(bench.timing.samples_ms),
        database_hit_rate=sum(t.had_record for t in tasks) / len(tasks) if tasks else 1.0)


def _earlier(variants: Sequence[Variant], measurements: JsonLinesLog, device: Device,
             preset: Any, trials: int,
             protocol: TimingProtocol) -> dict[str, VariantMeasurement]:
    """Measurements of these variants in the log that can be reused; conflicts are errors."""
    found = {m.name: m for m in measurements.read()}
    reusable = {}
    for variant in variants:
        earlier = found.get(variant.name)
        if earlier is None:
            continue
        wanted = (tuple(c.key for c in variant.configs), device.key, preset.name, trials,
                  protocol)
        if earlier.setting != wanted:
            raise EdgesegError(
                f"{measurements.path} holds a measurement of variant {variant.name} with other "
                f"layers or settings (device {earlier.device_key}, target "
                f"{earlier.target_preset}, trials {earlier.trials}, {earlier.protocol}).",
                "Rerun with the settings of that folder, or choose another output folder.")
        reusable[variant.name] = earlier
    return reusable


def validate_variants(predictor: Predictor, variants: Sequence[Variant], device: Device,
                      preset: Any, database_dir: Path, trials: int, protocol: TimingProtocol,
                      out_dir: Path | None = None, progress: bool = True,
                      threads: int | None = None) -> ValidationReport:
    """Compile and bench every variant; compare with the predicted sum of its layers. With
    `out_dir`: resumable (see the module doc), and the report and plot are written there.
    `threads`: as `collect.measure_layers`."""
    if not variants:
        raise EdgesegError("No variants to validate.", "Pass at least one pruned variant.")
    if len({v.name for v in variants}) != len(variants):
        raise EdgesegError("Two variants share a name.", "Give every variant its own name.")
    predictor.check_compatible(device.key, preset.name)
    measurements = JsonLinesLog(Path(out_dir) / MEASUREMENTS, LINE) if out_dir else None
    done = _earlier(variants, measurements, device, preset, trials, protocol) \
        if measurements else {}
    if done:
        log.info("reusing %d measured variants of %s", len(done), measurements.path)
    taken: list[VariantMeasurement] = []
    predictor.check_timed_alike(protocol.drift_reference, None, threads)
    reference = None
    if protocol.drift_reference and len(done) < len(variants):
        reference = device_drift_reference(device, preset, database_dir, protocol, trials)
        predictor.check_timed_alike(True, reference.nominal_ms, threads)
    with tqdm(variants, desc="validate", unit="model", disable=not progress) as bar:
        for variant in bar:
            bar.set_postfix_str(variant.name)
            measured = done.get(variant.name)
            if measured is None:
                measured = measure_variant(variant, device, preset, database_dir, trials,
                                           protocol, threads, reference)
                if measurements:
                    measurements.append_dict(measured.to_dict())
            taken.append(measured)
            log.info("%s: measured %.3f ms; %.0f%% of its kernels were in the database",
                     variant.name, measured.median_ms, 100 * measured.database_hit_rate)
    meas = np.array([m.median_ms for m in taken])
    sums = np.array([float(predictor.predict_ms(list(v.configs)).sum()) for v in variants])
    # an overhead fit can go negative on tiny models; keep predictions positive (log plots)
    predicted = np.maximum(sums + leave_one_out_overhead(meas, sums), MIN_PREDICTED_MS)
    variant_flops = np.array([sum(flops(c) for c in v.configs) for v in variants], dtype=np.float64)
    flops_line = np.maximum(leave_one_out_flops_line(meas, variant_flops), MIN_PREDICTED_MS)
    report = ValidationReport(
        names=tuple(v.name for v in variants), measured_ms=tuple(meas.tolist()),
        layer_sum_ms=tuple(sums.tolist()), predicted_ms=tuple(float(p) for p in predicted),
        overhead_ms=float(np.mean(meas - sums)),
        database_hits=tuple(m.database_hit_rate for m in taken),
        metrics=compute_metrics(predicted, meas), layer_sum_metrics=compute_metrics(sums, meas),
        flops_predicted_ms=tuple(flops_line.tolist()), flops_metrics=compute_metrics(flops_line, meas),
        kept=tuple(dict(v.kept) for v in variants), resumed=len(done),
        setting={"device_key": device.key, "target_preset": preset.name, "trials": trials,
                 "protocol": protocol.to_dict(), "predictor": str(predictor.directory),
                 "predictor_fingerprint": predictor.fingerprint})
    if out_dir is None:
        return report
    return _write(report, Path(out_dir))


def _write(report: ValidationReport, out: Path) -> ValidationReport:
    from latency_model.evaluate import scatter_plot

    out.mkdir(parents=True, exist_ok=True)
    plot = out / PLOT
    measured = np.array(report.measured_ms)
    scatter_plot(plot, measured, {"layer sum + overhead": np.array(report.predicted_ms),
                                  "layer sum": np.array(report.layer_sum_ms),
                                  "FLOPs line": np.array(report.flops_predicted_ms)},
                 np.array(["model"] * measured.size))
    report = replace(report, plot=str(plot))
    (out / REPORT).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
