"""Per-kernel timing: every fused kernel of a model timed alone on the device.

TVM 0.27 has no VM profiler, so `compile` builds every fused TIR kernel alone into kernels.so
and records in kernels.json each kernel's argument shapes and how often `main` calls it. Here
each kernel runs on the device on random arguments of those shapes (zeros for integer
arguments, which may be indices) with the project's timing protocol. The table sorts kernels by
calls x median time; their sum against the end-to-end median shows what the VM adds (memory
planning, calls between kernels) or what a kernel timed alone misses (warm caches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from runner.artifact import KernelSpec, TensorSpec
from runner.timing import Timing, TimingProtocol, time_function

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelTiming:
    """One kernel's timing; `total_ms` = calls x median, its share of all kernels' total."""

    name: str
    calls: int
    tuned: bool
    timing: Timing

    @property
    def total_ms(self) -> float:
        return self.calls * self.timing.median_ms


@dataclass(frozen=True)
class KernelTable:
    """All kernels, the most expensive first, with the end-to-end median they add up against."""

    rows: tuple[KernelTiming, ...]
    end_to_end_ms: float

    @property
    def sum_ms(self) -> float:
        return sum(row.total_ms for row in self.rows)

    def share(self, row: KernelTiming) -> float:
        return row.total_ms / self.sum_ms if self.sum_ms > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "sum_of_kernels_ms": self.sum_ms,
            "end_to_end_median_ms": self.end_to_end_ms,
            "kernels": [
                {"name": row.name, "calls": row.calls, "tuned": row.tuned,
                 "median_ms": row.timing.median_ms, "total_ms": row.total_ms,
                 "share": self.share(row), "timing": row.timing.to_dict()}
                for row in self.rows
            ],
        }  # fmt: skip


def kernel_table(
    kernels: Sequence[KernelSpec], timings: Mapping[str, Timing], end_to_end_ms: float
) -> KernelTable:
    """The table of `kernels` whose timing is known, sorted by calls x median, largest first."""
    rows = [KernelTiming(k.name, k.calls, k.tuned, timings[k.name]) for k in kernels
            if k.name in timings]  # fmt: skip
    rows.sort(key=lambda row: row.total_ms, reverse=True)
    return KernelTable(tuple(rows), end_to_end_ms)


def time_kernels(
    library: Any,
    dev: Any,
    kernels: Sequence[KernelSpec],
    protocol: TimingProtocol,
    done: dict[str, Timing],
    new_tensor: Callable[[np.ndarray], Any],
) -> None:
    """Time every kernel of `library` (the loaded kernels.so) not yet in `done`, filling it in.

    `done` lives with the caller so that a retried session resumes where the dropped one
    stopped. `new_tensor(array)` puts an array on the device.
    """
    rng = np.random.default_rng(0)
    todo = [kernel for kernel in kernels if kernel.name not in done]
    for kernel in tqdm(todo, desc="kernels", unit="kernel", disable=None, leave=False):
        args = [new_tensor(_random_array(spec, rng)) for spec in kernel.args]
        done[kernel.name] = time_function(library, kernel.name, dev, args, protocol)
        logger.debug("%s: median %.4f ms", kernel.name, done[kernel.name].median_ms)
        del args


def _random_array(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1.0, 1.0, size=spec.shape).astype(dtype)
    return np.zeros(spec.shape, dtype=dtype)
