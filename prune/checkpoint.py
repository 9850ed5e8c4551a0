"""The run's checkpoint: one file, written atomically at every epoch end, tied to its settings.

A checkpoint holds plain data (state dicts, lists, numbers, the RNG state), loaded with
`weights_only=True`. Resuming with settings that differ from the checkpoint's is an error that
names the differing settings; nothing is written before that check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from runner.errors import EdgesegError

FORMAT = "edgeseg-prune-checkpoint/1"


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


AsTheyRan = Callable[[Mapping[str, Any], Iterable[str]], Mapping[str, Any]]


def load_checkpoint(path: Path, settings: Mapping[str, Any], as_they_ran: AsTheyRan | None = None
                    ) -> dict[str, Any] | None:
    """The checkpoint at `path` if there is one (None otherwise); it must carry `settings`.
    Settings of `settings` the checkpoint does not name (added to edgeseg after it was written)
    count as `as_they_ran(saved settings, names)` fills them in (`prune.settings.as_they_ran`)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises pickle, runtime and zip errors alike
        raise EdgesegError(f"Cannot read the checkpoint {path}: {err}.",
                           "Delete it to start the run again, or choose another output folder.") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise EdgesegError(f"{path} is not a checkpoint of `python -m prune`.", "Choose another output folder.")
    saved = dict(as_they_ran(state["settings"], settings.keys()) if as_they_ran else state["settings"])
    details = settings_differences(saved, settings)
    if details:
        raise EdgesegError(f"The output folder {path.parent} holds a run with other settings ({details}).",
                           "Repeat that run's settings to resume it, or choose another output folder.")
    return state


def settings_differences(saved: Mapping[str, Any], settings: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """The settings that differ, as "name: saved there, given now" ("" when none), `ignore` left out."""
    left_out = set(ignore)
    differ = sorted(k for k in set(saved) | set(settings) if k not in left_out and saved.get(k) != settings.get(k))
    return ", ".join(f"{k}: {saved.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
