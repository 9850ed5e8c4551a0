"""The differentiable latency budget the pruner optimises against (FBNet/ProxylessNAS style).

Once, at construction, the predictor fills one table per layer slot over the product of the
grids of the groups the slot binds (one batched predictor call for every cell of every slot).
The expected latency under independent kept-count distributions of the groups is then exact
and cheap: for a slot binding groups a and b it is `sum_ij T[i, j] p_a[i] p_b[j]`, bilinear in
the input and output distributions. Slots over the same groups are summed into one table first
(expectation is linear), so an evaluation costs one small contraction per distinct group set.

`kept_count_distribution` turns per-unit keep probabilities (or soft gates in [0, 1]) into the
exact distribution of the number of kept units (Poisson-binomial) on a group's grid. Kept units
k map to the smallest grid entry >= k * unit: exact when the grid is made of multiples of the
unit, conservative otherwise. Zero kept units maps to the smallest grid entry: a layer never
vanishes, the pruner keeps at least that many units (the top-scored ones) of every group.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch

from latency_model.description import ModelDescription
from latency_model.layers import LayerConfig
from runner.errors import EdgesegError

log = logging.getLogger(__name__)

MAX_CELLS = 2_000_000


class LatencyTableSource(Protocol):
    """What the budget needs of a predictor (`predictor.Predictor` is one)."""

    def predict_ms(self, configs: Sequence[LayerConfig]) -> np.ndarray: ...


def poisson_binomial(probs: torch.Tensor) -> torch.Tensor:
    """P(K = k), k = 0..n, for K the number of successes of independent Bernoulli(probs[i]).

    Multiplies the generating polynomials (1 - p + p z) pairwise in a tree (log2(n) batched
    products instead of the n sequential steps of the usual DP): exact and differentiable.
    """
    if probs.ndim != 1 or probs.numel() == 0:
        raise ValueError(f"probs must be a non-empty 1-d tensor, got shape {tuple(probs.shape)}")
    n = probs.numel()
    polys = torch.stack([1 - probs, probs], dim=1)
    while polys.shape[0] > 1:
        if polys.shape[0] % 2:
            one = torch.zeros_like(polys[:1])
            one[0, 0] = 1
            polys = torch.cat([polys, one])
        a, b = polys[0::2], polys[1::2]
        m, length = a.shape
        outer = (a[:, :, None] * b[:, None, :]).reshape(m, -1)
        polys = torch.zeros(m, 2 * length - 1, dtype=polys.dtype, device=polys.device) \
            .index_add(1, _antidiagonals(length, polys.device), outer)[:, : n + 1]
    return polys[0]


@functools.lru_cache(maxsize=64)
def _antidiagonals(length: int, device: torch.device) -> torch.Tensor:
    """i + j for every (i, j) of a length x length product: where a coefficient product lands."""
    i = torch.arange(length, device=device)
    return (i[:, None] + i[None, :]).reshape(-1)


@functools.lru_cache(maxsize=256)
def _grid_index(units: int, grid: tuple[int, ...]) -> torch.Tensor:
    full = grid[-1]
    if full % units:
        raise EdgesegError(
            f"{units} units cannot tile a group of {full}: each unit must be the same size.",
            "Give one keep probability per unit, with the number of units dividing the full count.")
    size = full // units
    grid_arr = np.asarray(grid)
    return torch.as_tensor(np.searchsorted(grid_arr, np.arange(units + 1) * size, side="left"))


def kept_count_distribution(unit_probs: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Distribution over `grid` of the kept count, from independent per-unit keep probabilities.

    With n units tiling the full count `grid[-1]`, k kept units are k * grid[-1] / n counts,
    mapped to the smallest grid entry >= that; 0 kept units maps to `grid[0]` (see module doc).
    """
    index = _grid_index(int(unit_probs.numel()), tuple(int(g) for g in grid))
    pk = poisson_binomial(unit_probs)
    out = torch.zeros(len(grid), dtype=pk.dtype, device=pk.device)
    return out.index_add(0, index.to(pk.device), pk)


class LatencyBudget:
    """Expected model latency (ms) as a differentiable function of kept-count distributions."""

    def __init__(self, description: ModelDescription, predictor: LatencyTableSource) -> None:
        self.description = description
        self._groups = {g.name: g for g in description.groups}
        self._merged = self._merge(self._fill(predictor))
        self._prepared: dict[tuple[torch.dtype, torch.device], list] = {}
        self._grid_position = {g.name: {value: i for i, value in enumerate(g.grid)} for g in description.groups}

    def _axes(self) -> list[tuple[str, ...]]:
        return [slot.groups for slot in self.description.slots]

    def _fill(self, predictor: LatencyTableSource) -> list[np.ndarray]:
        cells_per_slot = []
        for slot, axes in zip(self.description.slots, self._axes()):
            grids = [self._groups[g].grid for g in axes]
            cells_per_slot.append([slot.config(dict(zip(axes, values)))
                                   for values in itertools.product(*grids)])
        total = sum(len(c) for c in cells_per_slot)
        if total > MAX_CELLS:
            raise EdgesegError(f"The latency tables would have {total} cells (max {MAX_CELLS}).",
                               "Use coarser grids (a larger alignment step) in the description.")
        unique = list({c.key: c for cells in cells_per_slot for c in cells}.values())
        log.info("filling latency tables: %d cells, %d distinct layer configs", total, len(unique))
        predicted = dict(zip((c.key for c in unique), predictor.predict_ms(unique)))
        return [np.array([predicted[c.key] for c in cells], dtype=np.float64)
                .reshape([len(self._groups[g].grid) for g in axes])
                for cells, axes in zip(cells_per_slot, self._axes())]

    def _merge(self, tables: list[np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
        """Sum the tables of slots over the same groups (axes sorted by group name)."""
        merged: dict[tuple[str, ...], np.ndarray] = {}
        for table, axes in zip(tables, self._axes()):
            order = sorted(range(len(axes)), key=lambda i: axes[i])
            key = tuple(axes[i] for i in order)
            t = np.transpose(table, order) if axes else table
            merged[key] = merged[key] + t if key in merged else t.copy()
        return merged

    def _prepare(self, dtype: torch.dtype, device: torch.device) -> list:
        return [(axes, torch.as_tensor(table, dtype=dtype, device=device))
                for axes, table in self._merged.items()]

    def expected_ms(self, dists: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Expected latency (ms, a 0-d tensor) with group g's kept count distributed as
        `dists[g]` over its grid; groups left out are unpruned. Differentiable in `dists`."""
        self._check_names(dists, "distributions")
        ref = next(iter(dists.values())) if dists else torch.zeros((), dtype=torch.float64)
        key = (ref.dtype, ref.device)
        if key not in self._prepared:
            self._prepared[key] = self._prepare(*key)
        total = torch.zeros((), dtype=ref.dtype, device=ref.device)
        for axes, table in self._prepared[key]:
            for group in reversed(axes):  # contract the last axis with its distribution
                table = table @ self._dist(dists, group, ref)
            total = total + table
        return total

    def expected_ms_from_probs(self, unit_probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`expected_ms` with each group's distribution made from per-unit keep probabilities
        (or soft gates) by `kept_count_distribution`."""
        self._check_names(unit_probs, "keep probabilities")
        return self.expected_ms({g: kept_count_distribution(p, self._groups[g].grid)
                                 for g, p in unit_probs.items()})

    def _check_names(self, names: Mapping[str, torch.Tensor], what: str) -> None:
        unknown = set(names) - set(self._groups)
        if unknown:
            raise EdgesegError(f"Unknown groups {sorted(unknown)} in the {what}.",
                               f"Use groups of the description: {', '.join(self._groups)}.")

    def _dist(self, dists: Mapping[str, torch.Tensor], group: str,
              ref: torch.Tensor) -> torch.Tensor:
        size = len(self._groups[group].grid)
        if group not in dists:
            one_hot = torch.zeros(size, dtype=ref.dtype, device=ref.device)
            one_hot[-1] = 1
            return one_hot
        dist = dists[group]
        if dist.shape != (size,):
            raise EdgesegError(f"The distribution of group {group!r} has shape "
                               f"{tuple(dist.shape)}, its grid has {size} entries.",
                               "Build it with kept_count_distribution(unit_probs, group.grid).")
        return dist

    def latency_ms(self, kept: Mapping[str, int]) -> float:
        """Predicted latency (ms) of a hard configuration (groups left out are unpruned)."""
        return self.tally(kept).ms

    def tally(self, kept: Mapping[str, int]) -> "LatencyTally":
        """`kept`'s predicted latency, to be changed one group at a time (see `LatencyTally`)."""
        resolved = self.description.resolve(kept)
        return LatencyTally({name: self._grid_position[name][count] for name, count in resolved.items()},
                            self._merged, self._grid_position)

    def min_latency_ms(self) -> float:
        """Latency of the smallest network the grid allows (every group at its smallest entry):
        the floor under which the pruner should reject a budget as infeasible."""
        return self.latency_ms(self.description.minimal_kept())

    def full_latency_ms(self) -> float:
        return self.latency_ms(self.description.full_kept())


class LatencyTally:
    """The predicted latency of a hard configuration, changed one group at a time.

    A projection's fill asks, for each of hundreds of units a step, whether the network with that
    unit back still fits: only the tables of the unit's group change, so only those are read
    again. The total is `math.fsum` of one term per table (the tables of slots over the same
    groups summed), correctly rounded: the same float however the configuration was reached.
    """

    def __init__(self, positions: dict[str, int], tables: Mapping[tuple[str, ...], np.ndarray],
                 grid_positions: Mapping[str, Mapping[int, int]]) -> None:
        self._positions, self._grid_positions = positions, grid_positions
        self._tables = list(tables.items())
        self._terms = [float(table[tuple(positions[g] for g in axes)]) for axes, table in self._tables]
        self._tables_of: dict[str, list[int]] = {}
        for i, (axes, _) in enumerate(self._tables):
            for group in axes:
                self._tables_of.setdefault(group, []).append(i)

    @property
    def ms(self) -> float:
        return math.fsum(self._terms)

    def ms_with(self, group: str, count: int) -> float:
        """The latency if `group` kept `count` (on its grid) instead."""
        terms = list(self._terms)
        for i, term in self._changed_terms(group, count):
            terms[i] = term
        return math.fsum(terms)

    def set(self, group: str, count: int) -> None:
        """`group` keeps `count` from now on."""
        for i, term in self._changed_terms(group, count):
            self._terms[i] = term
        self._positions[group] = self._grid_positions[group][count]

    def _changed_terms(self, group: str, count: int) -> list[tuple[int, float]]:
        try:
            position = self._grid_positions[group][count]
        except KeyError:
            known = group in self._grid_positions
            raise EdgesegError(f"Group {group!r} cannot keep {count}: " + (
                f"allowed counts are {tuple(self._grid_positions[group])}." if known else "no such group."),
                "Round the kept count to the group's grid." if known else "Use a group of the description.") from None
        changed = []
        for i in self._tables_of.get(group, ()):
            axes, table = self._tables[i]
            changed.append((i, float(table[tuple(position if g == group else self._positions[g] for g in axes)])))
        return changed

