"""Engines timed in interleaved rounds, so that the machine's drift over minutes hits every engine alike."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from tqdm import tqdm

from runner.timing import Timing


def time_in_rounds(engines: Mapping[str, Callable[[], Sequence[float]]], rounds: int) -> dict[str, Timing]:
    """Each round runs every engine's timing once, in order; returns each engine's samples (ms) of all rounds."""
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for _ in tqdm(range(rounds), desc="timing rounds", unit="round"):
        for name, timed in engines.items():
            samples[name].extend(timed())
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def timing_row(timing: Timing) -> dict:
    """The columns every benchmark table prints: median, extremes, spread (IQR over median), runs."""
    return {"median_ms": round(timing.median_ms, 3), "min_ms": round(timing.min_ms, 3),
            "max_ms": round(timing.max_ms, 3), "iqr_over_median": round(timing.spread, 4),
            "runs": timing.runs}  # fmt: skip
