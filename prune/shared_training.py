"""The baselines' plain training, trained once and shared by runs that differ only in method and budget.

uniform, magnitude and dense runs all begin with the same plain training of the unpruned network
(same seed, data, steps, learning rate); only the plan chosen after it depends on the method and
the budget. A sweep over budgets and baselines (`bench/prune_vs_baselines.py`, `python -m prune
--shared-training DIR`) trains it once: the first run stores the trained state in the folder, the
others load it. The RNG state is stored with it, so a run that loads it continues exactly as its
own training would have (tested). An entry is a prune checkpoint whose settings are the shared
ones, so a corrupt file or a clash of settings is reported as for any checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prune.checkpoint import load_checkpoint, save_checkpoint
from prune.settings import PruneSettings, as_they_ran

# settings the plain training does not depend on: the method and budget, and the bi-level search's own
PER_RUN = ("method", "budget_ms", "fps", "budget_fraction", "outer_batch_size", "outer_every", "outer_lr", "gate_init",
           "implicit_scale", "implicit_gradient", "neumann_steps", "neumann_alpha", "budget_signal", "hard_mask",
           "latency_scale")


def shared_settings(settings: PruneSettings) -> dict[str, Any]:
    """The settings that determine the plain training."""
    return {k: v for k, v in settings.to_dict().items() if k not in PER_RUN}


class SharedTraining:
    """A folder of finished plain trainings, one file per shared settings."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, settings: PruneSettings) -> Path:
        digest = hashlib.sha256(json.dumps(shared_settings(settings), sort_keys=True).encode()).hexdigest()[:16]
        return self.folder / f"plain-{settings.model}-{settings.input_size}px-seed{settings.seed}-{digest}.pt"

    def load(self, settings: PruneSettings) -> dict[str, Any] | None:
        """The stored training for `settings` (model, rng, steps, epochs), or None."""
        return load_checkpoint(self.path(settings), shared_settings(settings), as_they_ran)

    def save(self, settings: PruneSettings, state: dict[str, Any]) -> None:
        save_checkpoint(self.path(settings), {**state, "settings": shared_settings(settings)})
