"""What a figure was measured on: this machine's CPU and how busy it was.

A timing taken while something else runs on the same cores is not a figure, so every benchmark
and every pipeline stage records the load average (1, 5 and 15 min) before and after it."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_summary(load_before: Sequence[float]) -> dict[str, Any]:
    """The CPU, its cores, and the load average before a run (`load_before`) and now."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before], "load_average_at_end": load_average()}


def write_result(path: Path, result: dict[str, Any], load_before: Sequence[float], started: float) -> None:
    """Write a benchmark's `result` as JSON with the machine, its load and the wall time since
    `started` (time.monotonic()) beside it."""
    result = {**result, "machine": machine_summary(load_before), "wall_seconds": round(time.monotonic() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
