"""The latency budget of a run: the cost table (a device predictor, checked against the run's
model, size, class count, device and target, or the FLOPs table), the model's priced groups, and whether the
budget can be met at all."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from torch import nn

from latency_model.budget import LatencyBudget, LatencyTableSource
from latency_model.layers import LayerConfig
from prune.data import data_classes
from prune.describe import build_priced_groups, check_describable, describe_network
from prune.flops_cost import FlopsCost
from prune.groups import GroupSet
from prune.settings import FLOPS, PruneSettings
from runner.errors import EdgesegError


class ScaledCost:
    """A cost table whose every latency is multiplied by `scale` (`PruneSettings.latency_scale`);
    the table's other attributes (device key, target preset) are its own."""

    def __init__(self, cost: LatencyTableSource, scale: float) -> None:
        self.cost, self.scale = cost, float(scale)

    def predict_ms(self, configs: Sequence[LayerConfig]) -> np.ndarray:
        return self.scale * np.asarray(self.cost.predict_ms(configs), dtype=np.float64)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["cost"], name)


def load_cost(settings: PruneSettings) -> LatencyTableSource:
    """The FLOPs table, or the predictor folder's predictor (it must fit the model and size),
    times the settings' latency scale."""
    if settings.predictor == FLOPS:
        cost: LatencyTableSource = FlopsCost()
    else:
        from latency_model.predictor import Predictor

        cost = Predictor.load(settings.predictor)
        check_predictor_fits(cost.manifest, settings)
        if settings.device is not None or settings.target is not None:
            cost.check_compatible(settings.device or cost.device_key, settings.target or cost.target_preset)
    return cost if settings.latency_scale == 1 else ScaledCost(cost, settings.latency_scale)


def build_budget(settings: PruneSettings, model: nn.Module,
                 cost: LatencyTableSource | None = None) -> tuple[GroupSet, LatencyBudget]:
    """`model`'s traced groups and its latency budget under `cost` (default: the settings' predictor
    or FLOPs table). Its groups to gate: `prunable_groups(group_set, budget.description)`."""
    check_describable(model, settings.model)
    group_set = build_priced_groups(model, settings.input_size, settings.unit)
    return group_set, LatencyBudget(describe_network(model, group_set, settings.input_size), cost or load_cost(settings))


def deployment(settings: PruneSettings, cost: LatencyTableSource) -> dict[str, str | None]:
    """The device key and target preset the budget's latencies are for (a device predictor's own,
    or the ones the settings name), recorded in pruning.json for `python -m compile` to check."""
    return {"device": settings.device or getattr(cost, "device_key", None),
            "target": settings.target or getattr(cost, "target_preset", None)}


def check_predictor_fits(manifest: Mapping[str, Any], settings: PruneSettings) -> None:
    """Refuse a predictor whose manifest names another model, input size or class count (the
    classifier the budget prices); manifests that name none are accepted: the predictor knows
    layers, and the budget asks it only about layers."""
    ours = {"model": settings.model, "input_size": settings.input_size,
            "num_classes": data_classes(settings.data, settings.num_classes)}
    for key, value in ours.items():
        theirs = manifest.get(key)
        if theirs is not None and theirs != value:
            raise EdgesegError(f"The predictor in {settings.predictor} was made for {key} {theirs!r}, not {value!r}.",
                               f"Use a predictor collected for {settings.model} at {settings.input_size} px with "
                               f"{ours['num_classes']} classes, or collect one: python -m latency_model collect "
                               f"--model {settings.model} --input-size {settings.input_size} "
                               f"--classes {ours['num_classes']}, then train.")


def check_feasible(budget: LatencyBudget, budget_ms: float) -> None:
    smallest = budget.min_latency_ms()
    if budget_ms < smallest:
        raise EdgesegError(
            f"The budget {budget_ms:.4g} ms is below the smallest reachable latency {smallest:.4g} ms "
            f"(every group at its smallest width; unpruned: {budget.full_latency_ms():.4g} ms).",
            f"Pass a budget of at least {smallest:.4g} ms (or a lower --fps).")
