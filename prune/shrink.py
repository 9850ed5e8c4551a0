"""Cut the masked-out units out of a network: a dense, smaller network of the same modules.

The replay data is a plan `{group name: kept unit indices}` (what `Gates.kept_units()` returns
and `pruning.json` carries). `shrink` removes every other unit's channels with
torch_pruning's dependency graph, which edits each coupled layer in place (weights, biases,
norm statistics, `in_features`/`out_channels`...), then sets the attributes forward code reads
(`num_heads`) and swaps in the width-agnostic forward of registered attention modules
(`prune.attention`). Groups the graph cannot cut (`PruneGroup.traced` False: the heads of
EfficientViT's LiteMLA) are cut member by member from their channel lists: output channels of
producers (grouped convolutions lose whole groups), input channels of consumers. Groups missing
from the plan keep every unit.

`apply_plan(fresh_model, example_input, plan, unit)` replays a plan on a freshly built model:
tracing the same architecture yields the same group names. Plans made on tied groups
(`pruning.json` of `python -m prune`, whose decoder projections are tied) replay with
`shrink(prune.describe.build_priced_groups(model, input_size, unit), plan)` instead.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from prune.attention import adopt_pruned_forwards, head_layout
from prune.groups import GroupSet, Plan, PruneGroup, build_groups
from runner.errors import EdgesegError

log = logging.getLogger(__name__)


def check_plan(group_set: GroupSet, plan: Plan) -> None:
    """Raise EdgesegError unless every plan entry names a group and valid, non-empty units."""
    known = set(group_set.names)
    for name, units in plan.items():
        if name not in known:
            raise EdgesegError(
                f"The pruning plan names group {name!r}, which this model does not have.",
                "Replay the plan on the same architecture, traced with the same unit and prune_outputs.",
            )
        group = group_set[name]
        if not units:
            raise EdgesegError(f"The pruning plan keeps no unit of group {name}.", "Keep at least one unit per group.")
        bad = [u for u in units if not 0 <= int(u) < group.num_units]
        if bad:
            raise EdgesegError(
                f"The pruning plan keeps units {bad} of group {name}, which has {group.num_units} units.",
                "Replay the plan with the unit size it was made with.",
            )


def shrink(group_set: GroupSet, plan: Plan) -> nn.Module:
    """Remove the units `plan` does not keep from `group_set.model` (in place) and return it.

    Detach any gates first: the hooks refer to the old widths.
    """
    check_plan(group_set, plan)
    model, graph = group_set.model, group_set.graph
    modules = dict(model.named_modules())
    for group in group_set.groups:
        if group.name not in plan:
            continue
        kept = sorted({int(u) for u in plan[group.name]})
        removed = group.channels_of([u for u in range(group.num_units) if u not in set(kept)])
        if not removed:
            continue
        if not group.traced:
            _cut_members(modules, group, set(kept))
        for part in group_set.tied.get(group.name, (group,)) if group.traced else ():  # each part of a tie
            root = modules[part.root]
            pruner = graph.get_pruner_of_module(root)
            graph.get_pruning_group(root, pruner.prune_out_channels, removed).prune(record_history=False)
        layout = head_layout(modules[group.name]) if group.kind == "heads" else None
        if layout is not None:  # LiteMLA's forward reads its head count from the widths
            setattr(modules[group.name], layout.num_heads, len(kept))
        log.debug("%s: kept %d of %d units", group.name, len(kept), group.num_units)
    adopt_pruned_forwards(model)
    return model


def _cut_members(modules: dict[str, nn.Module], group: PruneGroup, kept: set[int]) -> None:
    """Keep the channels of the kept units in every member of an untraced group."""
    for member in group.members:
        layer = modules[member.module]
        index = torch.tensor(sorted(c for c, u in zip(member.channels, member.units) if u in kept))
        if member.producer:
            _keep_outputs(layer, index)
        else:
            _keep_inputs(layer, index)


def _keep_outputs(layer: nn.Module, index: torch.Tensor) -> None:
    """Keep output channels `index` of a convolution (whole groups of a grouped one) or a BatchNorm."""
    if isinstance(layer, nn.BatchNorm2d):
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(layer, name)
            if tensor is not None:
                kept = tensor.data.index_select(0, index)
                setattr(layer, name, nn.Parameter(kept) if isinstance(tensor, nn.Parameter) else kept)
        layer.num_features = len(index)
        return
    if layer.groups > 1:  # a grouped convolution keeps whole groups, each with its own inputs
        per_group = layer.out_channels // layer.groups
        if len(index) % per_group or not bool((index.view(-1, per_group) // per_group).diff(dim=1).eq(0).all()):
            raise ValueError(f"channels {index.tolist()} are not whole groups of {layer}")
        groups = len(index) // per_group
        layer.in_channels = layer.in_channels // layer.groups * groups
        layer.groups = groups
    layer.out_channels = len(index)
    layer.weight = nn.Parameter(layer.weight.data.index_select(0, index))
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data.index_select(0, index))


def _keep_inputs(layer: nn.Conv2d, index: torch.Tensor) -> None:
    """Keep input channels `index` of an ungrouped convolution."""
    layer.weight = nn.Parameter(layer.weight.data.index_select(1, index))
    layer.in_channels = len(index)


def apply_plan(model: nn.Module, example_input: Any, plan: Plan, unit: int, prune_outputs: bool = False) -> nn.Module:
    """Trace a fresh `model` and shrink it by a saved plan (made with the same `unit`)."""
    return shrink(build_groups(model, example_input, unit=unit, prune_outputs=prune_outputs), plan)
