"""Model descriptions: the bridge between a model's prunable structures and layer configs.

A `Group` is one prunable structure (an output-channel group, the heads of one attention, an
MLP hidden width, the decoder width) with the counts it may keep, its grid. A grid holds the
full count and, typically, the multiples of the channel alignment that pays off on the device
(`Group.aligned`), so that the predictor is asked only about shapes collected on the grid.

A `LayerSlot` is one layer of the model: the unpruned layer config (`template`) and which of
its integer fields take the kept count of which group (`bindings`). Several fields may bind
one group (a residual Mix-FFN's cin and cout both follow the stage width). A
`ModelDescription` lists groups and slots; `config_at(kept)` gives the layer configs of the
pruned model. This module knows layers, not models: the description of a concrete model is
written beside the model code (in `prune/`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from latency_model.layers import LayerConfig, int_fields, layer_from_dict
from runner.errors import EdgesegError


def _bad_description(problem: str) -> EdgesegError:
    return EdgesegError(problem, "Fix the model description (its groups, grids and bindings).")


@dataclass(frozen=True)
class Group:
    """A prunable structure: `full` units when unpruned, kept counts allowed by `grid`."""

    name: str
    full: int
    grid: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(self.grid))
        ok = (bool(self.grid) and all(isinstance(v, int) and v >= 1 for v in self.grid)
              and list(self.grid) == sorted(set(self.grid)) and self.grid[-1] == self.full)
        if not self.name or not ok:
            raise _bad_description(
                f"Group {self.name!r}: the grid {self.grid} must be strictly increasing positive "
                f"integers ending at the full count {self.full}.")

    @classmethod
    def aligned(cls, name: str, full: int, step: int) -> "Group":
        """Multiples of `step` up to `full`, plus `full` itself (e.g. 100 by 16: 16..96, 100)."""
        if step < 1:
            raise _bad_description(f"Group {name!r}: the alignment step must be >= 1, got {step}.")
        grid = sorted(set(range(step, full + 1, step)) | {full})
        return cls(name, full, tuple(grid))

    def index(self, kept: int) -> int:
        """Position of `kept` on the grid; a count off the grid is an error."""
        try:
            return self.grid.index(kept)
        except ValueError:
            raise EdgesegError(
                f"Group {self.name!r} cannot keep {kept}: allowed counts are {self.grid}.",
                "Round the kept count to the group's grid.") from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "full": self.full, "grid": list(self.grid)}


@dataclass(frozen=True)
class LayerSlot:
    """One layer of the model: its unpruned config and field -> group bindings."""

    template: LayerConfig
    bindings: Mapping[str, str]
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bindings", dict(sorted(dict(self.bindings).items())))
        bindable = int_fields(self.template)
        wrong = [f for f in self.bindings if f not in bindable]
        if wrong:
            raise _bad_description(
                f"Slot {self.label}: fields {wrong} cannot be bound; a {self.template.kind} "
                f"config has integer fields {bindable}.")

    @property
    def label(self) -> str:
        return self.name or self.template.key

    @property
    def groups(self) -> tuple[str, ...]:
        """The distinct groups this slot depends on (its table's axes), in a fixed order."""
        return tuple(dict.fromkeys(self.bindings.values()))

    def config(self, kept: Mapping[str, int]) -> LayerConfig:
        """The layer config with each bound field set to its group's kept count."""
        return dataclasses.replace(self.template,
                                   **{f: kept[g] for f, g in self.bindings.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "template": self.template.to_dict(),
                "bindings": dict(self.bindings)}


@dataclass(frozen=True)
class ModelDescription:
    """All prunable groups of a model and all its layers (bound or constant)."""

    groups: tuple[Group, ...]
    slots: tuple[LayerSlot, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "slots", tuple(self.slots))
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise _bad_description(f"Group names must be unique, got {names}.")
        by_name = dict(zip(names, self.groups))
        for slot in self.slots:
            for field, group in slot.bindings.items():
                if group not in by_name:
                    raise _bad_description(f"Slot {slot.label} binds {field} to unknown group "
                                           f"{group!r}.")
                if getattr(slot.template, field) != by_name[group].full:
                    raise _bad_description(
                        f"Slot {slot.label}: template {field}={getattr(slot.template, field)} "
                        f"differs from the full count {by_name[group].full} of group {group!r}.")
        self.config_at(self.minimal_kept())  # every slot must be a valid layer when smallest

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise EdgesegError(f"No group {name!r} in this description.",
                           f"Use one of: {', '.join(g.name for g in self.groups)}.")

    def resolve(self, kept: Mapping[str, int]) -> dict[str, int]:
        """Complete `kept` with full counts for unnamed groups; check names and grid values."""
        known = {g.name for g in self.groups}
        unknown = sorted(set(kept) - known)
        if unknown:
            raise EdgesegError(f"Unknown groups {unknown} in the kept counts.",
                               f"Use group names of the description: {', '.join(sorted(known))}.")
        out = {}
        for g in self.groups:
            value = int(kept.get(g.name, g.full))
            g.index(value)
            out[g.name] = value
        return out

    def config_at(self, kept: Mapping[str, int]) -> list[LayerConfig]:
        """Layer configs of the model keeping `kept[group]` units (missing groups: full)."""
        resolved = self.resolve(kept)
        return [slot.config(resolved) for slot in self.slots]

    def full(self) -> list[LayerConfig]:
        return self.config_at({})

    def full_kept(self) -> dict[str, int]:
        return {g.name: g.full for g in self.groups}

    def minimal_kept(self) -> dict[str, int]:
        """Every group at its smallest grid entry: the smallest network the grid allows."""
        return {g.name: g.grid[0] for g in self.groups}

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [g.to_dict() for g in self.groups],
                "slots": [s.to_dict() for s in self.slots]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelDescription":
        try:
            groups = tuple(Group(g["name"], g["full"], tuple(g["grid"])) for g in data["groups"])
            slots = tuple(LayerSlot(layer_from_dict(s["template"]), s["bindings"],
                                    s.get("name", "")) for s in data["slots"])
        except (KeyError, TypeError) as err:
            raise _bad_description(f"A model description lacks a field or has a wrong one: "
                                   f"{err!r}.") from err
        return cls(groups, slots)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelDescription":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise EdgesegError(f"Cannot read a model description from {path}: {err}.",
                               "Point to a JSON file written by ModelDescription.save.") from err
        return cls.from_dict(data)
