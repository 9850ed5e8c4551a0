"""The per-device workspace: where a device's tuning database, latency data and predictor live.

Tuning results belong to a device and target, not to one model, so every command that
tunes or measures reads and extends the same folder, and users never pass paths between
commands. The root is `$EDGESEG_WORKSPACE`, or `~/.cache/edgeseg/workspace`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def workspace_root() -> Path:
    env = os.environ.get("EDGESEG_WORKSPACE")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "edgeseg" / "workspace"


def device_dir(key: str, target_preset: str, root: Path | None = None) -> Path:
    """`ROOT/KEY--PRESET`: one folder per device key and target preset."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key}--{target_preset}")
    return (root or workspace_root()) / safe


def tuning_database_dir(key: str, target_preset: str, root: Path | None = None) -> Path:
    return device_dir(key, target_preset, root) / "tuning"
