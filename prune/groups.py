"""The prunable structures of a model: coupled channel groups traced once by torch_pruning.

`build_groups(model, example_input, unit=8)` traces the model with
`torch_pruning.DependencyGraph` (Fang et al., "DepGraph", CVPR 2023; VainF/Torch-Pruning v1.6)
and turns every dependency group into a `PruneGroup`: the channels that must be removed together
because residual additions, concatenations, q/k/v/proj coupling or normalisation tie them.
Nothing is listed per model. Each group is cut into units, the atoms a gate keeps or drops:
`unit` consecutive channels for channel groups (the alignment the latency model says pays
off), one head for attention groups (head layouts come from `prune.attention`). Attention
classes whose heads the trace cannot follow (`prune.attention.UNTRACED_HEADS`, e.g.
EfficientViT's LiteMLA) get their head group from the registry's channel lists instead, and the
traced groups inside them are dropped; their inputs and outputs stay traced, so the widths
around them are still tied by the graph.

A group is named by the module path of its leader: the attention module for heads, otherwise
the first convolution or linear layer (in `named_modules` order) whose output channels are the
group's. The budget, the latency description and `pruning.json` are keyed by these names.

Structures the method cannot mask exactly or cut safely are not gated; `GroupSet.fixed` says
which and why (they keep their full width).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from prune.attention import HeadSlice, head_layout, untraced_heads
from runner.errors import EdgesegError

log = logging.getLogger(__name__)

# Layers a group may contain (prune.gates masks the consumers' inputs and normalises LayerNorms
# over kept channels; the other producers compute each channel from that channel alone).
PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
CONSUMERS = (nn.Conv1d, nn.Conv2d, nn.Linear)

# A pruning result as data (STYLE 10): group name -> the unit indices it keeps. The one `Plan`
# of the package: selection makes them, shrink cuts them out, checkpoints save them.
Plan = dict[str, list[int]]


@dataclass(frozen=True)
class Member:
    """One module's share of a group.

    `producer`: the group owns this module's output channels (convolutions and linears whose
    rows are the group's, and the per-channel layers between them and their readers: norms,
    depthwise convolutions); otherwise the module consumes them (a convolution or linear whose
    input columns are cut with the group). `channels[i]` (module coordinates) is in unit `units[i]`.
    """

    module: str
    producer: bool
    channels: tuple[int, ...]
    units: tuple[int, ...]


@dataclass(frozen=True)
class PruneGroup:
    """Channels pruned together, cut into `num_units` units of `unit` channels (or one head)."""

    name: str
    kind: str  # "channels" or "heads"
    root: str  # module whose output channels are the group's coordinates (for torch_pruning)
    width: int  # channels of `root` in the group
    unit: int  # root channels per unit (a head's: head_dim, 3*head_dim for LiteMLA's qkv); last may be shorter
    members: tuple[Member, ...]
    traced: bool = True  # False: the graph cannot cut it; shrink cuts each member's channel list

    @property
    def num_units(self) -> int:
        return math.ceil(self.width / self.unit)

    def channels_of(self, units: list[int] | tuple[int, ...]) -> list[int]:
        """Root channels of the given units, sorted."""
        return sorted(c for u in units for c in range(u * self.unit, min((u + 1) * self.unit, self.width)))

    def channel_count(self, units: Iterable[int]) -> int:
        """len(channels_of(units)) without listing them: budget fits ask it hundreds of times a step."""
        kept = set(units)
        short = self.num_units * self.unit - self.width  # the last unit's missing channels
        return len(kept) * self.unit - (short if self.num_units - 1 in kept else 0)

    @property
    def producers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.producer)

    @property
    def consumers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.producer)


@dataclass
class GroupSet:
    """The groups of one model plus the traced graph that can cut them (single use: after a
    shrink the graph and the channel lists describe the old widths)."""

    model: nn.Module
    graph: tp.DependencyGraph
    groups: tuple[PruneGroup, ...]
    unit: int
    fixed: dict[str, str] = field(default_factory=dict)  # structure -> why it is not gated
    tied: dict[str, tuple[PruneGroup, ...]] = field(default_factory=dict)  # tied group -> the groups it cuts

    def __getitem__(self, name: str) -> PruneGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)


def build_groups(
    model: nn.Module,
    example_input: Any,
    unit: int = 8,
    prune_outputs: bool = False,
) -> GroupSet:
    """Trace `model` once and return its prunable groups.

    `prune_outputs=False` keeps every group that reaches the model's output at full width (the
    output is an interface: class logits); a bare feature backbone wants True.
    """
    if unit < 1:
        raise EdgesegError(
            f"The channel unit must be >= 1, got {unit}.", "Pass the alignment the latency model uses, e.g. 8."
        )
    was_training = model.training
    with torch.enable_grad():  # the trace follows autograd's graph
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    model.train(was_training)  # the trace leaves the model in eval mode
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}

    untraced = {n: untraced_heads(m) for n, m in model.named_modules() if untraced_heads(m) is not None}
    groups: list[PruneGroup] = []
    fixed: dict[str, str] = {}
    for tp_group in graph.get_all_groups(root_module_types=(ops.TORCH_CONV, ops.TORCH_LINEAR)):
        if _inside(graph, tp_group, names, untraced):
            continue
        described = _describe(graph, tp_group, names, order, unit, prune_outputs)
        if isinstance(described, PruneGroup):
            groups.append(described)
        else:
            fixed[described[0]] = described[1]
    for name, slices in untraced.items():
        described = _head_group(name, slices)
        if isinstance(described, PruneGroup):
            groups.append(described)
        else:
            fixed[described[0]] = described[1]
    groups.sort(key=lambda g: order[g.name])
    for name, reason in fixed.items():
        log.debug("not gated: %s (%s)", name, reason)
    log.info("%d prunable groups, %d structures kept whole", len(groups), len(fixed))
    return GroupSet(model=model, graph=graph, groups=tuple(groups), unit=unit, fixed=fixed)


def _inside(graph, tp_group, names, untraced: dict[str, tuple[HeadSlice, ...]]) -> bool:
    """Whether every layer producing the group's channels lies inside one untraced attention."""
    produced = [names[it.dep.target.module] for it in tp_group
                if it.dep.target.module in names and graph.is_out_channel_pruning_fn(it.dep.handler)]
    return bool(produced) and any(all(p.startswith(f"{a}.") for p in produced) for a in untraced)


def _head_group(name: str, slices: tuple[HeadSlice, ...]) -> PruneGroup | tuple[str, str]:
    """The head group of an untraced attention from its registry slices (the first is the root)."""
    heads, root = len(slices[0].channels), slices[0]
    if heads < 2:
        return name, "a single unit (one head)"
    members = tuple(
        Member(module=_join(name, s.layer), producer=s.producer,
               channels=tuple(c for head in s.channels for c in head),
               units=tuple(h for h, head in enumerate(s.channels) for _ in head))
        for s in slices
    )
    unit = len(root.channels[0])
    return PruneGroup(name=name, kind="heads", root=_join(name, root.layer), width=heads * unit, unit=unit,
                 members=members, traced=False)


def _describe(graph, tp_group, names, order, unit, prune_outputs) -> PruneGroup | tuple[str, str]:
    """A PruneGroup for one torch_pruning group, or (leader name, reason it stays whole)."""
    producers = [
        it.dep.target.module
        for it in tp_group
        if isinstance(it.dep.target.module, nn.Module) and graph.is_out_channel_pruning_fn(it.dep.handler)
    ]
    layers = [m for m in producers if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m in names]
    if not layers:
        return names.get(tp_group[0].dep.target.module, "?"), "no convolution or linear produces it"
    leader = min(layers, key=lambda m: order[names[m]])
    name, kind, group_unit = names[leader], "channels", unit
    for module in layers:
        parent_name = names[module].rpartition(".")[0]
        parent = graph.model.get_submodule(parent_name) if parent_name else None
        layout = head_layout(parent) if parent is not None else None
        if layout is not None and names[module] == _join(parent_name, layout.query):
            leader, name, kind = module, parent_name, "heads"
            group_unit = int(getattr(parent, layout.head_dim))
            break

    width = graph.get_out_channels(leader)
    pruner = graph.get_pruner_of_module(leader)
    rooted = graph.get_pruning_group(leader, pruner.prune_out_channels, list(range(width)))
    members: list[Member] = []
    for item in rooted:
        target = item.dep.target
        producer = graph.is_out_channel_pruning_fn(item.dep.handler)
        # A model output is either torch_pruning's output node or a layer whose result nothing consumes.
        if target.type == ops.OPTYPE.OUTPUT or (producer and not target.outputs):
            if not prune_outputs:
                return name, "reaches the model output"
            if target.type == ops.OPTYPE.OUTPUT:
                continue
        if target.type == ops.OPTYPE.PARAMETER:
            return name, "couples a bare nn.Parameter"
        module = target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue  # reshapes, concatenations and other functional ops carry no weights
        problem = _unsupported(graph, module, producer, item.idxs)
        if problem:
            return name, f"{names[module]}: {problem}"
        members.append(
            Member(
                module=names[module],
                producer=producer,
                channels=tuple(int(i) for i in item.idxs),
                units=tuple(int(r) // group_unit for r in item.root_idxs),
            )
        )
    group = PruneGroup(name=name, kind=kind, root=names[leader], width=width, unit=group_unit, members=tuple(members))
    if group.num_units < 2:
        return name, f"a single unit (width {width}, unit {group_unit})"
    return group


def _unsupported(graph, module: nn.Module, producer: bool, idxs) -> str:
    """Why this member cannot be masked or cut exactly, or '' when it can."""
    size = graph.get_out_channels(module) if producer else graph.get_in_channels(module)
    if size is not None and any(not 0 <= int(i) < size for i in idxs):
        return "torch_pruning mapped channels outside the layer (an untraceable reshape)"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.transposed:
            return "transposed convolution"
        if module.groups > 1 and module.groups != module.out_channels:
            return "grouped convolution"
    if producer and not isinstance(module, PRODUCERS):
        return f"no exact mask for {type(module).__name__} producing the channels"
    if not producer and not isinstance(module, CONSUMERS):
        return f"no input mask for {type(module).__name__} reading the channels"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return "LayerNorm over more than one dimension"
    return ""


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def tie(group_set: GroupSet, names: list[str] | tuple[str, ...]) -> GroupSet:
    """`group_set` with the groups `names` (same kind, width and unit) replaced by one group
    named `names[0]` whose unit k is unit k of each: one gate keeps or drops them together
    (e.g. decoder projections that one concatenation prices with a single width)."""
    parts = [group_set[n] for n in names]
    first = parts[0]
    if len(parts) < 2 or any((p.kind, p.width, p.unit) != (first.kind, first.width, first.unit) for p in parts):
        raise EdgesegError(f"Groups {list(names)} cannot be tied: they need the same kind, width and unit.",
                           "Tie groups of equal layout only.")
    merged = PruneGroup(name=first.name, kind=first.kind, root=first.root, width=first.width, unit=first.unit,
                   members=tuple(m for p in parts for m in p.members), traced=first.traced)
    groups = tuple(merged if g.name == first.name else g for g in group_set.groups if g.name not in names[1:])
    return GroupSet(model=group_set.model, graph=group_set.graph, groups=groups, unit=group_set.unit,
                    fixed=dict(group_set.fixed), tied={**group_set.tied, first.name: tuple(parts)})
