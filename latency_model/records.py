"""Measurement records: one JSON line per measured layer, appended durably, read leniently.

A line holds the layer config (and its key), the target preset and the TVM target it resolved
to, the device key, the timing (median, std, runs, every run in ms), how many tuning trials the
layer got, the TVM and edgeseg versions and the UTC time. Appends are fsynced one by one, so a
crash loses at most the line being written; that torn last line is skipped with a warning when
read, and cut off before the next append. Anything else that does not parse is an error naming
the file and line: a data file is never silently half-read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from latency_model.layers import LayerConfig, layer_from_dict
from runner.errors import EdgesegError

log = logging.getLogger(__name__)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class MeasurementRecord:
    """One layer measured on one device; `runs` is the number of timed repeats in `run_ms`."""

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
            "tuning_trials": self.tuning_trials,
            "tvm_version": self.tvm_version,
            "edgeseg_version": self.edgeseg_version,
            "utc_time": self.utc_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MeasurementRecord":
        if not isinstance(data, Mapping):
            raise ValueError("a line must be a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n not in ("utc_time", "tuning_trials")]
        if missing:
            raise ValueError(f"missing fields {missing}")
        config = layer_from_dict(data["config"])
        if data.get("key", config.key) != config.key:
            raise ValueError(f"key {data['key']!r} does not match its config ({config.key!r})")
        values = {n: data[n] for n in names if n in data}
        values.update(config=config, run_ms=tuple(float(v) for v in data["run_ms"]),
                      median_ms=float(data["median_ms"]), std_ms=float(data["std_ms"]))
        if values["median_ms"] <= 0:
            raise ValueError(f"median_ms must be positive, got {values['median_ms']}")
        if data.get("runs", len(values["run_ms"])) != len(values["run_ms"]):
            raise ValueError("runs does not match the number of run_ms entries")
        return cls(**values)


def installed_versions() -> tuple[str, str]:
    """(tvm, edgeseg) versions from package metadata, without importing TVM."""
    found = []
    for dist in ("apache-tvm", "edgeseg"):
        try:
            found.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            found.append("unknown")
    return found[0], found[1]


def _corrupt(path: Path, lineno: int, why: str) -> EdgesegError:
    return EdgesegError(
        f"{path}, line {lineno}, is not a measurement record ({why}).",
        "Point to a JSONL file written by `latency_model collect`, or remove or repair that line.",
    )


def _parse_lines(path: Path, text: str) -> tuple[list[MeasurementRecord], int | None]:
    """Records of `text`, and the byte offset of a torn last line (None when there is none).

    Only a last line without its newline that starts like a record counts as torn: every
    append writes a whole line at once, so anything else is damage or a different file.
    """
    records: list[MeasurementRecord] = []
    lines = text.split("\n")
    offset = 0
    torn_at = None
    for lineno, line in enumerate(lines, start=1):
        start, offset = offset, offset + len(line.encode()) + 1
        if not line.strip():
            continue
        try:
            records.append(MeasurementRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError, EdgesegError) as err:
            if lineno != len(lines) or not line.lstrip().startswith("{"):
                raise _corrupt(path, lineno, str(err)) from err
            log.warning("%s, line %d: skipping a torn last line (a crash while writing?)",
                        path, lineno)
            torn_at = start
    return records, torn_at


def read_records(path: str | os.PathLike) -> list[MeasurementRecord]:
    """All records of a JSONL file; a torn last line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        raise EdgesegError(f"No measurement file at {path}.",
                           "Run `latency_model collect` first, or check the path.")
    return _parse_lines(path, _read_text(path))[0]


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise EdgesegError(f"{path} is not a text (JSONL) file: {err}.",
                           "Point to a JSONL file written by `latency_model collect`.") from err


class MeasurementLog:
    """An append-only measurement file, safe against crashes and against threads writing at once.

    The first append validates the file and cuts off a torn last line, so that a resumed
    collection never glues a new record onto half of an old one.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._repaired = False

    def read(self) -> list[MeasurementRecord]:
        return read_records(self.path) if self.path.exists() else []

    def measured_keys(self, device_key: str | None = None,
                      target_preset: str | None = None) -> set[str]:
        """Config keys already measured (on that device and target preset, when given)."""
        return {r.key for r in self.read()
                if (device_key is None or r.device_key == device_key)
                and (target_preset is None or r.target_preset == target_preset)}

    def append(self, record: MeasurementRecord) -> None:
        line = (json.dumps(record.to_dict(), separators=(",", ":")) + "\n").encode()
        with self._lock:
            if not self._repaired:
                self._repair()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def extend(self, records: Iterable[MeasurementRecord]) -> None:
        for record in records:
            self.append(record)

    def _repair(self) -> None:
        self._repaired = True
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        _, torn_at = _parse_lines(self.path, _read_text(self.path))  # raises if corrupt
        if torn_at is not None:
            log.warning("%s: cutting off the torn last line before appending", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(torn_at)
                f.flush()
                os.fsync(f.fileno())
        elif self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            with open(self.path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
