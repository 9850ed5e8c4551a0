"""Engines timed in interleaved rounds, so that the machine's drift over minutes hits every engine alike."""

from __future__ import annotations

import statistics
from typing import Callable, Mapping, Sequence

from tqdm import tqdm


def time_in_rounds(engines: Mapping[str, Callable[[], Sequence[float]]], rounds: int) -> dict[str, list[float]]:
    """Each round runs every engine's timing once, in order; returns each engine's samples (ms) of all rounds."""
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for _ in tqdm(range(rounds), desc="timing rounds", unit="round"):
        for name, timed in engines.items():
            samples[name].extend(timed())
    return samples


def sample_stats(samples: Sequence[float]) -> dict:
    """Median, extremes, interquartile range over the median, and count of a list of samples (ms)."""
    ordered = sorted(samples)
    median = statistics.median(ordered)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [median, median, median]
    return {"median_ms": round(median, 3), "min_ms": round(ordered[0], 3), "max_ms": round(ordered[-1], 3),
            "iqr_over_median": round((quartiles[2] - quartiles[0]) / median, 4), "runs": len(ordered)}  # fmt: skip
