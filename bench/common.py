"""What several bench scripts share: a model's tuning tasks, steps a rerun skips, and summaries of
per-kernel ratios."""

from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


def extracted_tasks(model_path: Path, preset: Any, work: Path) -> list[Any]:
    """MetaSchedule's tasks of an ONNX model, as `python -m compile` extracts them."""
    from compile.build import lower
    from compile.frontend import load_model
    from tvm.s_tir import meta_schedule as ms

    return list(ms.relax_integration.extract_tasks(lower(load_model(model_path, None, work).mod, preset),
                                                   preset.target()))


def finished(marker: Path, work: Callable[[], dict]) -> dict:
    """`work()`'s result, kept in `marker`: a rerun with the same --work skips what finished."""
    if marker.is_file():
        log.info("reusing %s", marker)
        return json.loads(marker.read_text())
    result = work()
    staging = marker.with_name(marker.name + ".tmp")  # a crash mid-write leaves no torn marker to reuse
    staging.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(staging, marker)
    return result


def ratio_summary(values: list[float]) -> dict:
    """Count, median, quartiles, range and the share at least 0.9 of per-kernel ratios."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {"count": len(ordered), "median": round(statistics.median(ordered), 3),
            "q1": round(quartiles[0], 3), "q3": round(quartiles[2], 3),
            "min": round(ordered[0], 3), "max": round(ordered[-1], 3),
            "share_at_least_0.9": round(sum(v >= 0.9 for v in ordered) / len(ordered), 3)}
