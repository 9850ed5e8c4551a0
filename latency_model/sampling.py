"""Which layer shapes to measure: samples of a model description on its pruning grid.

`sample_kept` draws kept-count configurations uniformly per group on its grid, plus the two
ends of the grid (the unpruned and the smallest network), so that the predictor has seen the
whole range a search and its budget check read; `layer_configs` turns them into the distinct layer configs to measure. The
adaptive step of nn-Meter (`neighbour_configs`) resamples around configs the predictor got
wrong by more than 10%: the same slot with its groups moved a few grid steps. All sampling is
deterministic for a given seed.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

from latency_model.description import LayerSlot, ModelDescription
from latency_model.layers import LayerConfig

log = logging.getLogger(__name__)

ADAPTIVE_THRESHOLD = 0.10


def sample_kept(description: ModelDescription, n: int, seed: int,
                include_ends: bool = True) -> list[dict[str, int]]:
    """`n` kept-count dicts, each group uniform on its grid; first, if asked, the unpruned and
    the smallest network (without the smallest, a collection of the unpruned model alone teaches
    the predictor nothing about width, and every budget looks infeasible)."""
    rng = np.random.default_rng(seed)
    out = [description.full_kept(), description.minimal_kept()] if include_ends else []
    for _ in range(n):
        out.append({g.name: int(g.grid[rng.integers(len(g.grid))]) for g in description.groups})
    return out


def layer_configs(description: ModelDescription,
                  kept_list: Iterable[dict[str, int]]) -> list[LayerConfig]:
    """Distinct layer configs of the pruned models, in first-seen order."""
    unique: dict[str, LayerConfig] = {}
    for kept in kept_list:
        for config in description.config_at(kept):
            unique.setdefault(config.key, config)
    return list(unique.values())


def poorly_predicted(configs: Sequence[LayerConfig], predicted_ms: np.ndarray,
                     measured_ms: np.ndarray,
                     threshold: float = ADAPTIVE_THRESHOLD) -> list[LayerConfig]:
    """Configs whose relative prediction error exceeds `threshold`."""
    rel = np.abs(np.asarray(predicted_ms) - np.asarray(measured_ms)) / np.asarray(measured_ms)
    return [c for c, r in zip(configs, rel) if r > threshold]


def _slot_position(description: ModelDescription, slot: LayerSlot,
                   config: LayerConfig) -> list[int] | None:
    """Grid indices of the slot's groups that produce `config`, or None if it cannot."""
    if type(config) is not type(slot.template):
        return None
    groups = {g: description.group(g) for g in slot.groups}
    kept = {g: getattr(config, next(f for f, gg in slot.bindings.items() if gg == g))
            for g in slot.groups}
    if any(kept[g] not in groups[g].grid for g in slot.groups):
        return None
    if slot.config(kept) != config:
        return None
    return [groups[g].index(kept[g]) for g in slot.groups]


def neighbour_configs(description: ModelDescription, configs: Sequence[LayerConfig],
                      per_config: int, seed: int, radius: int = 1) -> list[LayerConfig]:
    """Up to `per_config` new configs around each given config: a slot that produces it, with
    each of its groups moved by -radius..radius grid steps (not all zero). Configs no slot
    produces are skipped with a warning; the given configs themselves are never returned."""
    rng = np.random.default_rng(seed)
    seen = {c.key for c in configs}
    out: list[LayerConfig] = []
    for config in configs:
        match = next(((slot, pos) for slot in description.slots
                      if (pos := _slot_position(description, slot, config)) is not None), None)
        if match is None or not match[0].groups:
            log.warning("no slot of the description varies %s; no neighbours sampled", config.key)
            continue
        slot, pos = match
        grids = [description.group(g).grid for g in slot.groups]
        found = 0
        for _ in range(20 * per_config):  # bounded: small grids have few neighbours
            if found == per_config:
                break
            step = rng.integers(-radius, radius + 1, size=len(pos))
            if not step.any():
                continue
            idx = np.clip(np.asarray(pos) + step, 0, [len(g) - 1 for g in grids])
            neighbour = slot.config({g: grid[i] for g, grid, i in zip(slot.groups, grids, idx)})
            if neighbour.key not in seen:
                seen.add(neighbour.key)
                out.append(neighbour)
                found += 1
    return out
