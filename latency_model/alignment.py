"""Which channel alignment pays off on a device, read from its latency predictor.

Vectorised kernels step with their vector width and tiles: on many devices a layer with 61
channels is no faster than one with 64, so pruning channels one at a time buys nothing until a
whole step goes. The pruner should cut channel groups in units of that step (the coarsest one
that gives nothing up: fewer units, a cheaper search, smaller latency tables).

For every channel group, the layers bound to it are priced at every width from a quarter of the
full width to the full width (the other groups full): L(w). Keeping at least w channels can cost
as little as B(w) = min over w' >= w of L(w'). Rounding the widths up to multiples of a candidate
step a costs L(round_up(w, a)) instead: the latency given up at w is that over B(w), relative.
The step chosen is the coarsest whose mean given-up latency, over groups and widths, is within
`tolerance` of the best candidate's. Where kernels step by 16, widths off the step are slower
than the next multiple up (one channel at a time gives up the most) and 16 is chosen; a FLOPs
table is linear in the widths, so every coarser step gives up a little more and a fine one wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from latency_model.budget import LatencyTableSource
from latency_model.description import ModelDescription
from runner.errors import EdgesegError

CANDIDATES = (1, 2, 4, 8, 16, 32)
TOLERANCE = 0.01  # of the latency: what a coarser step may give up and still count as free


@dataclass(frozen=True)
class AlignmentChoice:
    """The chosen step and, per candidate step, the mean latency given up (a fraction)."""

    unit: int
    given_up: dict[int, float]
    tolerance: float
    groups: tuple[str, ...]

    def table(self) -> str:
        lines = [f"{'step':>5} {'latency given up':>17}"]
        lines += [f"{a:5d} {100 * loss:16.2f}%" + ("  <- chosen" if a == self.unit else "")
                  for a, loss in self.given_up.items()]
        return "\n".join(lines)


def choose_alignment(description: ModelDescription, predictor: LatencyTableSource, groups: Sequence[str],
                     candidates: Sequence[int] = CANDIDATES, tolerance: float = TOLERANCE) -> AlignmentChoice:
    """The coarsest channel step of `candidates` that gives up no more than `tolerance` of the
    latency beyond the best one, over the channel `groups` of `description`."""
    if not groups:
        raise EdgesegError("No channel group to read the alignment from.", "Pass --unit N instead of auto.")
    candidates = sorted(set(candidates))
    curves = _latency_curves(description, predictor, groups)
    given_up = {a: float(np.mean(np.concatenate([_given_up(widths, latency, a) for widths, latency in curves])))
                for a in candidates}
    best = min(given_up.values())
    unit = max(a for a in candidates if given_up[a] <= best + tolerance)
    return AlignmentChoice(unit, given_up, tolerance, tuple(groups))


def _latency_curves(description: ModelDescription, predictor: LatencyTableSource,
                    groups: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group: the widths from a quarter of full to full that every bound layer accepts, and
    the predicted latency of the group's layers at each (one batched predictor call)."""
    full = description.full_kept()
    requests: list[tuple[np.ndarray, int]] = []  # per group: widths priced, layers per width
    configs = []
    for name in groups:
        slots = [s for s in description.slots if name in s.groups]
        top = description.group(name).full
        widths = []
        for width in range(max(1, math.ceil(top / 4)), top + 1):
            try:
                layers = [s.config({**full, name: width}) for s in slots]
            except (EdgesegError, ValueError):  # e.g. an attention width its heads do not divide
                continue
            widths.append(width)
            configs += layers
        requests.append((np.asarray(widths), len(slots)))
    predicted = predictor.predict_ms(configs) if configs else np.zeros(0)
    curves, at = [], 0
    for widths, per_width in requests:
        count = len(widths) * per_width
        if count:
            curves.append((widths, predicted[at:at + count].reshape(len(widths), per_width).sum(axis=1)))
        at += count
    if not curves:
        raise EdgesegError("No layer of the named groups could be priced at reduced widths.",
                           "Pass --unit N instead of auto.")
    return curves


def _given_up(widths: np.ndarray, latency: np.ndarray, step: int) -> np.ndarray:
    """At each width, the latency given up by rounding it up to a multiple of `step` (or to the
    full width), relative to the cheapest width at least as wide. Widths the layers refuse are
    skipped: rounding lands on the next accepted one."""
    best = np.minimum.accumulate(latency[::-1])[::-1]
    top = widths[-1]
    rounded = np.minimum(-(-widths // step) * step, top)
    index = np.searchsorted(widths, rounded)
    return (latency[index] - best) / best
