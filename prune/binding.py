"""Binding layer-config fields to the pruner's groups: the shared piece of every backbone walker.

A walker (`prune.describe` for pvt_v2, `prune.describe_efficientvit` for EfficientViT) reads a
layer's widths from its modules and asks the `Binder` which `GroupSet` group owns each width;
the answer becomes a `LayerSlot` binding, and the group a description `Group` with its grid.
"""

from __future__ import annotations

from torch import nn

from latency_model.description import Group, LayerSlot
from latency_model.layers import LayerConfig
from prune.groups import GroupSet, PruneGroup


class Binder:
    """Finds the group that owns a module's output width and records it as a description Group."""

    def __init__(self, model: nn.Module, group_set: GroupSet) -> None:
        self.modules = {m: n for n, m in model.named_modules()}
        self.owner: dict[str, PruneGroup] = {}
        for group in group_set.groups:
            if group.kind == "heads":
                self.owner[group.name] = group
                continue
            for member in group.producers:
                self.owner.setdefault(member.module, group)
        self.groups: dict[str, Group] = {}

    def channels(self, module: nn.Module, width: int) -> str | None:
        """The channel group owning all `width` output channels of `module`, if any."""
        group = self.owner.get(self.modules[module])
        if group is None or group.kind != "channels" or group.width != width:
            return None
        if group.width % group.unit:
            return None  # a short last unit cannot be priced exactly (budget needs equal units)
        self.groups.setdefault(group.name, Group.aligned(group.name, group.width, group.unit))
        return group.name

    def heads(self, attention: nn.Module, num_heads: int) -> str | None:
        """The head group of `attention` when it has `num_heads` units, if any."""
        group = self.owner.get(self.modules[attention])
        if group is None or group.kind != "heads" or group.num_units != num_heads:
            return None
        self.groups.setdefault(group.name, Group(group.name, num_heads, tuple(range(1, num_heads + 1))))
        return group.name


def slot(template: LayerConfig, name: str, **bindings: str | None) -> LayerSlot:
    """A slot binding the given fields; fields bound to None (no group owns them) stay constant."""
    return LayerSlot(template, {f: g for f, g in bindings.items() if g is not None}, name)
