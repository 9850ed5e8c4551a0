"""One bi-level search, several budgets: a search's end state kept, and re-projected onto another budget.

A bi-level run writes `search.pt` when its search ends: the unpruned network's weights and the
gate scores, as they were before the shrink. A later run with the same settings but another
budget or latency scale (`--reuse-search DIR`) starts from them instead of searching: its plan is
the projection the search itself ends with (`prune.projection`: every unit, then the
lowest-scoring dropped until the predicted latency fits, then the best-scoring dropped that still
fit come back), at the new budget, then fine-tuning as usual.

Why: the pipeline's correcting rounds (`prune.pipeline.rounds`) assume that a network measures
in proportion to the latency its search aimed at, near the budget. A fresh search does not keep
that promise: in main-job run 20, searches aimed 6% apart (2.41 and 2.566 ms of layers) found
different networks (stage-3 MLPs of 304/288 against 880/408 hidden channels) that measured 27%
apart, so no aim between them could land. Re-projecting one ranking of units moves the network
a few units at a time as the aim moves, along one family of networks whose ratio of measured to
predicted latency stays put.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from prune.checkpoint import save_checkpoint, settings_differences
from runner.errors import EdgesegError

SEARCH = "search.pt"
FORMAT = "edgeseg-bilevel-search/1"
# settings a reusing run may change: where the budget lies, and the reuse itself
REAIMED = ("budget_ms", "fps", "budget_fraction", "latency_scale", "reuse_search")


def save_search(out: Path, settings: Mapping[str, Any], target_ms: float, model_state: Mapping[str, torch.Tensor],
                scores: Mapping[str, torch.Tensor], steps: list[dict[str, Any]],
                epochs: list[dict[str, Any]]) -> None:
    """Write the search's end state (atomically) for runs that reuse it."""
    save_checkpoint(out / SEARCH, {"format": FORMAT, "settings": dict(settings), "target_ms": target_ms,
                                   "model": dict(model_state), "scores": dict(scores), "steps": steps,
                                   "epochs": epochs})


def load_search(folder: str | Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The end state of the search in `folder`; its settings must be `settings` but for `REAIMED`."""
    path = Path(folder) / SEARCH
    fix = f"Pass --reuse-search a folder that `python -m prune --method bilevel` finished its search in ({path} " \
          "is written when the search ends), or drop --reuse-search to search again."
    if not path.is_file():
        raise EdgesegError(f"{path} is missing: {folder} holds no finished bi-level search.", fix)
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises pickle, runtime and zip errors alike
        raise EdgesegError(f"Cannot read {path}: {err}.", fix) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise EdgesegError(f"{path} is not the end state of a bi-level search.", fix)
    details = settings_differences(state["settings"], settings, ignore=REAIMED)
    if details:
        raise EdgesegError(f"The search in {folder} ran with other settings ({details}); only the budget and the "
                           "latency scale may differ from the run that reuses it.",
                           "Repeat that search's settings, or drop --reuse-search to search again.")
    return state
