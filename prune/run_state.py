"""What a run records (its steps, epoch summaries and the search's outcome) and its checkpoint:
saved at every epoch end, resumed from by a rerun, and shared plain training between runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune.checkpoint import save_checkpoint
from prune.groups import Plan
from prune.parallel import rank_and_world
from prune.settings import PruneSettings
from prune.shared_training import SharedTraining

CHECKPOINT = "checkpoint.pt"


class RunState:
    """The history of one run, starting from its checkpoint's `state` (None: a fresh run)."""

    def __init__(self, settings: PruneSettings, out: Path, state: dict[str, Any] | None) -> None:
        self.settings, self.out = settings, out
        self.state = state or {}
        self.steps: list[dict[str, Any]] = list(self.state.get("steps", []))
        self.epochs: list[dict[str, Any]] = list(self.state.get("epochs", []))
        self.dropped_to_fit = int(self.state.get("dropped_to_fit", 0))
        self.added_to_fit = int(self.state.get("added_to_fit", 0))
        self.searched_ms: float | None = self.state.get("searched_ms")  # bilevel: the search's own network

    def resume(self, phase: str, model: nn.Module, parts: dict[str, Any]) -> int:
        """Load the checkpoint's states if it is in `phase`; the epoch to start from."""
        if self.state.get("phase") != phase:
            return 0
        model.load_state_dict(self.state["model"])
        for key, part in parts.items():
            if key in self.state:  # the checkpoint written at the shrink has no fine-tuning optimizer yet
                part.load_state_dict(self.state[key])
        torch.set_rng_state(self.state["rng"])
        return int(self.state["epoch"])

    def save(self, phase: str, epoch: int, model: nn.Module, parts: dict[str, Any], plan: Plan | None) -> None:
        """The checkpoint of `phase` before `epoch` (rank 0 writes it)."""
        if rank_and_world()[0]:
            return
        state = {"settings": self.settings.to_dict(), "phase": phase, "epoch": epoch, "model": model.state_dict(),
                 "rng": torch.get_rng_state(), "steps": self.steps, "epochs": self.epochs, "plan": plan,
                 "dropped_to_fit": self.dropped_to_fit, "added_to_fit": self.added_to_fit,
                 "searched_ms": self.searched_ms}
        state.update({key: part.state_dict() for key, part in parts.items()})
        save_checkpoint(self.out / CHECKPOINT, state)

    def save_done(self) -> None:
        """The checkpoint of a finished run: a rerun returns its report."""
        save_checkpoint(self.out / CHECKPOINT, {"settings": self.settings.to_dict(), "phase": "done"})

    def load_shared(self, shared: SharedTraining, model: nn.Module) -> bool:
        """Take the plain training another run stored in `shared`, if there is one."""
        stored = shared.load(self.settings)
        if stored is None:
            return False
        model.load_state_dict(stored["model"])
        torch.set_rng_state(stored["rng"])
        self.steps, self.epochs = list(stored["steps"]), list(stored["epochs"])
        return True

    def save_shared(self, shared: SharedTraining, model: nn.Module) -> None:
        shared.save(self.settings, {"model": model.state_dict(), "rng": torch.get_rng_state(),
                                    "steps": self.steps, "epochs": self.epochs})
