"""How good a predictor is on measured layers, side by side with FLOPs as a predictor.

Metrics (see `metrics.py`) overall and per layer type, a predicted-vs-measured scatter plot
(log axes, one panel for the predictor, one for the baseline) and the baseline: latency as a
linear function of FLOPs fitted per layer type by least squares. Unless separate records are
given to fit it on, the baseline is fitted on the evaluated records themselves, which flatters
the baseline (the comparison then errs in its favour); the report says which was done.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from latency_model.baseline import FlopsBaseline
from latency_model.layers import LAYER_TYPES
from latency_model.metrics import Metrics, compute_metrics, pct
from latency_model.predictor import Predictor, dataset_from_records
from latency_model.records import MeasurementRecord

@dataclass(frozen=True)
class EvaluationReport:
    device_key: str
    target_preset: str
    overall: Metrics
    per_type: Mapping[str, Metrics]
    baseline_overall: Metrics
    baseline_per_type: Mapping[str, Metrics]
    baseline_fit: str
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_key": self.device_key, "target_preset": self.target_preset,
            "predictor": {"overall": self.overall.to_dict(),
                          "per_type": {k: m.to_dict() for k, m in self.per_type.items()}},
            "flops_baseline": {"fit": self.baseline_fit,
                               "overall": self.baseline_overall.to_dict(),
                               "per_type": {k: m.to_dict()
                                            for k, m in self.baseline_per_type.items()}},
            "plot": self.plot,
        }

    def table(self) -> str:
        """A plain-text table, predictor and FLOPs baseline side by side (for the CLI to print)."""
        head = (f"{'layer type':<14}{'n':>6}{'+-5%':>8}{'+-10%':>8}{'RMSE ms':>10}{'RMSPE':>8}"
                f"{'rho':>7} | {'FLOPs +-10%':>11}{'RMSPE':>8}{'rho':>7}")
        rows = [head, "-" * len(head)]
        items = [*self.per_type.items(), ("all", self.overall)]
        for kind, m in items:
            b = self.baseline_overall if kind == "all" else self.baseline_per_type[kind]
            rows.append(f"{kind:<14}{m.n:>6}{pct(m.within_5):>8}{pct(m.within_10):>8}"
                        f"{m.rmse_ms:>10.4f}{pct(m.rmspe):>8}{m.spearman:>7.3f} | "
                        f"{pct(b.within_10):>11}{pct(b.rmspe):>8}{b.spearman:>7.3f}")
        return "\n".join(rows)


def evaluate_predictor(predictor: Predictor, records: Sequence[MeasurementRecord],
             out_dir: str | os.PathLike | None = None,
             baseline_records: Sequence[MeasurementRecord] | None = None) -> EvaluationReport:
    """Evaluate `predictor` on `records` (from its own device and target, else EdgesegError);
    with `out_dir`, also write `evaluation.json` and `scatter.png` there."""
    data = dataset_from_records(records)
    predictor.check_compatible(data.device_key, data.target)
    configs, measured = list(data.configs), data.measured_ms
    predicted = predictor.predict_ms(configs)
    if baseline_records is not None:
        fit_data = dataset_from_records(baseline_records)
        baseline = FlopsBaseline.fit_least_squares(fit_data.configs, fit_data.measured_ms)
        fit_note = f"fitted on {len(fit_data.configs)} separate configs"
    else:
        baseline = FlopsBaseline.fit_least_squares(configs, measured)
        fit_note = "fitted in-sample on the evaluated configs (flatters the baseline)"
    base_pred = baseline.ms(configs)
    kinds = np.array([c.kind for c in configs])
    present = [k for k in LAYER_TYPES if np.any(kinds == k)]
    report = EvaluationReport(
        device_key=data.device_key, target_preset=data.target_preset,
        overall=compute_metrics(predicted, measured),
        per_type={k: compute_metrics(predicted[kinds == k], measured[kinds == k]) for k in present},
        baseline_overall=compute_metrics(base_pred, measured),
        baseline_per_type={k: compute_metrics(base_pred[kinds == k], measured[kinds == k])
                           for k in present},
        baseline_fit=fit_note,
    )
    if out_dir is None:
        return report
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = out / "scatter.png"
    scatter_plot(plot, measured, {"XGBoost predictor": predicted, "FLOPs baseline": base_pred},
                 kinds)
    report = dataclasses.replace(report, plot=str(plot))
    (out / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def scatter_plot(path: Path, measured: np.ndarray, predictions: Mapping[str, np.ndarray],
                 kinds: np.ndarray) -> None:
    """Predicted vs measured on log axes, one panel per predictor, y = x and +-10% lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(predictions), figsize=(6 * len(predictions), 5.5),
                             squeeze=False)
    lo = min(measured.min(), *(p.min() for p in predictions.values())) * 0.8
    hi = max(measured.max(), *(p.max() for p in predictions.values())) * 1.25
    line = np.array([lo, hi])
    colors = plt.get_cmap("tab20").colors  # one color per layer type (there are 11)
    for ax, (title, pred) in zip(axes[0], predictions.items()):
        for i, kind in enumerate(sorted(set(kinds))):
            rows = kinds == kind
            ax.scatter(measured[rows], pred[rows], s=10, alpha=0.7, label=str(kind),
                       color=colors[(2 * i) % 20 + (2 * i) // 20])
        ax.plot(line, line, "k-", lw=0.8)
        ax.plot(line, line * 1.1, "k--", lw=0.6)
        ax.plot(line, line * 0.9, "k--", lw=0.6)
        m = compute_metrics(pred, measured)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
               xlabel="measured latency (ms)", ylabel="predicted latency (ms)",
               title=f"{title}: {pct(m.within_10)} within +-10%, RMSPE {pct(m.rmspe)}")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
