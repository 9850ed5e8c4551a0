"""Measurement records: one JSON line per measured layer, appended durably, read leniently.

A line holds the layer config (and its key), the target preset and the TVM target it resolved
to, the device key, the timing (median, std, runs, every run in ms) and the timing protocol
that took it, the tuning trials the layer got and the trials per tuning task it was allowed,
the model and input size it was sampled from, the TVM and edgeseg versions and the UTC time.
Lines written before the protocol, trials-per-layer, model and input size were recorded still
read: those fields are unknown (None). Files are `latency_model.jsonl` logs: fsynced appends,
a torn last line skipped with a warning, anything else that does not parse an error.

A predictor must learn from one timing setting: `check_one_setting` refuses records taken with
different protocols or trials per layer (unknown counts as a setting of its own).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from latency_model.jsonl import JsonLinesLog, LineKind, read_lines
from latency_model.layers import LayerConfig, layer_from_dict
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

log = logging.getLogger(__name__)

OPTIONAL = ("utc_time", "tuning_trials", "protocol", "trials_per_layer", "model", "input_size", "num_classes", "threads",
            "noisy", "reference_ms", "reference_nominal_ms")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class MeasurementRecord:
    """One layer measured on one device; `runs` is the number of timed repeats in `run_ms`.

    `tuning_trials` is what tuning spent on the layer; `trials_per_layer` the budget per tuning
    task it was collected with. `model`, `input_size` and `num_classes` name the network the
    layers were sampled from (the class count sizes its classifier). `protocol`,
    `trials_per_layer`, `model`, `input_size` and `num_classes` are None in records written
    before they were stored, and so is `threads`, the device's thread pool while timing.
    `noisy`: the samples spread beyond the protocol's limit twice (`collect` re-measured once);
    kept for the record, left out of training. With a drift reference (the protocol says so),
    `run_ms` are the samples scaled to the reference's nominal speed (`runner.drift`),
    `reference_ms` the reference's median in each round and `reference_nominal_ms` its nominal:
    the raw samples are run_ms x reference / nominal, round by round."""

    config: LayerConfig
    target_preset: str
    target: Mapping[str, Any]
    device_key: str
    median_ms: float
    std_ms: float
    run_ms: tuple[float, ...]
    tvm_version: str
    edgeseg_version: str
    utc_time: str = field(default_factory=utc_now)
    tuning_trials: int | None = None
    protocol: TimingProtocol | None = None
    trials_per_layer: int | None = None
    model: str | None = None
    input_size: int | None = None
    num_classes: int | None = None
    threads: int | None = None
    noisy: bool = False
    reference_ms: tuple[float, ...] = ()
    reference_nominal_ms: float | None = None

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def runs(self) -> int:
        return len(self.run_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "config": self.config.to_dict(),
            "target_preset": self.target_preset,
            "target": dict(self.target),
            "device_key": self.device_key,
            "median_ms": self.median_ms,
            "std_ms": self.std_ms,
            "runs": self.runs,
            "run_ms": list(self.run_ms),
            "protocol": self.protocol.to_dict() if self.protocol else None,
            "tuning_trials": self.tuning_trials,
            "trials_per_layer": self.trials_per_layer,
            "model": self.model,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "threads": self.threads,
            "noisy": self.noisy,
            "reference_ms": list(self.reference_ms),
            "reference_nominal_ms": self.reference_nominal_ms,
            "tvm_version": self.tvm_version,
            "edgeseg_version": self.edgeseg_version,
            "utc_time": self.utc_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MeasurementRecord":
        if not isinstance(data, Mapping):
            raise ValueError("a line must be a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n not in OPTIONAL]
        if missing:
            raise ValueError(f"missing fields {missing}")
        config = layer_from_dict(data["config"])
        if data.get("key", config.key) != config.key:
            raise ValueError(f"key {data['key']!r} does not match its config ({config.key!r})")
        values = {n: data[n] for n in names if n in data}
        values.update(config=config, run_ms=tuple(float(v) for v in data["run_ms"]),
                      median_ms=float(data["median_ms"]), std_ms=float(data["std_ms"]),
                      reference_ms=tuple(float(v) for v in data.get("reference_ms") or ()))
        if data.get("protocol") is not None:
            values["protocol"] = TimingProtocol(**data["protocol"])
        if values["median_ms"] <= 0:
            raise ValueError(f"median_ms must be positive, got {values['median_ms']}")
        if data.get("runs", len(values["run_ms"])) != len(values["run_ms"]):
            raise ValueError("runs does not match the number of run_ms entries")
        return cls(**values)


def describe_setting(protocol: TimingProtocol | None, trials_per_layer: int | None) -> str:
    """A timing setting in words, for messages and reports."""
    if protocol is None and trials_per_layer is None:
        return "unknown (a record written before protocols were stored)"
    timing = "protocol unknown" if protocol is None else (
        f"warmup {protocol.warmup}, repeat {protocol.repeat}, number {protocol.number}, "
        f"min_repeat_ms {protocol.min_repeat_ms}, cooldown_ms {protocol.cooldown_ms}")
    trials = "unknown" if trials_per_layer is None else trials_per_layer
    return f"{timing}, trials per layer {trials}"


def check_one_setting(records: Sequence[MeasurementRecord], source: str) -> None:
    """Raise EdgesegError unless every record was taken with the same timing protocol and the
    same trials per layer. Records that predate stored settings form a setting of their own:
    a file of only those is one setting, those mixed with known ones are refused."""
    settings = list(dict.fromkeys((r.protocol, r.trials_per_layer) for r in records))
    if len(settings) > 1:
        first, second = (describe_setting(*s) for s in settings[:2])
        more = f" (and {len(settings) - 2} more)" if len(settings) > 2 else ""
        raise EdgesegError(
            f"The records of {source} were measured with different timing settings: "
            f"[{first}] and [{second}]{more}; one predictor must learn from one setting.",
            "Collect each setting into its own file (collect -o FILE), or filter the file to "
            "the records of one setting.")


def installed_versions() -> tuple[str, str]:
    """(tvm, edgeseg) versions from package metadata, without importing TVM."""
    found = []
    for dist in ("apache-tvm", "edgeseg"):
        try:
            found.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            found.append("unknown")
    return found[0], found[1]


RECORD = LineKind(MeasurementRecord.from_dict, "a measurement record", "`latency_model collect`")


def read_records(path: str | os.PathLike) -> list[MeasurementRecord]:
    """All records of a JSONL file; a torn last line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        raise EdgesegError(f"No measurement file at {path}.",
                           "Run `latency_model collect` first, or check the path.")
    return read_lines(path, RECORD)


class MeasurementLog(JsonLinesLog[MeasurementRecord]):
    """The append-only measurement file of `collect` (see `latency_model.jsonl`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, RECORD)

    def append(self, record: MeasurementRecord) -> None:
        self.append_dict(record.to_dict())

    def extend(self, records: Iterable[MeasurementRecord]) -> None:
        for record in records:
            self.append(record)
