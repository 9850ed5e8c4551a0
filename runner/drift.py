"""The drift reference: one fixed piece of code timed beside every measurement of a device.

Identical code measured minutes apart on the embedded device differed by up to 2x, and the
difference is the machine's, not the code's: timed round-robin in one session, 108 layers and
two networks slowed and sped up together (one round ran at 0.61-1.15 of the median speed), so
the even and odd rounds of the same period agreed within ±10% for every layer while the first
and last 20 rounds, a minute apart, agreed for 24% of them. Dividing each round by a reference
timed in that round brought the first and last rounds to 95-100% within ±10%
(bench/results/README.md#repeatability). A phone drifts too (thermal throttling, governors).

So a device keeps one reference artifact, built once and never rebuilt (its code must not
change), with its nominal time measured when it was built. A timing taken with the reference
scales each round's samples by nominal / the reference's time in that round: figures taken
minutes or days apart are then in one unit, milliseconds at the speed the device had when its
reference was made. The raw samples are kept beside them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from runner.errors import ArtifactError

REFERENCE_FILE = "drift_reference.json"


@dataclass(frozen=True)
class DriftReference:
    """An artifact folder and its nominal median latency (ms) on the device it was built for."""

    artifact: Path
    nominal_ms: float
    what: str = ""  # what the reference computes, for reports

    def save(self) -> None:
        data = {"nominal_ms": self.nominal_ms, "what": self.what}
        (Path(self.artifact) / REFERENCE_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, artifact: Path) -> "DriftReference":
        path = Path(artifact) / REFERENCE_FILE
        try:
            data = json.loads(path.read_text())
            nominal = float(data["nominal_ms"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"drift reference {path} is unreadable ({err}).",
                                f"Delete {Path(artifact)} to build a new reference (figures taken with the old one "
                                "are in its unit, not the new one's).") from None
        if not nominal > 0:
            raise ArtifactError(f"drift reference {path} has nominal time {nominal}.",
                                f"Delete {Path(artifact)} to build a new reference.")
        return cls(Path(artifact), nominal, str(data.get("what", "")))

    def to_dict(self) -> dict:
        return {"artifact": str(self.artifact), "nominal_ms": self.nominal_ms, "what": self.what}


def corrected_samples(samples_by_round: Sequence[Sequence[float]], reference_by_round: Sequence[float],
                      nominal_ms: float) -> tuple[float, ...]:
    """Every round's samples times nominal / the reference's time in that round."""
    if len(samples_by_round) != len(reference_by_round):
        raise ValueError("one reference time per round is needed")
    return tuple(sample * nominal_ms / reference for samples, reference in zip(samples_by_round, reference_by_round)
                 for sample in samples)


def round_speeds(reference_by_round: Sequence[float], nominal_ms: float) -> dict[str, float]:
    """How fast the device ran in the rounds, against its nominal speed (1.0): median, min, max."""
    speeds = [nominal_ms / r for r in reference_by_round]
    return {"median": statistics.median(speeds), "min": min(speeds), "max": max(speeds)}
