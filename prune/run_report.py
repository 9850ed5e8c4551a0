"""What a run shows and leaves behind: progress bars while it trains, and at the end
`pruning.json`, `model.onnx`, `curves.png` (and, for `dense`, `weights.safetensors`; a bi-level
search also leaves `search.pt`, `prune.reuse_search`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn
from tqdm import tqdm

from latency_model.budget import LatencyBudget
from prune.export import export_onnx
from prune.groups import Plan, PruneGroup
from prune.models import save_weights
from prune.plots import plot_curves
from prune.run_state import RunState
from prune.selection import kept_counts
from prune.settings import DENSE, PruneSettings

REPORT, ONNX, CURVES, WEIGHTS = "pruning.json", "model.onnx", "curves.png", "weights.safetensors"


def progress_bar(settings: PruneSettings, phase: str, epoch: int, steps: int, show: bool):
    return tqdm(range(steps), desc=f"{phase} {epoch + 1}/{settings.epochs}", disable=not show, leave=False)


def show_step(bar, loss: float, ms: float, epochs: Sequence[Mapping[str, Any]]) -> None:
    """The bar's postfix: the step's loss, the last epoch's mIoU, the predicted latency."""
    miou = epochs[-1]["miou"] if epochs else float("nan")
    bar.set_postfix(loss=f"{loss:.3f}", mIoU=f"{miou:.3f}", ms=f"{ms:.4g}")


def build_report(settings: PruneSettings, record: RunState, budget: LatencyBudget, groups: Sequence[PruneGroup],
                 plan: Plan, target_ms: float | None, num_classes: int,
                 deployed_on: Mapping[str, str | None]) -> dict[str, Any]:
    """The contents of `pruning.json`."""
    s = settings
    counts = kept_counts(groups, plan)
    return {
        "model": s.model, "input_size": s.input_size, "unit": s.unit, "method": s.method, "seed": s.seed,
        "data": s.data, "num_classes": num_classes, "predictor": s.predictor,
        "device": deployed_on["device"], "target": deployed_on["target"],
        "budget_ms": target_ms, "predicted_ms": budget.latency_ms(counts), "latency_scale": s.latency_scale,
        "unpruned_predicted_ms": budget.full_latency_ms(),
        "min_predicted_ms": budget.min_latency_ms(),
        "miou": record.epochs[-1]["miou"],
        "kept_units": {name: sorted(int(u) for u in units) for name, units in plan.items()},
        "kept_counts": counts, "full_counts": {g.name: g.full for g in budget.description.groups},
        "searched_ms": record.searched_ms, "dropped_to_fit": record.dropped_to_fit,
        "added_to_fit": record.added_to_fit, "epochs": record.epochs, "settings": s.to_dict(),
    }


def write_outputs(out: Path, model: nn.Module, settings: PruneSettings, report: Mapping[str, Any],
                  steps: Sequence[Mapping[str, Any]], target_ms: float | None) -> None:
    """The ONNX export, the dense weights, `pruning.json` (atomically) and the curves."""
    export_onnx(model, settings.input_size, out / ONNX)
    if settings.method == DENSE:
        save_weights(model, out / WEIGHTS)
    tmp = out / (REPORT + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / REPORT)
    plot_curves(steps, target_ms, out / CURVES)


def format_ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"
